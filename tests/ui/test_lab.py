"""The UI in-process, without an engine: mounting, auth, and how refusals read."""

from __future__ import annotations

import asyncio

import gradio as gr
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from textgen import DEFAULT_MODEL, OpenAIRequest, RateLimited, Settings, TextGen
from textgen.models import ModelState
from ui import build_ui
from ui.alerts import user_message
from ui.streaming import Run, StopButtons, follow, readiness_problem
from ui.sweep_runner import SweepGuard
from ui.tabs.benchmark import plan_text


def _settings(**overrides: object) -> Settings:
    # No model loads at start: these tests need the UI, not an engine.
    base = {"MODEL": "", "METRICS_PORT": 0, "VLLM_ENDPOINT": "", "REDIS_URL": "",
            "API_TOKEN": "", "TEXT_GEN_API_TOKEN": ""}
    return Settings(**{**base, **overrides})  # type: ignore[arg-type]


def test_build_ui_returns_blocks_with_the_seven_tabs() -> None:
    demo = build_ui(TextGen(_settings()))
    assert isinstance(demo, gr.Blocks)
    tabs = [block.label for block in demo.blocks.values() if isinstance(block, gr.Tab)]
    assert {"Playground", "Compare", "Benchmark", "Evaluate", "History", "Models",
            "Dashboards"} <= set(tabs)


def test_every_handler_takes_each_input_and_the_request_gradio_can_pass() -> None:
    """Gradio fills a handler's parameters from its inputs and gives gr.Request only to a
    parameter it sees; a keyword-only one after *args is never given (the handler fails
    at its first click), and a handler must take as many arguments as it has inputs."""
    import inspect

    demo = build_ui(TextGen(_settings()))
    for dependency in demo.fns.values():
        fn = dependency.fn
        if fn is None:
            continue
        parameters = inspect.signature(fn).parameters.values()
        kinds = {p.kind for p in parameters}
        requests = [p for p in parameters if p.annotation in (gr.Request, "gr.Request")]
        assert not (inspect.Parameter.VAR_POSITIONAL in kinds and any(
            p.kind is inspect.Parameter.KEYWORD_ONLY for p in requests)), fn
        if inspect.Parameter.VAR_POSITIONAL not in kinds:
            positional = [p for p in parameters if p.kind in (
                inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
                and p not in requests and p.annotation not in (gr.SelectData, "gr.SelectData")
                and p.default is inspect.Parameter.empty]
            assert len(positional) <= len(dependency.inputs), fn


def test_the_benchmark_plan_shows_the_requests_beside_the_rate_limit() -> None:
    textgen = TextGen(_settings(RATE_LIMITS={DEFAULT_MODEL: 50}))
    assert plan_text(textgen, DEFAULT_MODEL, "1, 2, 4", 3) == (
        "Sends **21** requests (3 at 1, 6 at 2, 12 at 4) — within its limit of 50 requests/min.")
    assert "more than its limit of 50" in plan_text(textgen, DEFAULT_MODEL, "8, 16", 3)
    assert plan_text(textgen, DEFAULT_MODEL, "1, x", 3).startswith("⚠ 'x' is not")
    unlimited = TextGen(_settings(RATE_LIMITS={DEFAULT_MODEL: 0}))
    assert plan_text(unlimited, DEFAULT_MODEL, "64", 10).endswith("no rate limit.")


def test_one_sweep_at_a_time() -> None:
    guard = SweepGuard()
    with guard.hold("m at 1, 2"):
        assert guard.running == "m at 1, 2"
        with pytest.raises(RuntimeError, match="m at 1, 2"), guard.hold("another"):
            pass
    assert guard.running is None


def test_with_a_token_the_ui_asks_for_it() -> None:
    app = create_app(_settings(API_TOKEN="s3cret"))
    with TestClient(app) as client:
        assert client.get("/", follow_redirects=False).headers["location"] == "/ui/"
        assert client.get("/ui/config").status_code == 401
        refused = client.post("/ui/login", data={"username": "me", "password": "wrong"})
        assert refused.status_code == 400
        assert client.get("/ui/config").status_code == 401
        accepted = client.post("/ui/login", data={"username": "me", "password": "s3cret"})
        assert accepted.status_code == 200
        assert client.get("/ui/config").status_code == 200


def test_without_a_token_the_ui_is_open_like_the_api() -> None:
    with TestClient(create_app(_settings())) as client:
        assert client.get("/ui/config").status_code == 200


def test_rate_limit_refusals_say_when_to_retry() -> None:
    refusal = RateLimited("Rate limit reached", retry_after=12.2, limit=100, reset_after=12.2)
    assert user_message(refusal) == (
        "Rate limit reached: this model takes 100 requests per minute. Try again in 13 s.")


async def test_a_model_that_is_not_loaded_is_refused_in_the_uis_words() -> None:
    textgen = TextGen(_settings())
    problem = readiness_problem(textgen, DEFAULT_MODEL)
    assert problem is not None and "press Load" in problem and "POST" not in problem
    assert "cannot run here" in (readiness_problem(textgen, "mistralai/Mistral-7B-v0.1") or "")
    assert "does not exist" in (readiness_problem(textgen, "no/such-model") or "")


async def test_a_run_the_core_refuses_ends_in_error_with_the_cores_message() -> None:
    textgen = TextGen(_settings())
    run = Run(textgen, OpenAIRequest.completion(model=DEFAULT_MODEL, prompt="hi", stream=True))
    stops = StopButtons()
    with stops.armed("page", "playground") as stop:
        frames = [run.figures()["status"] async for _ in follow([run], stop)]
    assert run.state == "error" and frames[-1].startswith("error: ")
    assert "not loaded" in (run.error or "")
    assert not stops.press("page", "playground")  # disarmed once the run ended


async def test_stop_before_any_output_ends_the_run_as_stopped() -> None:
    textgen = TextGen(_settings())
    entry = textgen.models.entry(DEFAULT_MODEL)
    # A load that never finishes keeps the request waiting in the core (LOAD_WAIT_SECONDS):
    # the registry's own "loading" state, held open because a real load cannot be paused.
    load = asyncio.get_running_loop().create_future()
    entry.move_to(ModelState.LOADING)
    entry.track_load(load)
    run = Run(textgen, OpenAIRequest.completion(model=DEFAULT_MODEL, prompt="hi", stream=True))
    stops = StopButtons()
    with stops.armed("page", "playground") as stop:
        states = []
        async for _ in follow([run], stop):
            states.append(run.state)
            if len(states) == 3:
                assert stops.press("page", "playground")
    assert run.state == "stopped" and states[0] == "waiting"
    load.cancel()


def test_python_m_ui_builds_a_standalone_app() -> None:
    from ui.__main__ import create_app as standalone

    app = standalone(_settings(API_TOKEN="s3cret"))
    with TestClient(app) as client:
        assert client.get("/config").status_code == 401
