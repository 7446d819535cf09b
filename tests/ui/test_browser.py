"""The lab in headless Chromium against `textgen serve` with the real engine.

One page walks what a person does on first visit: log in, generate, see it stream and its
figures, stop a long generation, copy the request as code, compare two settings, unload and
load the model, and watch the dashboards. Screenshots of every view go to test-artifacts/ui/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from textgen import DEFAULT_MODEL
from textgen.telemetry import NO_GPU_MESSAGE

pytestmark = [pytest.mark.browser, pytest.mark.engine, pytest.mark.timeout(1200)]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"
# Generous: other engines may share this machine's two cores.
WAIT_MS = 180_000


@pytest.fixture(scope="module")
def page(lab: Any, browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    try:
        yield page
    finally:
        context.close()


@pytest.fixture(autouse=True)
def evidence_of_failure(request: pytest.FixtureRequest, page: Any, lab: Any) -> Iterator[None]:
    """On failure, keep what the page showed (a screenshot, the controls) and the lab's log."""
    yield
    report = getattr(request.node, "report_call", None)
    if report is None or not report.failed:
        return
    name = f"FAILED-{request.node.name}"
    shot(page, name)
    controls = page.eval_on_selector_all(
        "button[id], [id^=pg-figures], [id^=cmp-figures]",
        "els => els.map(e => `${e.id} disabled=${e.disabled} ${e.innerText.slice(0, 200)}`)")
    (ARTIFACTS / f"{name}.txt").write_text("\n".join(controls) + "\n")
    print("controls when it failed:", *controls, sep="\n  ")  # shown in the failure report
    (ARTIFACTS / f"{name}.log").write_bytes(lab.log.read_bytes()[-200_000:])


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def figures(page: Any, selector: str) -> dict[str, str]:
    """The figure chips under an output, as {name: value}."""
    return page.eval_on_selector_all(
        f"{selector} [data-figure]",
        "els => Object.fromEntries(els.map(e => [e.dataset.figure, e.querySelector('b').innerText]))",
    )


def wait_status(page: Any, selector: str, *states: str, timeout: float = WAIT_MS) -> str:
    pattern = "|".join(re.escape(s) for s in states)
    page.wait_for_function(
        """([sel, pattern]) => {
            const chip = document.querySelector(sel + ' [data-figure="status"] b');
            return chip && new RegExp('^(' + pattern + ')').test(chip.innerText);
        }""",
        arg=[selector, pattern], timeout=timeout,
    )
    return figures(page, selector)["status"]


def set_slider(page: Any, selector: str, value: float) -> None:
    box = page.locator(f"{selector} input[type=number]")
    box.fill(str(value))
    box.press("Enter")
    # The next click sends the slider's state, which follows the box only after Enter lands.
    page.wait_for_function(
        "([sel, value]) => Number(document.querySelector(sel + ' input[type=range]').value) === value",
        arg=[selector, value])


def pick(page: Any, selector: str, model: str) -> None:
    page.click(f"{selector} input")
    page.locator(f"[role=option][aria-label^='{model}']").click()


def toasts(page: Any) -> list[str]:
    return page.eval_on_selector_all("[data-testid=toast-body]", "els => els.map(e => e.innerText)")


def test_login_is_required_when_a_token_is_set(page: Any, lab: Any) -> None:
    page.goto(f"{lab.url}/")  # / redirects to the UI
    page.wait_for_selector("input[type=password]")
    assert page.locator("#pg-prompt").count() == 0
    shot(page, "01-login")
    page.locator("input").first.fill("lab")
    page.locator("input[type=password]").fill("not-the-token")
    page.get_by_role("button", name="Login").click()
    page.get_by_text("Incorrect Credentials").wait_for()
    assert page.locator("#pg-prompt").count() == 0
    page.locator("input").first.fill("lab")  # the failed attempt cleared the form
    page.locator("input[type=password]").fill(lab.token)
    page.get_by_role("button", name="Login").click()
    page.wait_for_selector("#pg-prompt textarea")
    page.wait_for_function(
        "() => document.querySelector('#pg-model input').value.includes('● loaded')")


