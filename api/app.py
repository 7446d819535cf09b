"""`create_app`: the FastAPI app whose lifespan owns TextGen, with the Gradio UI at /ui."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import RedirectResponse

from textgen import Settings, TextGen

from . import errors, openapi
from .request_ids import RequestIdMiddleware
from .routes import (
    adapters,
    arena,
    completions,
    evaluations,
    health,
    models,
    pooling,
    runs,
    tokenize,
)

log = logging.getLogger(__name__)


def lifespan(textgen: TextGen) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """The one lifespan of an app that serves `textgen` (this API, or `python -m ui`): it
    starts the TextGen and closes it, engines and connections, when the server stops."""

    @asynccontextmanager
    async def owning(_: Any) -> AsyncIterator[None]:
        if not textgen.settings.api_tokens():
            log.warning("no API_TOKEN or TEXT_GEN_API_TOKEN set: the API and UI are open to "
                        "anyone who can reach this port")
        # The default model loads in the background: the UI and /health answer meanwhile,
        # and requests for the model wait for it (LOAD_WAIT_SECONDS).
        await textgen.start(wait=False)
        gc.freeze()  # what start-up imported lives as long as the app: keep GC off it
        try:
            yield
        finally:
            await textgen.close()

    return owning


def create_app(settings: Settings | None = None, *, ui: bool = True,
               textgen: TextGen | None = None) -> FastAPI:
    """Build the API (and the UI when gradio is installed) around one TextGen."""
    settings = textgen.settings if textgen is not None else (settings or Settings())
    textgen = textgen or TextGen(settings)

    app = FastAPI(title="textgen lab", version="0.1.0", lifespan=lifespan(textgen))
    app.state.textgen = textgen
    app.state.settings = settings
    app.state.api_tokens = settings.api_tokens()
    errors.install(app)
    openapi.install(app)
    app.include_router(health.router)
    app.include_router(models.router)
    app.include_router(completions.router)
    app.include_router(pooling.router)
    app.include_router(tokenize.router)
    app.include_router(adapters.router)
    app.include_router(runs.router)
    app.include_router(evaluations.router)
    app.include_router(arena.router)

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/ui/" if app.state.ui_mounted else "/docs")

    app.state.ui_mounted = ui and _mount_ui(app, textgen)
    # Added last, so outermost of the app's own middleware: every response carries the id,
    # the errors of other middleware included (the 500 handler sets it itself: api/errors.py).
    app.add_middleware(RequestIdMiddleware)
    return app


def _mount_ui(app: FastAPI, textgen: TextGen) -> bool:
    try:
        import gradio as gr

        from ui import build_ui
    except ImportError as exc:  # the headless image installs no gradio
        log.info("UI not mounted (%s)", exc)
        return False
    auth = None
    tokens = app.state.api_tokens
    if tokens:
        # The UI takes the same tokens as the API: any user name, the token as password.
        def auth(_user: str, password: str) -> bool:
            from .deps import check_token

            try:
                check_token(f"Bearer {password}", tokens)
            except Exception:
                return False
            return True

    gr.mount_gradio_app(app, build_ui(textgen), path="/ui", auth=auth)
    return True
