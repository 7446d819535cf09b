"""From the form's widgets to the OpenAI request the API would get, with readable refusals."""

from __future__ import annotations

import json
from typing import Any

from textgen import OpenAIRequest

from . import structured
from .alerts import user_error

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
                     seed: float | str | None, ignore_eos: bool = False) -> dict[str, Any]:
    """The sampling fields of an OpenAI body, in OpenAI's order (unset ones left out);
    `ignore_eos` is vLLM's own field (generate to `max_tokens` whatever the model says)."""
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
    if ignore_eos:
        options["ignore_eos"] = True
    return options


def generation_request(model: str | None, mode: str, prompt: str | None,
                       options: dict[str, Any], *, require_prompt: bool = True,
                       kept_as: str = "playground") -> OpenAIRequest:
    """The request the playground sends, streamed: chat messages or a raw prompt, kept in the
    run store under `kept_as` (History's mode)."""
    if not model:
        raise user_error("Pick a model first.")
    prompt = prompt or ""
    if require_prompt and not prompt.strip():
        raise user_error("Type a prompt first.")
    if mode == CHAT:
        request = OpenAIRequest.chat(model=model, messages=[{"role": "user", "content": prompt}],
                                     **options, stream=True)
    else:
        request = OpenAIRequest.completion(model=model, prompt=prompt, **options, stream=True)
    return request.kept_as(kept_as)


def probability_options(mode: str, show: bool, top: float, echo: bool) -> dict[str, Any]:
    """The logprobs fields for "show token probabilities": chat takes a switch and a count of
    alternatives, completions a count (and `echo` for the prompt's own tokens)."""
    if not show:
        return {}
    top = int(top)
    if mode == CHAT:
        return {"logprobs": True, "top_logprobs": top}
    return {"logprobs": top, **({"echo": True} if echo else {})}


def structure_options(mode: str, kind: str | None, schema: str | None, tools: str | None,
                      choice: str | None) -> dict[str, Any]:
    """`response_format`, `tools` and `tool_choice` from the JSON boxes, or a readable refusal."""
    try:
        options: dict[str, Any] = {}
        if (response_format := structured.response_format(kind, schema)) is not None:
            options["response_format"] = response_format
        defined = structured.tools(tools)
        if defined:
            if mode != CHAT:
                raise ValueError("Tools work in Chat mode: the model calls them in a "
                                 "conversation. Switch to Chat, or empty the tools box.")
            options["tools"] = defined
            options["tool_choice"] = structured.tool_choice(choice, defined)
    except ValueError as exc:
        raise user_error(str(exc), title="Check the JSON") from None
    return options


def chat_request(model: str | None, messages: list[dict[str, Any]],
                 options: dict[str, Any]) -> OpenAIRequest:
    """A streamed chat request for a whole conversation."""
    if not model:
        raise user_error("Pick a model first.")
    if int(options.get("n") or 1) > 1:
        raise user_error("A conversation continues from one reply: set n to 1, or use "
                         "Completion mode to sample several.")
    return OpenAIRequest.chat(model=model, messages=messages, **options,
                              stream=True).kept_as("playground")


# The chat settings a Responses request has too (`max_tokens` is its `max_output_tokens`).
RESPONSES_SETTINGS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")


def responses_request(model: str | None, messages: list[dict[str, Any]],
                      options: dict[str, Any]) -> OpenAIRequest:
    """A conversation as a streamed, stateless Responses request (`/v1/responses`, `store`
    false: the whole conversation goes each turn, as with chat). It carries the settings the
    Responses API has; tools and JSON output stay with the chat API."""
    if not model:
        raise user_error("Pick a model first.")
    if options.get("tools") or options.get("response_format"):
        raise user_error("Tools and JSON output go through the chat API here: untick "
                         "'Responses API'.")
    if any(m.get("role") == "tool" or m.get("tool_calls") for m in messages):
        raise user_error("This conversation has tool calls: continue it with the chat API.")
    body: dict[str, Any] = {
        "model": model, "stream": True, "store": False,
        "input": [{"role": m["role"], "content": m.get("content") or ""} for m in messages],
        **{k: options[k] for k in RESPONSES_SETTINGS if options.get(k) is not None},
    }
    if options.get("max_tokens"):
        body["max_output_tokens"] = options["max_tokens"]
    return OpenAIRequest("responses", body).kept_as("playground")


def settings_values(settings: dict[str, Any]) -> dict[str, Any]:
    """The form's values for a request's settings (an imported conversation, a reopened run):
    only the fields the settings have, named as `Controls` names its widgets."""
    values: dict[str, Any] = {}
    for name in ("max_tokens", "temperature", "top_p", "n", "presence_penalty", "frequency_penalty"):
        if isinstance(settings.get(name), (int, float)):
            values[name] = settings[name]
    if "stop" in settings:
        stops = settings["stop"] if isinstance(settings["stop"], list) else [settings["stop"]]
        values["stop"] = "\n".join(str(s).replace("\n", "\\n").replace("\t", "\\t")
                                   for s in stops if s)
    if "seed" in settings:
        values["seed"] = "" if settings["seed"] is None else str(settings["seed"])
    values["ignore_eos"] = settings.get("ignore_eos") is True
    logprobs = settings.get("logprobs")
    values["show_probs"] = bool(logprobs) or logprobs == 0
    if values["show_probs"]:
        top = settings.get("top_logprobs") if isinstance(logprobs, bool) else logprobs
        values["top_logprobs"] = min(int(top or 0), 5)
        values["echo"] = bool(settings.get("echo"))
    response_format = settings.get("response_format")
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    values["format"] = kind if kind in structured.FORMATS else structured.TEXT
    if kind == structured.JSON_SCHEMA:
        schema = (response_format.get("json_schema") or {}).get("schema")  # type: ignore[union-attr]
        values["schema"] = json.dumps(schema, indent=2, ensure_ascii=False)
    tools = settings.get("tools")
    values["tools"] = json.dumps(tools, indent=2, ensure_ascii=False) if tools else ""
    choice = settings.get("tool_choice")
    if isinstance(choice, dict):
        choice = (choice.get("function") or {}).get("name")
    values["tool_choice"] = choice if isinstance(choice, str) and choice else "auto"
    return values