def test_errors_are_readable_messages(page: Any) -> None:
    page.fill("#pg-prompt textarea", "")
    page.click("#pg-generate")
    page.wait_for_function("() => document.querySelectorAll('[data-testid=toast-body]').length > 0")
    assert any("Type a prompt first." in t for t in toasts(page))
    assert not any("Traceback" in t for t in toasts(page))
    # A model that cannot run here is listed, but picking it puts the previous one back.
    pick(page, "#pg-model", "mistralai/Mistral-7B-v0.1")
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('[data-testid=toast-body]'))"
        ".some(e => e.innerText.includes('cannot run here'))")
    page.wait_for_function(
        f"() => document.querySelector('#pg-model input').value.startsWith('{DEFAULT_MODEL}')")
    # Let the messages fade (10 s) so they do not cover the screenshots that follow.
    page.wait_for_function(
        "() => document.querySelectorAll('[data-testid=toast-body]').length === 0", timeout=30_000)


def test_generate_streams_and_shows_its_figures(page: Any) -> None:
    pick(page, "#pg-model", DEFAULT_MODEL)
    page.fill("#pg-prompt textarea", "Write a short poem about the sea.")
    set_slider(page, "#pg-max-tokens", 40)
    # Every value the page puts in the output box, as it puts it: polling from here could
    # miss the middle of a short stream on a busy machine.
    page.evaluate("""() => {
        const box = document.querySelector('#pg-output textarea');
        const value = Object.getOwnPropertyDescriptor(HTMLTextAreaElement.prototype, 'value');
        window.shown = [];
        Object.defineProperty(box, 'value', {
            configurable: true,
            get() { return value.get.call(this); },
            set(v) { window.shown.push(v); value.set.call(this, v); },
        });
    }""")
    page.click("#pg-generate")
    wait_status(page, "#pg-figures", "done", "error", "stopped")
    seen = [v for v in page.evaluate("window.shown") if v]
    final = figures(page, "#pg-figures")
    assert final["status"] == "done", final
    text = page.input_value("#pg-output textarea")
    assert text.strip()
    partial = [s for s in seen if s != text]
    assert partial, "the output arrived in one piece instead of streaming"
    assert all(text.startswith(p) for p in partial)
    assert int(final["prompt tokens"]) > 0
    assert 0 < int(final["completion tokens"]) <= 40
    assert final["cache"] == "MISS"
    assert re.fullmatch(r"\d+(\.\d+)? (ms|s)", final["first token"])
    assert float(final["tokens/s"]) > 0
    assert "total" in final and "finish" in final
    shot(page, "02-playground")

    # The same request again comes from the response cache, and says so.
    page.click("#pg-generate")
    page.wait_for_function(
        """() => {
            const chip = name => document.querySelector(`#pg-figures [data-figure="${name}"] b`);
            return chip('cache')?.innerText === 'HIT' && chip('status')?.innerText === 'done';
        }""", timeout=60_000)
    again = figures(page, "#pg-figures")
    assert "tokens/s" not in again  # a replay from the cache has no generation speed
    assert page.input_value("#pg-output textarea") == text


def test_stop_aborts_a_long_generation(page: Any) -> None:
    # Greedy counting in completion mode runs on for all 1500 tokens (minutes here), so the
    # generation cannot end by itself before Stop is pressed, as a sampled story might.
    page.locator("#pg-mode").get_by_label("Completion").check()
    set_slider(page, "#pg-temperature", 0)
    page.fill("#pg-prompt textarea", "1, 2, 3, 4, 5, 6, 7, 8,")
    set_slider(page, "#pg-max-tokens", 1500)
    page.click("#pg-generate")
    wait_status(page, "#pg-figures", "streaming")  # the first token has arrived
    page.wait_for_function(
        "() => document.querySelector('#pg-output textarea').value.includes('10')")
    assert not page.locator("#pg-stop").is_disabled(), figures(page, "#pg-figures")
    page.click("#pg-stop")
    assert wait_status(page, "#pg-figures", "stopped", "done", "error").startswith("stopped")
    page.wait_for_function("() => !document.querySelector('#pg-generate').disabled")
    stopped_at = page.input_value("#pg-output textarea")
    page.wait_for_timeout(2000)
    assert page.input_value("#pg-output textarea") == stopped_at  # nothing more arrives
    assert page.locator("#pg-stop").is_disabled()
    shot(page, "03-stopped")
    page.locator("#pg-mode").get_by_label("Chat").check()  # as the tests that follow expect


