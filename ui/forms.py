"""From the form's widgets to the OpenAI request the API would get, with readable refusals."""

from __future__ import annotations

from typing import Any

from textgen import OpenAIRequest

from .errors import user_error

CHAT, COMPLETION = "Chat", "Completion"
MODES = [CHAT, COMPLETION]
MAX_STOP_SEQUENCES = 4  # as OpenAI's API (and ours) allow

# The seed's sampling controls with the playground's defaults and ranges.
DEFAULTS = {
    "max_tokens": 128,
    "temperature": 0.7,
    "top_p": 1.0,
    "n": 1,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
}


def parse_stop(text: str | None) -> list[str]:
    """Stop sequences, one per line; `\\n` and `\\t` stand for a newline and a tab."""
    sequences = []
    for line in (text or "").splitlines():
        if not line:
            continue
        sequence = line.replace("\\n", "\n").replace("\\t", "\t")
        sequences.append(sequence)
    if len(sequences) > MAX_STOP_SEQUENCES:
        raise user_error(f"At most {MAX_STOP_SEQUENCES} stop sequences are allowed; "
                       f"you gave {len(sequences)}.")
    return sequences


def parse_seed(value: float | str | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise user_error(f"The seed must be a whole number, not {value!r}.") from None


def sampling_options(max_tokens: float, temperature: float, top_p: float, n: float,
                     stop: str | None, presence_penalty: float, frequency_penalty: float,
                     seed: float | str | None) -> dict[str, Any]:
    """The sampling fields of an OpenAI body, in OpenAI's order (unset ones left out)."""
    options: dict[str, Any] = {
        "max_tokens": int(max_tokens),
        "temperature": float(temperature),
        "top_p": float(top_p),
        "n": int(n),
    }
    if stops := parse_stop(stop):
        options["stop"] = stops
    options["presence_penalty"] = float(presence_penalty)
    options["frequency_penalty"] = float(frequency_penalty)
    if (parsed_seed := parse_seed(seed)) is not None:
        options["seed"] = parsed_seed
    return options


def generation_request(model: str | None, mode: str, prompt: str | None,
                       options: dict[str, Any], *, require_prompt: bool = True) -> OpenAIRequest:
    """The request the playground sends, streamed: chat messages or a raw prompt."""
    if not model:
        raise user_error("Pick a model first.")
    prompt = prompt or ""
    if require_prompt and not prompt.strip():
        raise user_error("Type a prompt first.")
    if mode == CHAT:
        return OpenAIRequest.chat(model=model, messages=[{"role": "user", "content": prompt}],
                                  **options, stream=True)
    return OpenAIRequest.completion(model=model, prompt=prompt, **options, stream=True)
