"""Which replica of a model takes a request: the routing policies.

    least_outstanding   the replica with the fewest requests in flight (ours, plus other
                        clients' as the server's own /metrics last showed); ties take turns
    prefix_affinity     consistent hashing of the request's leading prompt text, so requests
                        that share a prefix (a long system prompt) land where vLLM's prefix
                        cache already holds it; with bounded loads: a replica at or above
                        `load_factor` x the average (counting the new request) plus one is
                        passed over for the next one on the ring (Mirrokni et al.,
                        "Consistent Hashing with Bounded Loads", with one request of slack)
    round_robin         each replica in turn

A policy sees only the replicas that may take the request now (up, not ejected) and never
awaits, so a choice and the request it counts are one step for the event loop.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Sequence
from typing import Any, Literal, Protocol, TypeVar

import orjson

from .request import OpenAIRequest

Policy = Literal["least_outstanding", "prefix_affinity", "round_robin"]
POLICIES: tuple[Policy, ...] = ("least_outstanding", "prefix_affinity", "round_robin")
_RING_POINTS = 160  # virtual nodes per replica: shares within a few per cent of even


class Replica(Protocol):
    @property
    def key(self) -> str: ...

    def load_score(self) -> int: ...


R = TypeVar("R", bound=Replica)


class Router(Protocol):
    policy: Policy

    def choose(self, replicas: Sequence[R], request: OpenAIRequest | None) -> R: ...


class RoundRobin:
    policy: Policy = "round_robin"

    def __init__(self) -> None:
        self._turn = 0

    def choose(self, replicas: Sequence[R], request: OpenAIRequest | None) -> R:
        replica = replicas[self._turn % len(replicas)]
        self._turn += 1
        return replica


class LeastOutstanding:
    policy: Policy = "least_outstanding"

    def __init__(self) -> None:
        self._turn = 0

    def choose(self, replicas: Sequence[R], request: OpenAIRequest | None) -> R:
        scores = [r.load_score() for r in replicas]
        best = min(scores)
        ties = [r for r, score in zip(replicas, scores, strict=True) if score == best]
        # Taking turns among equals spreads a burst that arrives at an idle set evenly.
        replica = ties[self._turn % len(ties)]
        self._turn += 1
        return replica


class PrefixAffinity:
    policy: Policy = "prefix_affinity"

    def __init__(self, *, prefix_chars: int = 256, load_factor: float = 1.25) -> None:
        self.prefix_chars = prefix_chars
        self.load_factor = load_factor
        self._fallback = LeastOutstanding()
        self._ring_keys: tuple[str, ...] = ()
        self._points: list[int] = []
        self._owners: list[str] = []

    def choose(self, replicas: Sequence[R], request: OpenAIRequest | None) -> R:
        prefix = prompt_prefix(request, self.prefix_chars) if request is not None else ""
        if not prefix or len(replicas) == 1:
            return self._fallback.choose(replicas, request)
        by_key = {r.key: r for r in replicas}
        self._build(tuple(sorted(by_key)))
        loads = {key: r.load_score() for key, r in by_key.items()}
        # The bound: no replica takes more than load_factor x the average, counting this
        # request, plus one: an imbalance of one request (0 and 1 in flight, at low load) is
        # not worth a cold prefix cache elsewhere.
        bound = math.ceil(self.load_factor * (sum(loads.values()) + 1) / len(loads)) + 1
        start = bisect.bisect(self._points, _hash(prefix)) % len(self._points)
        seen: set[str] = set()
        for i in range(len(self._points)):
            key = self._owners[(start + i) % len(self._points)]
            if key in seen:
                continue
            if loads[key] < bound:
                return by_key[key]
            seen.add(key)
            if len(seen) == len(loads):
                break
        return self._fallback.choose(replicas, request)  # unreachable: the average is below

    def _build(self, keys: tuple[str, ...]) -> None:
        if keys == self._ring_keys:
            return
        ring = sorted((_hash(f"{key}#{i}"), key) for key in keys for i in range(_RING_POINTS))
        self._points = [point for point, _ in ring]
        self._owners = [key for _, key in ring]
        self._ring_keys = keys


def make_router(policy: str, *, prefix_chars: int = 256, load_factor: float = 1.25) -> Router:
    if policy == "least_outstanding":
        return LeastOutstanding()
    if policy == "prefix_affinity":
        return PrefixAffinity(prefix_chars=prefix_chars, load_factor=load_factor)
    if policy == "round_robin":
        return RoundRobin()
    raise ValueError(f"unknown routing policy {policy!r}; one of {', '.join(POLICIES)}")


def prompt_prefix(request: OpenAIRequest, chars: int) -> str:
    """The first `chars` characters of what the model reads first, as text.

    Completions: the prompt (the first one of a list; token ids written out). Chat: the
    messages in order, role and content. Requests sharing a system prompt or a document that
    long share this prefix, and so their replica.
    """
    body = request.body
    if request.endpoint == "chat":
        parts: list[str] = []
        size = 0
        for message in body.get("messages") or ():
            if not isinstance(message, dict):
                continue
            text = f"{message.get('role', '')}:{_text(message.get('content'))}\n"
            parts.append(text)
            size += len(text)
            if size >= chars:
                break
        return "".join(parts)[:chars]
    # completions; embeddings (Cohere's: texts)
    prompt = body.get("prompt", body.get("input", body.get("texts")))
    if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
        prompt = prompt[0]  # a batch of prompts: the first decides
    return _text(prompt)[:chars]


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(t, int) for t in content):
        return ",".join(map(str, content))
    if isinstance(content, list):  # chat content parts: their text, anything else as JSON
        return "".join(p.get("text", "") if isinstance(p, dict) and p.get("type") == "text"
                       else orjson.dumps(p).decode() for p in content)
    return "" if content is None else orjson.dumps(content).decode()


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")
