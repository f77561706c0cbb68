"""The settings that are URLs with a password in them (`GATEWAY_DATABASE_URL`,
`GATEWAY_DATABASE_LISTEN_URL`, `GATEWAY_SMTP_URL`), read before anything uses them.

A password often holds a character a URL gives a meaning to (`/`, `?`, `#`, `@`). Left
unencoded, the URL splits inside the password: asyncpg then fails on a "port" or "query field"
made of its pieces and quotes them in its exception, and `urlsplit` quotes a port it cannot
read, so a traceback would carry the password into the log collector; or the URL reads
as another host, and mail goes there. So each such URL is checked here, once, when the
settings are read, and a problem is described without quoting any part of the value: the
caller (`Settings.from_env`) names the variable and hides the value.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, unquote, urlsplit

_ENCODE = "percent-encode / ? # @ in the user name and password as %2F %3F %23 %40"
_IPV6_HOST = re.compile(r"\[[^\]]+\](?::[0-9]*)?")


def postgres_url_problem(value: str) -> str | None:
    """Why `value` is not a `postgresql://` URL that asyncpg reads as its operator meant it,
    or None: what asyncpg would refuse, or read otherwise than meant (a password split into
    a host, a port or a query); nothing here quotes the value."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return "not a URL; " + _ENCODE
    if parts.scheme not in ("postgresql", "postgres"):
        return "must start with postgresql://"
    if "#" in value or value.count("@") > 1 or "@" in parts.path:
        return "not a URL it can read as one; " + _ENCODE
    # asyncpg's reading: the user part ends at the first @, then comma-separated hosts,
    # each a Unix socket path, [IPv6] or a name, with an optional numeric port.
    _, _, hosts = parts.netloc.partition("@") if "@" in parts.netloc else ("", "", parts.netloc)
    for spec in hosts.split(",") if hosts else ():
        if spec.startswith("/"):
            continue
        if spec.startswith("["):
            if _IPV6_HOST.fullmatch(spec) is None:
                return "a host in it cannot be read; " + _ENCODE
            continue
        port = unquote(spec.partition(":")[2])
        if port and not port.isdigit():
            return "a port in it is not a number; " + _ENCODE
    if parts.query:
        try:
            parse_qs(parts.query, strict_parsing=True)
        except ValueError:
            return "its query (after ?) cannot be read; " + _ENCODE
    return None


def smtp_url_problem(value: str) -> str | None:
    """Why `value` is not an `smtp://host:port` or `smtps://user:pass@host:port` URL that
    reads as its operator meant it, or None; nothing here quotes the value."""
    shape = "must look like smtp://host:port or smtps://user:pass@host:port"
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises on a port that is not a number (and quotes it)
    except ValueError:
        return f"{shape}; " + _ENCODE
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        return shape
    if "#" in value or "?" in value or value.count("@") > 1 or parts.path not in ("", "/"):
        return f"{shape}; " + _ENCODE
    return None
