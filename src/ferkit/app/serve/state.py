"""The state routers share, as FastAPI dependencies: :func:`~ferkit.app.serve.app.create_app` builds it once and keeps
it on ``app.state``; a route asks for what it needs by type (``hub: Hub``), for HTTP requests and WebSockets alike.
(The getters are ``async`` only so that FastAPI calls them on the event loop instead of sending them to a thread.)

``app.state`` holds ``hub`` (:class:`ModelHub`), ``jobs`` (:class:`VideoJobs`), ``gate`` (the decode
:class:`AdmissionGate`), ``upload_limits`` (:class:`Limits`), ``api_key`` (:class:`ApiKey`), ``work_dir`` (the
server's upload folder) and ``limits`` (every limit as a dict, for display).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from ferkit.app.serve.auth import ApiKey
from ferkit.app.serve.hub import ModelHub
from ferkit.app.serve.jobs import VideoJobs
from ferkit.app.serve.limits import AdmissionGate, Limits


async def _hub(conn: HTTPConnection) -> ModelHub:
    return conn.app.state.hub


async def _jobs(conn: HTTPConnection) -> VideoJobs:
    return conn.app.state.jobs


async def _gate(conn: HTTPConnection) -> AdmissionGate:
    return conn.app.state.gate


async def _limits(conn: HTTPConnection) -> Limits:
    return conn.app.state.upload_limits


async def _api_key(conn: HTTPConnection) -> ApiKey:
    return conn.app.state.api_key


Hub = Annotated[ModelHub, Depends(_hub)]
Jobs = Annotated[VideoJobs, Depends(_jobs)]
Gate = Annotated[AdmissionGate, Depends(_gate)]
UploadLimits = Annotated[Limits, Depends(_limits)]
Key = Annotated[ApiKey, Depends(_api_key)]


def server_version() -> str:
    """ferkit's installed version ("0" when running from a checkout that is not installed)."""
    try:
        from importlib.metadata import version

        return version("ferkit")
    except Exception:  # noqa: BLE001 - not installed (running from a checkout)
        return "0"
