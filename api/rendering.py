"""Core results in OpenAI's JSON: completions, chat completions, and their stream chunks."""

from __future__ import annotations

from typing import Any

from textgen import Completion, Delta, Generation, Usage
from textgen.types import Choice, TokenLogprob


def usage_dict(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def completion_logprobs(entries: list[TokenLogprob | None] | None, offset: int = 0) -> dict[str, Any] | None:
    """OpenAI's legacy completions logprobs: parallel lists of tokens and their logprobs."""
    if entries is None:
        return None
    tokens, token_logprobs, top, offsets = [], [], [], []
    for entry in entries:
        offsets.append(offset)
        if entry is None:
            tokens.append("")
            token_logprobs.append(None)
            top.append(None)
            continue
        tokens.append(entry.token)
        token_logprobs.append(entry.logprob)
        top.append(dict(entry.top))
        offset += len(entry.token)
    return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top,
            "text_offset": offsets}


def chat_logprobs(entries: list[TokenLogprob | None] | None) -> dict[str, Any] | None:
    if entries is None:
        return None
    content = []
    for entry in entries:
        if entry is None:
            continue
        content.append({
            "token": entry.token, "logprob": entry.logprob,
            "bytes": list(entry.token.encode()),
            "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())}
                             for t, lp in entry.top],
        })
    return {"content": content}


class CompletionRenderer:
    """Renders /v1/completions responses and chunks for one generation."""

    object = "text_completion"

    def __init__(self, generation: Generation) -> None:
        self.g = generation
        self._offsets: dict[int, int] = {}

    def _head(self, obj: str) -> dict[str, Any]:
        return {"id": self.g.id, "object": obj, "created": self.g.created, "model": self.g.model}

    def response(self, completion: Completion) -> dict[str, Any]:
        body = self._head(self.object)
        body["choices"] = [self._choice(c) for c in completion.choices]
        body["usage"] = usage_dict(completion.usage)
        return body

    def _choice(self, c: Choice) -> dict[str, Any]:
        return {"text": c.text, "index": c.index, "logprobs": completion_logprobs(c.logprobs),
                "finish_reason": c.finish_reason}

    def chunk(self, delta: Delta, include_usage: bool) -> dict[str, Any]:
        body = self._head(self.object)
        offset = self._offsets.get(delta.index, 0)
        self._offsets[delta.index] = offset + len(delta.text)
        body["choices"] = [{"text": delta.text, "index": delta.index,
                            "logprobs": completion_logprobs(delta.logprobs, offset),
                            "finish_reason": delta.finish_reason}]
        if include_usage:
            body["usage"] = None
        return body

    def usage_chunk(self, usage: Usage) -> dict[str, Any]:
        body = self._head(self.object)
        body["choices"] = []
        body["usage"] = usage_dict(usage)
        return body


class ChatRenderer(CompletionRenderer):
    """Renders /v1/chat/completions responses and chunks."""

    object = "chat.completion"

    def __init__(self, generation: Generation) -> None:
        super().__init__(generation)
        self.g.id = "chatcmpl-" + self.g.id.removeprefix("cmpl-")
        self._started: set[int] = set()

    def _choice(self, c: Choice) -> dict[str, Any]:
        return {"index": c.index, "message": {"role": "assistant", "content": c.text},
                "logprobs": chat_logprobs(c.logprobs), "finish_reason": c.finish_reason}

    def chunk(self, delta: Delta, include_usage: bool) -> dict[str, Any]:
        body = self._head("chat.completion.chunk")
        message: dict[str, Any] = {"content": delta.text}
        if delta.index not in self._started:
            self._started.add(delta.index)
            message = {"role": "assistant", "content": delta.text}
        body["choices"] = [{"index": delta.index, "delta": message,
                            "logprobs": chat_logprobs(delta.logprobs),
                            "finish_reason": delta.finish_reason}]
        if include_usage:
            body["usage"] = None
        return body

    def usage_chunk(self, usage: Usage) -> dict[str, Any]:
        body = super().usage_chunk(usage)
        body["object"] = "chat.completion.chunk"
        return body
