"""The gateway's own exceptions, and what each becomes for the client.

Foreign exceptions are converted once, where they enter (the upstream client, the database,
the path parser), so the rest of the code and the error middleware deal only with these:

    GatewayError                  base; carries the HTTP status and a short public reason
    ├── BadRequest                400: a path or header the gateway refuses to interpret
    ├── NotFound                  404: no route for the path
    ├── PayloadTooLarge           413: body over the route's or the form's limit
    ├── ExpectationFailed         417: an Expect header other than 100-continue
    ├── ServiceBusy               503: a bounded resource (password hashing) is saturated
    ├── ServiceUnavailable        503: the account database is away: asyncpg's connection
    │                             errors and timeouts, `auth.store.availability`'s
    │                             `DatabaseUnavailable` (converted in `gateway.exchange`)
    └── UpstreamError             base for failures of a backend
        ├── UpstreamUnavailable   502: refused, reset or unreachable
        └── UpstreamTimeout       504: did not start answering within the route's timeout

Nothing in a GatewayError's public reason comes from the request or a backend verbatim, so
the error pages cannot reflect attacker input or leak internals.
"""

from __future__ import annotations

from auth.store.availability import RETRY_AFTER


class GatewayError(Exception):
    status = 500
    title = "Something went wrong"
    retry_after: int | None = None  # seconds, for a Retry-After header

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason or self.title)
        self.reason = reason or self.title


class BadRequest(GatewayError):
    status = 400
    title = "Bad request"


class NotFound(GatewayError):
    status = 404
    title = "Not found"


class PayloadTooLarge(GatewayError):
    status = 413
    title = "Request too large"


class ExpectationFailed(GatewayError):
    status = 417
    title = "Expectation failed"


class ServiceBusy(GatewayError):
    status = 503
    title = "Busy, please try again in a moment"
    retry_after = RETRY_AFTER


class ServiceUnavailable(GatewayError):
    status = 503
    title = "The library's login service is unavailable"
    retry_after = RETRY_AFTER


class UpstreamError(GatewayError):
    def __init__(self, route: str, reason: str = "") -> None:
        super().__init__(reason)
        self.route = route


class UpstreamUnavailable(UpstreamError):
    status = 502
    title = "The service is not available right now"


class UpstreamTimeout(UpstreamError):
    status = 504
    title = "The service took too long to answer"