def test_copy_as_code_shows_the_current_request(page: Any) -> None:
    page.click("#pg-code")
    page.wait_for_selector("#pg-code .cm-content")
    curl = page.inner_text("#pg-code .cm-content")
    assert "/v1/chat/completions" in curl
    assert '"max_tokens": 1500' in curl
    assert "Bearer $API_TOKEN" in curl
    shot(page, "04-copy-as-code")
    page.click("#pg-code")


def test_compare_streams_two_settings_side_by_side(page: Any) -> None:
    page.click("#tab-compare-button")
    page.wait_for_function(
        "() => document.querySelector('#cmp-model-b input').value.includes('● loaded')")
    page.fill("#cmp-prompt textarea", "Name three colours.")
    set_slider(page, "#cmp-max-tokens", 32)
    page.click("#cmp-run")
    for side in ("a", "b"):
        assert wait_status(page, f"#cmp-figures-{side}", "done", "error", "stopped") == "done"
    for side in ("a", "b"):
        side_figures = figures(page, f"#cmp-figures-{side}")
        assert page.input_value(f"#cmp-output-{side} textarea").strip()
        assert int(side_figures["completion tokens"]) > 0
        assert "first token" in side_figures and "tokens/s" in side_figures
    shot(page, "05-compare")


def test_models_tab_unloads_and_loads_the_model(page: Any, lab: Any) -> None:
    page.click("#tab-models-button")
    table = page.locator("#models-table")
    page.wait_for_function(
        "() => document.querySelector('#models-table').innerText.includes('● loaded')")
    assert "unavailable here" in table.inner_text()
    pick(page, "#models-pick", DEFAULT_MODEL)
    page.click("#models-unload")
    page.wait_for_function(
        "() => document.querySelector('#models-progress').innerText.includes('is unloaded')")
    page.wait_for_function(
        "() => !document.querySelector('#models-table').innerText.includes('● loaded')")
    shot(page, "06-models-unloaded")

    page.click("#models-load")
    page.wait_for_function(
        "() => document.querySelector('#models-progress').innerText.includes('Loading')")
    page.wait_for_function(
        "() => document.querySelector('#models-progress').innerText.includes('loaded in')",
        timeout=lab.load_timeout * 1000)
    page.wait_for_function(
        "() => document.querySelector('#models-table').innerText.includes('● loaded')")
    shot(page, "07-models")


def test_dashboards_draw_the_machine_and_the_requests(page: Any) -> None:
    page.click("#tab-dashboards-button")
    page.wait_for_function(
        "() => (document.querySelector('#dash-summary') || {}).innerText?.includes('requests')")
    # Two redraws at least, so the series have more than one point.
    page.wait_for_timeout(5000)
    summary = figures(page, "#dash-summary")
    assert int(summary["requests"]) >= 5
    assert int(summary["stopped"]) >= 1  # the request stopped in the playground
    assert summary["in flight"] == "0"  # ...is no longer held by the engine
    for plot in ("#dash-cpu", "#dash-memory", "#dash-rate"):
        assert line_points(page, plot) >= 2, plot
    legend = page.inner_text("#dash-memory")
    assert "RAM used" in legend and "process RSS" in legend
    notice = page.locator("#dash-gpu-notice")
    if notice.is_visible():
        assert page.inner_text("#gpu-notice").startswith(NO_GPU_MESSAGE)
        assert not page.locator("#dash-gpu-util").is_visible()
    else:
        assert line_points(page, "#dash-gpu-util") >= 2
    shot(page, "08-dashboards")


def line_points(page: Any, selector: str) -> int:
    """How many points the plot's drawn lines pass through (Vega draws lines as SVG paths)."""
    return page.eval_on_selector_all(
        f"{selector} g.mark-line path",
        "els => els.reduce((n, e) => n + ((e.getAttribute('d') || '').match(/L/g) || []).length + 1, 0)",
    )
