"""The outcome of a LoRA adapter loaded or unloaded on every replica of a remote model: vLLM's
own routes answer each replica apart (textgen.backends sends them), and the lab says what they
answered together."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence

from .engines.remote import RemoteServer
from .errors import BackendUnavailable, RequestRejected


def check_every_replica_agreed(model_id: str, action: str, name: str,
                               servers: Sequence[RemoteServer],
                               answers: Sequence[tuple[int, str]]) -> None:
    """Return when every replica said yes. A refusal they all gave with one 4xx status is
    passed on with that status and vLLM's words; a split outcome (or a 5xx, or a replica that
    cannot be reached) is a 502 that says what each replica answered."""
    failed = [(status, text) for status, text in answers if status != 200]
    if not failed:
        return
    statuses = {status for status, _ in failed}
    if len(failed) == len(servers) and len(statuses) == 1 and 400 <= failed[0][0] < 500:
        raise RequestRejected(message(failed[0][1]), status=failed[0][0], param="lora_name")
    report = "; ".join(f"{server.url}: {status or 'unreachable'} {message(text)}"
                       for server, (status, text) in zip(servers, answers, strict=True))
    raise BackendUnavailable(f"Not every replica of '{model_id}' could {action} the adapter "
                             f"'{name}': {report}")


def message(text: str) -> str:
    """An upstream's answer in a line: its error envelope's message, or the text itself."""
    with contextlib.suppress(ValueError, KeyError, TypeError):
        return str(json.loads(text)["error"]["message"])
    with contextlib.suppress(ValueError, KeyError, TypeError):
        return str(json.loads(text)["message"])  # an ErrorResponse without the envelope
    return text.strip()[:300]
