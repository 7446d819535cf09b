"""`python -m ui`: the UI alone (no /v1 routes), for working on it; `textgen serve` runs both."""

from __future__ import annotations

import argparse
import logging

import gradio as gr
import uvicorn
from fastapi import FastAPI

from api.app import lifespan
from textgen import Settings, TextGen

from . import build_ui


def create_app(settings: Settings) -> FastAPI:
    """A bare FastAPI app whose lifespan owns the TextGen, with the UI at /."""
    textgen = TextGen(settings)
    app = FastAPI(lifespan=lifespan(textgen))
    tokens = settings.api_tokens()
    auth = [("lab", token) for token in tokens] or None
    # Snippets point at the API of `textgen serve`, which this process does not serve.
    api_base = f"http://127.0.0.1:{settings.API_PORT}/v1"
    return gr.mount_gradio_app(app, build_ui(textgen, api_base=api_base), path="/", auth=auth)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m ui", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    args = parser.parse_args()
    settings = Settings()
    logging.basicConfig(level=settings.LOG_LEVEL.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(settings), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
