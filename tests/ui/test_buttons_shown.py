"""ButtonsShown: a streaming handler sends button updates only when running changes."""

from __future__ import annotations

import gradio as gr

from ui.streaming import ButtonsShown


def test_the_start_button_is_sent_once_each_way() -> None:
    shown = ButtonsShown()
    assert shown.update(running=True).interactive is False
    assert shown.update(running=True) == gr.skip()
    assert shown.update(running=False).interactive is True
    assert shown.update(running=False) == gr.skip()


def test_a_view_of_its_own_sends_its_own_updates() -> None:
    shown = ButtonsShown(lambda running: {"send": not running}, unchanged={})
    assert shown.update(running=True) == {"send": False}
    assert shown.update(running=True) == {}
    assert shown.update(running=False) == {"send": True}
