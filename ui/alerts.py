"""How errors reach the person at the browser: a readable `gr.Error`, never a stack trace."""

from __future__ import annotations

import math

import gradio as gr

from textgen import RateLimited, TextGenError


def user_error(message: str, title: str = "Error") -> gr.Error:
    """A refusal the user can act on; expected, so the server log gets no traceback for it."""
    return gr.Error(message, title=title, print_exception=False)


def user_message(exc: TextGenError) -> str:
    """What the person at the browser reads for a core error: what happened, and what to do."""
    if isinstance(exc, RateLimited):
        return (f"Rate limit reached: this model takes {exc.limit} requests per minute. "
                f"Try again in {max(1, math.ceil(exc.retry_after))} s.")
    return exc.message
