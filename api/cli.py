"""The `textgen` command: `textgen serve` starts the lab, `textgen models` lists the catalog.

`serve` takes one flag per Settings field (`--api-port`, `--model`, `--redis-url`, ...), so
the command line and the environment always name the same things.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

from textgen import Settings, TextGen

_ALIASES = {"API_HOST": ["--host"], "API_PORT": ["--port"]}


def flags(name: str) -> list[str]:
    """The command-line flags of a Settings field: `--api-port` (and `--port`) for API_PORT."""
    return ["--" + name.lower().replace("_", "-"), *_ALIASES.get(name, [])]


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    for name, field in Settings.model_fields.items():
        parser.add_argument(*flags(name), dest=name, default=None,
                            # argparse formats help with %: a description's own % is text.
                            help=f"{field.description} (env {name})".replace("%", "%%"))


def _settings(args: argparse.Namespace) -> Settings:
    given: dict[str, Any] = {
        name: getattr(args, name) for name in Settings.model_fields
        if getattr(args, name, None) is not None
    }
    # Flags win over the environment; pydantic-settings reads the rest from os.environ.
    return Settings(**given)


def serve(settings: Settings) -> None:
    import uvicorn

    from .app import create_app
    from .draining import DrainingServer

    app = create_app(settings)
    # Without a bound, uvicorn waits for every open stream (a browser tab's event stream, a
    # long completion) before the lifespan stops the engines; a SIGKILL then leaves vLLM's
    # engine-core process behind, holding its memory and a CPU.
    config = uvicorn.Config(app, host=settings.API_HOST, port=settings.API_PORT,
                            log_level=settings.LOG_LEVEL.lower(), access_log=False,
                            timeout_graceful_shutdown=settings.SHUTDOWN_GRACE_SECONDS)
    DrainingServer(config, app.state.textgen).run()


def list_models(settings: Settings) -> None:
    textgen = TextGen(settings)
    if textgen.backends.backends:
        asyncio.run(_discover(textgen))  # remote models join the list, down backends say why
    rows = [(m.id, m.status, m.size_class, "instruct" if m.instruct else "base",
             str(m.rate_limit), m.reason or "") for m in textgen.list_models()]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[5])
    for backend in textgen.backends.health()["backends"]:
        error = f"  {backend['error']}" if backend["error"] else ""
        print(f"remote backend {backend['url']}: {backend['status']}{error}")


async def _discover(textgen: TextGen) -> None:
    try:
        await textgen.backends.discover()
    finally:
        await textgen.backends.close()


def prepare(settings: Settings, model: str) -> None:
    from textgen import embedded

    print(embedded.prepare(model, settings.MODEL_CACHE_DIR))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="textgen", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_settings_flags(sub.add_parser("serve", help="run the API and the UI"))
    _add_settings_flags(sub.add_parser("models", help="list the models and their status"))
    prep = sub.add_parser("prepare", help="convert an embedded model once, ahead of time")
    _add_settings_flags(prep)
    args = parser.parse_args(argv)
    settings = _settings(args)
    logging.basicConfig(level=settings.LOG_LEVEL.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "serve":
        serve(settings)
    elif args.command == "models":
        list_models(settings)
    else:
        prepare(settings, settings.MODEL)


if __name__ == "__main__":
    main()
