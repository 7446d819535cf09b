"""A run as the pipeline hands it to the store: what was asked, what came back, and from what."""

from __future__ import annotations

import dataclasses
import json
import uuid
from dataclasses import dataclass
from typing import Any

# Body fields that are the transport, not the request: a run is the same whether streamed or not.
_TRANSPORT = ("stream", "stream_options")


@dataclass(slots=True)
class RunRecord:
    model: str
    route: str
    mode: str
    status: str
    cache: str
    request: dict[str, Any]
    seconds: float
    created: float
    answer: dict[str, Any] | None = None
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft: float | None = None
    queue: float | None = None  # in the engine's queue, before it began (when the engine says)
    identity: str | None = None
    engine: str | None = None
    vllm_version: str | None = None
    device: str | None = None
    request_id: str | None = None
    experiment: str | None = None
    id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)
    text: str = ""

    def __post_init__(self) -> None:
        self.request = {k: v for k, v in self.request.items() if k not in _TRANSPORT}
        if not self.text and self.answer is not None:
            self.text = reply_text(self.answer)

    def row(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def matches(self, model: str | None, mode: str | None, text: str | None,
                experiment: str | None, before: float | None) -> bool:
        """Whether the store's filters find it (a run still in memory, as the query would)."""
        if model and self.model != model:
            return False
        if mode and self.mode != mode:
            return False
        if experiment and self.experiment != experiment:
            return False
        if before is not None and self.created >= before:
            return False
        if text:
            # The request as the database holds it (JSON), so a buffered run matches as it
            # will once written.
            needle = text.lower()
            return needle in self.text.lower() or needle in as_json(self.request).lower()
        return True


def as_json(value: Any) -> str:
    """JSON as the store writes it (Unicode as it is)."""
    return json.dumps(value, ensure_ascii=False)


def reply_text(answer: dict[str, Any]) -> str:
    """The first choice's text: a completion's text, a chat message's content (or, for a reply
    that is only tool calls, their arguments); a Responses or Anthropic answer's text parts."""
    if isinstance(answer.get("output"), list):  # Responses: output items of type "message"
        return "".join(str(part.get("text") or "") for item in answer["output"]
                       if isinstance(item, dict) and item.get("type") == "message"
                       for part in item.get("content") or () if isinstance(part, dict))
    if answer.get("type") == "message" and isinstance(answer.get("content"), list):
        return "".join(str(block.get("text") or "") for block in answer["content"]
                       if isinstance(block, dict) and block.get("type") == "text")
    choices = answer.get("choices") or [{}]
    first = choices[0] if isinstance(choices[0], dict) else {}
    if "text" in first:
        return str(first.get("text") or "")
    message = first.get("message") or {}
    if message.get("content"):
        return str(message["content"])
    calls = message.get("tool_calls") or ()
    return "\n".join(str((c.get("function") or {}).get("arguments") or "") for c in calls)
