"""How the server answers errors: always JSON ``{"error": "..."}``, with the status that fits.

Routers raise :class:`ApiError` for anything a client did wrong, and the
decode gate raises :class:`ServerBusy` when its queue is full;
:func:`install_error_handlers` turns those, FastAPI's own validation and HTTP
errors, and unexpected failures (500, logged) into that one shape.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A client error: answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class ServerBusy(RuntimeError):
    """An :class:`~ferkit.app.serve.limits.AdmissionGate`'s queue is full: the request is refused rather than queued."""


def validation_message(exc: RequestValidationError) -> str:
    """FastAPI's validation errors as one line naming each bad field and where it came from."""
    parts = []
    for err in exc.errors():
        loc = [str(x) for x in err.get("loc", ())]
        where, name = (loc[0], ".".join(loc[1:])) if len(loc) > 1 else ("request", ".".join(loc))
        kind = {"body": "form field", "query": "query parameter", "path": "path parameter", "header": "header"}.get(where, where)
        if err.get("type") == "missing":
            parts.append(f"missing {kind} '{name}'")
        else:
            parts.append(f"{kind} '{name}': {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` as ``{"error": ...}`` JSON."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(ServerBusy)
    async def _busy(request: Request, exc: ServerBusy):
        return JSONResponse({"error": f"server busy: {exc}; try again shortly"}, status_code=503,
                            headers={"Retry-After": "1"})

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _server_error(request: Request, exc: Exception):
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"error": f"internal server error ({type(exc).__name__}); see the server log"}, status_code=500)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        return JSONResponse({"error": validation_message(exc)}, status_code=422)
