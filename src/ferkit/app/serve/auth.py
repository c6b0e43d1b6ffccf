"""The optional API key: where clients may send it, how it is checked, and keeping it out of the logs.

HTTP requests under ``/v1`` send it in the ``X-API-Key`` header. Browsers
cannot set headers on a WebSocket, so ``/v1/live`` also takes it as a
subprotocol ``ferkit.key.<base64url>`` or as a first message
``{"api_key": "..."}``; ``?api_key=`` in a URL works too, and uvicorn's log
lines get its value blanked out (:func:`install_log_redaction`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import logging
import re
from collections.abc import Sequence

from fastapi import Request, Security, WebSocket, WebSocketDisconnect
from fastapi.security import APIKeyHeader

from ferkit.app.serve.errors import ApiError

API_KEY_HEADER = "X-API-Key"
LIVE_SUBPROTOCOL = "ferkit"  # the WebSocket subprotocol /v1/live accepts (browsers need one echoed back)
LIVE_KEY_PROTOCOL = "ferkit.key."  # + the API key in base64url without padding: a key as a subprotocol
LIVE_AUTH_TIMEOUT_S = 10.0  # how long /v1/live waits for a first message carrying the key
LIVE_KEY_HELP = (f"missing or wrong API key: send it in the {API_KEY_HEADER} header, as the WebSocket subprotocol "
                 f"'{LIVE_KEY_PROTOCOL}<the key in base64url>' (beside '{LIVE_SUBPROTOCOL}'), or as the first message "
                 '{"api_key": "..."}')

_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="needed when the server has an API key")


class ApiKey:
    """The server's key (None: no key needed), compared in constant time."""

    def __init__(self, key: str | None):
        self._key = key

    def ok(self, given: str | None) -> bool:
        return self._key is None or (given is not None and hmac.compare_digest(given.encode(), self._key.encode()))


def require_key(request: Request, given: str | None = Security(_key_header)) -> None:
    """Router dependency: the request's ``X-API-Key`` must match the app's key (``app.state.api_key``)."""
    if not request.app.state.api_key.ok(given):
        raise ApiError(401, f"missing or wrong API key: send it in the {API_KEY_HEADER} header")


def key_from_subprotocols(offered: Sequence[str]) -> str | None:
    """The API key of a ``ferkit.key.<base64url>`` subprotocol, or None."""
    for p in offered:
        if p.startswith(LIVE_KEY_PROTOCOL):
            b64 = p[len(LIVE_KEY_PROTOCOL):]
            with contextlib.suppress(ValueError):  # binascii.Error and UnicodeDecodeError are ValueErrors
                return base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)).decode("utf-8")
    return None


async def key_from_first_message(ws: WebSocket) -> str | None:
    """The key of a first text message ``{"api_key": "..."}``; None when the first message is anything else."""
    try:
        msg = await asyncio.wait_for(ws.receive(), LIVE_AUTH_TIMEOUT_S)
    except asyncio.TimeoutError:
        raise ApiError(401, f"no API key within {LIVE_AUTH_TIMEOUT_S:g} s; {LIVE_KEY_HELP}") from None
    if msg["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(msg.get("code", 1000))
    try:
        key = json.loads(msg.get("text") or "null").get("api_key")
    except (ValueError, AttributeError):
        return None
    return key if isinstance(key, str) else None


class RedactApiKeys(logging.Filter):
    """Blank out the value of ``api_key=`` in log records: uvicorn logs each request's URL with its query.

    The arguments are redacted one by one (uvicorn's access formatter unpacks
    them), and the message template too; nothing is dropped.
    """

    PATTERN = re.compile(r"(api(?:_|%5f)key=)[^&\s\"']*", re.IGNORECASE)  # also the percent-encoded name

    def redact(self, text: str) -> str:
        return self.PATTERN.sub(r"\1***", text)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = self.redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(self.redact(a) if isinstance(a, str) else a for a in record.args)
        return True


def install_log_redaction() -> None:
    """Add :class:`RedactApiKeys` to uvicorn's access log and to its error log (which logs WebSocket URLs)."""
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactApiKeys) for f in logger.filters):
            logger.addFilter(RedactApiKeys())  # uvicorn's logging config later keeps a logger's filters
