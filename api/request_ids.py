"""X-Request-Id on every response: the client's when it is sane, a new one otherwise.

Pure ASGI (not BaseHTTPMiddleware), so a streamed answer passes through unbuffered. The id is
kept in the scope (`scope["state"]["request_id"]`, so `request.state.request_id` too): the
generation routes hand that same id to the engine, which passes it upstream (vLLM's own
request id, a remote server's `X-Request-Id`), and the error handlers read it there.
"""

from __future__ import annotations

import re
import uuid

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"x-request-id"
MAX_LENGTH = 128
# Visible ASCII only: the id goes into response headers, upstream headers, vLLM's request ids
# and logs, where a space, a control character or a long string would be trouble.
_SANE = re.compile(rb"[!-~]{1,%d}" % MAX_LENGTH)


def new_request_id() -> str:
    return uuid.uuid4().hex


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's X-Request-Id if it is sane, else a new one."""
    for name, value in headers:
        if name.lower() == HEADER:
            value = value.strip()
            if _SANE.fullmatch(value):
                return value.decode("ascii")
            break
    return new_request_id()


def request_id(connection: HTTPConnection) -> str:
    """This request's id, as RequestIdMiddleware chose it."""
    state = connection.scope.get("state") or {}
    return state.get("request_id") or new_request_id()  # type: ignore[no-any-return]


class RequestIdMiddleware:
    """Choose each HTTP request's id, keep it in the scope, echo it on the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id_from(scope["headers"])
        # In place: Starlette's outermost ServerErrorMiddleware shares this dict, so its 500
        # handler (api/errors.py) sees the id too.
        scope.setdefault("state", {})["request_id"] = rid
        header = (HEADER, rid.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", ()) if h[0].lower() != HEADER]
                headers.append(header)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)
