"""GET /health: the seed's body, plus component states; open without a token."""

from __future__ import annotations

import time

from fastapi import APIRouter

from ..deps import TextGenDep
from ..protocol import Health

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, summary="Service health")
async def health(textgen: TextGenDep) -> Health:
    await textgen.probe_dependencies()
    components = textgen.health()
    degraded = any(
        isinstance(c, dict) and c.get("status") not in (None, "ok") for c in components.values()
    )
    return Health(status="degraded" if degraded else "ok", timestamp=time.time(),
                  components=components)
