"""The gateway's own exceptions, and what each becomes for the client.

Foreign exceptions are converted once, where they enter (the upstream client, the database,
the path parser), so the rest of the code and the error middleware deal only with these:

    GatewayError                  base; carries the HTTP status and a short public reason
    ├── BadRequest                400: a path or header the gateway refuses to interpret
    ├── Forbidden                 403: a request the gateway will not pass on for the
    │                             patron (a WebSocket another site opened)
    ├── NotFound                  404: no route for the path
    ├── MethodNotAllowed          405: a gateway page asked with a method it does not take
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
the error pages cannot reflect attacker input or leak internals. The reason is English, for
API clients' JSON; a browser's page says `page` in the patron's language (its texts are
`<page>.title` and `<page>.text` in auth/locales, `gateway.error_pages`).
"""

from __future__ import annotations

from collections.abc import Iterable

from auth.store.availability import RETRY_AFTER


class GatewayError(Exception):
    status = 500
    title = "Something went wrong"
    page = "gateway_error.internal"
    retry_after: int | None = None  # seconds, for a Retry-After header

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason or self.title)
        self.reason = reason or self.title


class BadRequest(GatewayError):
    status = 400
    title = "Bad request"
    page = "gateway_error.bad_request"


class Forbidden(GatewayError):
    status = 403
    title = "Forbidden"
    page = "gateway_error.forbidden"


class NotFound(GatewayError):
    status = 404
    title = "Not found"
    page = "gateway_error.not_found"


class MethodNotAllowed(GatewayError):
    status = 405
    title = "Method not allowed"
    page = "gateway_error.method_not_allowed"

    def __init__(self, allowed: Iterable[str], reason: str = "") -> None:
        super().__init__(reason)
        self.allow = ",".join(sorted(allowed))  # the Allow header (RFC 9110 15.5.6)


class PayloadTooLarge(GatewayError):
    status = 413
    title = "Request too large"
    page = "gateway_error.too_large"


class ExpectationFailed(GatewayError):
    status = 417
    title = "Expectation failed"
    page = "gateway_error.expectation_failed"


class ServiceBusy(GatewayError):
    status = 503
    title = "Busy, please try again in a moment"
    page = "gateway_error.busy"
    retry_after = RETRY_AFTER


class ServiceUnavailable(GatewayError):
    status = 503
    title = "The library's login service is unavailable"
    page = "gateway_error.accounts_unavailable"
    retry_after = RETRY_AFTER


class UpstreamError(GatewayError):
    def __init__(self, route: str, reason: str = "") -> None:
        super().__init__(reason)
        self.route = route


class UpstreamUnavailable(UpstreamError):
    status = 502
    title = "The service is not available right now"
    page = "gateway_error.upstream_unavailable"


class UpstreamTimeout(UpstreamError):
    status = 504
    title = "The service took too long to answer"
    page = "gateway_error.upstream_timeout"
