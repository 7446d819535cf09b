"""The lab's API as `textgen serve` runs it, its remote servers reached through a chosen HTTP
client (`benchmarks/http_clients.py`): what `gateway_overhead.py` compares. Not a product part.

    python benchmarks/gateway_server.py --client aiohttp --port 9200   # settings from the env
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import uvicorn  # noqa: E402
from http_clients import CLIENTS, factory  # noqa: E402

from api.app import create_app  # noqa: E402
from textgen import Settings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client", choices=CLIENTS, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    settings = Settings(API_PORT=args.port)
    app = create_app(settings)
    make = factory(args.client)
    app.state.textgen.backends.transport_factory = lambda: make(
        max_connections=settings.REMOTE_MAX_CONNECTIONS)
    config = uvicorn.Config(app, host=settings.API_HOST, port=args.port,
                            log_level=settings.LOG_LEVEL.lower(), access_log=False)
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
