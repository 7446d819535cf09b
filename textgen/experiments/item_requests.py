"""What an evaluation asks the lab for one item: the request a configuration makes of it, and
for multiple choice by log-likelihood, the choice the model prefers, as lm-eval computes it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import InvalidRequest
from ..request import OpenAIRequest
from .datasets import Item
from .spec import Config, EvaluationSpec

if TYPE_CHECKING:
    from ..service import TextGen


def item_request(experiment: str, request_id: str, config: Config, item: Item,
                 spec: EvaluationSpec) -> OpenAIRequest:
    """The request a configuration makes of an item: greedy unless its settings say otherwise,
    its system prompt first, kept as a run of the evaluation."""
    body: dict[str, Any] = {"model": config.model, "max_tokens": spec.max_tokens,
                            "temperature": 0, **config.settings}
    if spec.route == "chat":
        messages = item.messages or [{"role": "user", "content": item.prompt}]
        if config.system:
            messages = [{"role": "system", "content": config.system}, *messages]
        body["messages"] = messages
    else:
        if item.prompt is None:
            raise InvalidRequest(f"Item {item.id} is a conversation: evaluate it on the "
                                 "chat route.", param="route")
        body["prompt"] = (config.system + "\n\n" if config.system else "") + item.prompt
    return OpenAIRequest(spec.route, body, request_id=request_id, record="evaluation",
                         experiment=experiment)


async def choose(textgen: TextGen, experiment: str, request_id: str, config: Config,
                 item: Item) -> int:
    """The choice with the highest log-likelihood after the prompt, as lm-eval computes
    it: the context's and each continuation's tokens, one echo request scoring them all."""
    assert item.prompt is not None and item.choices is not None
    context = (config.system + "\n\n" if config.system else "") + item.prompt
    # lm-eval's rule: the context's trailing spaces belong to each continuation.
    stripped = context.rstrip()
    spaces = context[len(stripped):]
    ctx_ids = await _tokens(textgen, config.model, stripped)  # the same for every choice
    prompts = [ctx_ids + await _tokens(textgen, config.model, spaces + " " + choice)
               for choice in item.choices]
    body = {"model": config.model, "prompt": prompts, "max_tokens": 1, "temperature": 0,
            "logprobs": 1, "echo": True}
    response = await textgen.complete(OpenAIRequest(
        "completions", body, request_id=request_id, record="evaluation",
        experiment=experiment))
    scores = []
    for choice in sorted(response["choices"], key=lambda c: c["index"]):
        logprobs = choice["logprobs"]["token_logprobs"]
        scores.append(sum(logprobs[len(ctx_ids):-1]))
    return max(range(len(scores)), key=scores.__getitem__)


async def _tokens(textgen: TextGen, model: str, text: str) -> list[int]:
    tokenized = await textgen.tokenize("/tokenize", {
        "model": model, "prompt": text, "add_special_tokens": False})
    return list(tokenized["tokens"])
