"""GET /health (liveness, the seed's body) and GET /ready (readiness); open without a token."""

from __future__ import annotations

import time

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ..deps import TextGenDep
from ..protocol import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, summary="Service health (liveness)",
            responses={503: {"model": Health, "description": "an in-process engine died"}})
async def health(textgen: TextGenDep) -> JSONResponse:
    """`ok`, `degraded` while a dependency (Redis, a remote backend) is down, or `error` (503)
    when an in-process engine died: a restart, or a reload of the model, brings it back."""
    await textgen.probe_dependencies()
    components = textgen.health()
    states = {c.get("status") for c in components.values() if isinstance(c, dict)}
    status = "error" if "error" in states else "degraded" if states - {None, "ok", "off"} else "ok"
    body = Health(status=status, timestamp=time.time(), components=components)
    return JSONResponse(body.model_dump(), status_code=503 if status == "error" else 200)


@router.get("/ready", response_model=Readiness, summary="Ready for traffic (readiness)",
            responses={503: {"model": Readiness, "description": "not ready, with the reasons"}})
async def ready(textgen: TextGenDep) -> JSONResponse:
    """200 once the default model is loaded and the remote backends have answered; 503 with
    the reasons before that, while draining, or when the default model's engine died."""
    reasons = textgen.readiness()
    body = Readiness(status="not_ready" if reasons else "ready", reasons=reasons)
    return JSONResponse(body.model_dump(), status_code=503 if reasons else 200,
                        headers={"Retry-After": "5"} if reasons else None)
