"""The log handler writes one event-loop turn's lines together, and never holds one back.

The access log is a line a request; written one by one, a busy worker makes a system call per
request for it. `BatchingStreamHandler` writes what one turn of the loop logged in one go, as
soon as the loop gets to it, in order, and writes at once where there is no loop to wait for.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from gateway.exchange import Target, open_exchange
from gateway.ops.logs import AccessLogger, BatchingStreamHandler, JsonFormatter


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def logger_into(stream: CountingStream) -> logging.Logger:
    handler = BatchingStreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(f"test-batching-{id(stream)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


async def test_one_turns_lines_are_one_write_in_order_once_the_loop_moves_on() -> None:
    stream = CountingStream()
    log = logger_into(stream)
    for number in range(50):
        log.info("line %d", number)
    assert stream.getvalue() == ""  # still this turn
    await asyncio.sleep(0)  # the loop's next turn
    assert stream.getvalue().splitlines() == [f"line {n}" for n in range(50)]
    assert stream.writes == 1
    log.info("later")
    await asyncio.sleep(0)
    assert stream.getvalue().splitlines()[-1] == "later" and stream.writes == 2


def test_without_a_running_loop_a_line_is_written_at_once() -> None:
    stream = CountingStream()
    logger_into(stream).info("from the command line")
    assert stream.getvalue() == "from the command line\n"


async def test_a_line_from_another_thread_is_written_at_once_after_what_was_pending() -> None:
    stream = CountingStream()
    log = logger_into(stream)
    log.info("first, on the loop")
    thread = threading.Thread(target=log.info, args=("second, from a thread",))
    thread.start()
    thread.join(timeout=5)
    assert stream.getvalue().splitlines() == ["first, on the loop", "second, from a thread"]


def test_a_loop_closed_with_lines_pending_does_not_strand_the_next_loops_lines() -> None:
    stream = CountingStream()
    log = logger_into(stream)

    async def log_and_leave() -> None:
        log.info("in a loop that ends now")

    loop = asyncio.new_event_loop()
    loop.run_until_complete(log_and_leave())  # the flush it scheduled may never run
    loop.close()

    async def log_again() -> None:
        log.info("in the next loop")
        await asyncio.sleep(0)

    asyncio.run(log_again())
    assert stream.getvalue().splitlines() == ["in a loop that ends now", "in the next loop"]


def test_flush_at_exit_writes_what_is_pending() -> None:
    stream = CountingStream()
    log = logger_into(stream)

    async def log_only() -> None:
        log.info("the last words")

    loop = asyncio.new_event_loop()
    loop.run_until_complete(log_only())
    loop.close()
    for handler in log.handlers:
        handler.flush()  # what logging.shutdown() does at exit
    assert stream.getvalue() == "the last words\n"


async def test_the_access_logs_direct_line_is_the_line_the_formatter_makes() -> None:
    """The access log skips the logging machinery when the log is the gateway's own; the
    line must be the same JSON object, field for field and in order, as the formatter would
    make of the record (what operators parse)."""
    stream = CountingStream()
    handler = BatchingStreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    kept, level = root.handlers[:], root.level
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    try:
        request = make_mocked_request("GET", "/shelf/atlas?q=1", headers={"X-Request-Id": "r-1"})
        exchange = open_exchange(request, ())
        exchange.target = Target("/shelf/atlas", "q=1")
        exchange.user_id = "user-7"
        response = web.Response(status=200, body=b"x" * 10)
        direct = AccessLogger(logging.getLogger("gateway.access"), "")
        assert direct._sink is handler  # the direct way is taken
        direct.log(request, response, 5.0)
        through_logging = AccessLogger(logging.getLogger("gateway.access"), "")
        through_logging._sink = None
        through_logging.log(request, response, 5.0)
        await asyncio.sleep(0)
    finally:
        root.handlers[:], root.level = kept, level
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first.pop("time")[-1] == "Z" and second.pop("time")[-1] == "Z"
    # Timed from the exchange's start on the precise clock, not from the 5 s aiohttp passes
    # (its loop clock counts whole milliseconds under uvloop), so the two lines, made one
    # after the other, differ there.
    took = first["duration_ms"], second["duration_ms"]
    assert 0 <= took[0] <= took[1] < 1000
    assert list(first) == list(second)
    del first["duration_ms"], second["duration_ms"]
    assert first == second
    assert first["request_id"] == "r-1" and first["path"] == "/shelf/atlas"
    assert first["user_id"] == "user-7" and first["status"] == 200
