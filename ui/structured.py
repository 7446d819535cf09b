"""Structured output and tools: the JSON boxes of the playground read into request fields.

Every problem is a ValueError whose message says which box, what is wrong and where (line and
column), for the page to show as it is; the request itself is then judged by vLLM.
"""

from __future__ import annotations

import json
from typing import Any

TEXT, JSON_OBJECT, JSON_SCHEMA = "text", "json_object", "json_schema"
FORMATS = [TEXT, JSON_OBJECT, JSON_SCHEMA]
TOOL_CHOICES = ["auto", "required", "none"]

EXAMPLE_SCHEMA = """{
  "type": "object",
  "properties": {
    "name": {"type": "string"},
    "age": {"type": "integer"}
  },
  "required": ["name", "age"]
}"""

EXAMPLE_TOOLS = """[
  {
    "type": "function",
    "function": {
      "name": "get_weather",
      "description": "The current weather in a city",
      "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"]
      }
    }
  }
]"""


def _load(text: str, box: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"The {box} box is not valid JSON: {exc.msg} "
                         f"(line {exc.lineno}, column {exc.colno}).") from None


def response_format(kind: str | None, schema_text: str | None) -> dict[str, Any] | None:
    """`response_format` for the chosen kind: None (plain text), JSON object, or JSON schema.

    The schema box takes a JSON Schema, or OpenAI's whole `json_schema` object (with `name`).
    """
    if not kind or kind == TEXT:
        return None
    if kind == JSON_OBJECT:
        return {"type": "json_object"}
    if kind != JSON_SCHEMA:
        raise ValueError(f"Unknown response format {kind!r}.")
    if not (schema_text or "").strip():
        raise ValueError("The JSON schema box is empty: paste a JSON Schema, or pick json_object.")
    schema = _load(schema_text or "", "JSON schema")
    if not isinstance(schema, dict):
        raise ValueError("The JSON schema box must hold a JSON object (a JSON Schema).")
    if "schema" in schema and isinstance(schema["schema"], dict):
        wrapped = {"name": str(schema.get("name") or "reply"), **schema}
        return {"type": JSON_SCHEMA, "json_schema": wrapped}
    return {"type": JSON_SCHEMA, "json_schema": {"name": "reply", "schema": schema}}


def tools(text: str | None) -> list[dict[str, Any]]:
    """Function definitions from the tools box: OpenAI's `tools` list (or bare functions, or
    one of either); an empty box is no tools."""
    if not (text or "").strip():
        return []
    given = _load(text or "", "tools")
    items = given if isinstance(given, list) else [given]
    found = []
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise ValueError(f"Tool {number} in the tools box must be a JSON object.")
        function = item.get("function") if item.get("type") == "function" else item
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) \
                or not function["name"]:
            raise ValueError(f"Tool {number} in the tools box needs a function \"name\".")
        parameters = function.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(parameters, dict):
            raise ValueError(f"The \"parameters\" of tool {function['name']} must be a JSON Schema object.")
        found.append({"type": "function", "function": {**function, "parameters": parameters}})
    names = [t["function"]["name"] for t in found]
    if len(set(names)) != len(names):
        raise ValueError("Two tools in the tools box have the same name.")
    return found


def tool_names(text: str | None) -> list[str]:
    """The function names in the tools box, or none while it does not parse."""
    try:
        return [t["function"]["name"] for t in tools(text)]
    except ValueError:
        return []


def tool_choice(choice: str | None, defined: list[dict[str, Any]]) -> str | dict[str, Any] | None:
    """`tool_choice`: auto, required, none, or one function by name (it must be defined)."""
    if not defined:
        return None
    if not choice or choice in TOOL_CHOICES:
        return choice or "auto"
    if choice not in {t["function"]["name"] for t in defined}:
        raise ValueError(f"tool_choice names {choice!r}, which is not in the tools box.")
    return {"type": "function", "function": {"name": choice}}


def parsed_reply(text: str) -> tuple[Any, str | None]:
    """A JSON reply parsed for display, or (None, why not)."""
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, (f"The reply is not valid JSON ({exc.msg} at character {exc.pos}); "
                      "was it cut short by max_tokens?")
