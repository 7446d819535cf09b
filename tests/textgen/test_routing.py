"""The routing policies on their own: which replica each request goes to, given loads."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pytest

from textgen import OpenAIRequest
from textgen.routing import (
    LeastOutstanding,
    PrefixAffinity,
    RoundRobin,
    make_router,
    prompt_prefix,
)


@dataclass(eq=False)
class Replica:
    key: str
    load: int = 0

    def load_score(self) -> int:
        return self.load


def replicas(n: int = 3) -> list[Replica]:
    return [Replica(f"http://10.0.0.{i}:8000") for i in range(1, n + 1)]


def completion(prompt: object) -> OpenAIRequest:
    return OpenAIRequest("completions", {"model": "m", "prompt": prompt})


def chat(*messages: tuple[str, object]) -> OpenAIRequest:
    return OpenAIRequest("chat", {"model": "m", "messages": [
        {"role": role, "content": content} for role, content in messages]})


def test_least_outstanding_spreads_a_burst_on_idle_replicas_evenly() -> None:
    router, pool = LeastOutstanding(), replicas()
    for _ in range(6):  # requests that stay in flight
        router.choose(pool, None).load += 1
    assert [r.load for r in pool] == [2, 2, 2]


def test_least_outstanding_takes_the_least_loaded() -> None:
    router, pool = LeastOutstanding(), replicas()
    pool[0].load, pool[1].load, pool[2].load = 5, 1, 3
    assert router.choose(pool, None) is pool[1]


def test_round_robin_takes_each_in_turn_whatever_the_load() -> None:
    router, pool = RoundRobin(), replicas()
    pool[0].load = 100
    assert [router.choose(pool, None) for _ in range(6)] == pool * 2


def test_prefix_affinity_sends_a_shared_prefix_to_one_replica() -> None:
    router, pool = PrefixAffinity(prefix_chars=64), replicas()
    system = "You are a support agent for ACME. " * 4
    chosen = {router.choose(pool, chat(("system", system), ("user", f"question {i}"))).key
              for i in range(20)}
    assert len(chosen) == 1


def test_prefix_affinity_spreads_different_prefixes_over_every_replica() -> None:
    router, pool = PrefixAffinity(), replicas()
    shares = Counter(router.choose(pool, completion(f"document {i}: ...")).key for i in range(600))
    assert set(shares) == {r.key for r in pool}
    assert all(120 < n < 280 for n in shares.values()), shares  # 200 each, give or take


def test_prefix_affinity_moves_only_the_prefixes_of_a_replica_that_leaves() -> None:
    router, pool = PrefixAffinity(), replicas()
    prompts = [completion(f"prompt {i}") for i in range(300)]
    before = [router.choose(pool, p).key for p in prompts]
    gone = pool.pop(1)
    after = [router.choose(pool, p).key for p in prompts]
    moved = [(b, a) for b, a in zip(before, after, strict=True) if b != a]
    assert moved and all(b == gone.key for b, _ in moved)


def test_prefix_affinity_passes_over_a_replica_above_the_bound() -> None:
    router, pool = PrefixAffinity(load_factor=1.25), replicas()
    request = completion("the same long system prompt")
    home = router.choose(pool, request)
    # The bound is ceil(1.25 x (total + 1) / 3) + 1: 3 for home at 4 with the others idle.
    home.load = 4
    other = router.choose(pool, request)
    assert other is not home
    # Consistent too: the overflow of one prefix goes to one next replica, not anywhere.
    assert {router.choose(pool, request).key for _ in range(5)} == {other.key}
    # At low load an imbalance of a request or two keeps the prefix home (bound 2, then 3).
    home.load = 1
    assert router.choose(pool, request) is home
    home.load = 2
    assert router.choose(pool, request) is home


def test_prefix_affinity_never_exceeds_the_bound_under_a_single_hot_prefix() -> None:
    router, pool = PrefixAffinity(load_factor=1.25), replicas()
    request = completion("everyone asks about the same document")
    for _ in range(30):
        bound = -(-1.25 * (sum(r.load for r in pool) + 1) // 3) + 1
        chosen = router.choose(pool, request)
        assert chosen.load < bound
        chosen.load += 1
    loads = sorted((r.load for r in pool), reverse=True)
    assert loads[0] <= 14 and loads[1] >= 10  # home full to the bound, the rest overflowed


def test_without_a_prompt_prefix_affinity_is_least_outstanding() -> None:
    router, pool = PrefixAffinity(), replicas()
    pool[0].load, pool[1].load = 2, 2
    assert router.choose(pool, completion("")) is pool[2]
    assert router.choose(pool, None) is pool[2]


@pytest.mark.parametrize(
    ("request_", "prefix"),
    [
        (completion("abcdefghij"), "abcdef"),
        (completion(["first prompt", "second"]), "first "),
        (completion([101, 7592, 2088]), "101,75"),
        (completion([[1, 2, 3], [4]]), "1,2,3"),
        (chat(("system", "Be brief."), ("user", "Hi")), "system"),
        (chat(("user", [{"type": "text", "text": "look"}, {"type": "image_url",
                                                           "image_url": {"url": "x"}}])),
         "user:l"),
    ],
    ids=["text", "batch", "token-ids", "token-id-batch", "chat", "chat-parts"],
)
def test_the_prefix_is_what_the_model_reads_first(request_: OpenAIRequest, prefix: str) -> None:
    assert prompt_prefix(request_, 6) == prefix


def test_a_chat_prefix_covers_the_system_prompt_before_the_question() -> None:
    request = chat(("system", "S" * 300), ("user", "what now?"))
    assert prompt_prefix(request, 256) == "system:" + "S" * 249


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown routing policy"):
        make_router("random")
