"""Every setting of the gateway, declared once.

Each environment setting is one field of `Settings`, declared with its variable, its default
(as the variable would spell it), its help text and how its value is read. `SETTINGS` lists
them in that order: the CLI builds its `--help` from it, `library-gateway settings` prints it,
and the README's and docs/operations.md's settings tables are checked against it in the tests.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from auth.sessions.cookies import CookieKeyError, parse_keys
from gateway.config.secret_urls import postgres_url_problem, smtp_url_problem


class Secret:
    """A string that does not show itself in `repr()`, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class SettingsError(ValueError):
    """A setting has a value the gateway cannot use; the message names the variable."""


@dataclass(frozen=True)
class Setting:
    """An environment setting as `SETTINGS` lists it; `attr` is its field of `Settings`."""

    attr: str
    env: str
    default: str
    help: str
    parse: Callable[[str], Any] = str
    secret: bool = False


def _seconds(value: str) -> float:
    seconds = float(value)
    if not 0 < seconds < 10 * 365 * 86400:
        raise ValueError("must be a positive number of seconds")
    return seconds


def _public_url(value: str) -> str:
    if not value:
        return ""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("must not carry a query, fragment or credentials")
    if parts.path not in ("", "/"):
        raise ValueError("must not carry a path: the gateway serves from the root of its host")
    return f"{parts.scheme}://{parts.netloc}"


def _networks(value: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    items = [item.strip() for item in value.split(",") if item.strip()]
    return tuple(ipaddress.ip_network(item, strict=False) for item in items)


def _pattern(value: str) -> re.Pattern[str]:
    return re.compile(value)


def _colour(value: str) -> str:
    if not re.fullmatch(r"#[0-9a-fA-F]{3}(?:[0-9a-fA-F]{3})?", value):
        raise ValueError("must be a hex colour like #1f4e79")
    return value


def _logo(value: str) -> str:
    if (
        value
        and not value.startswith("https://")
        and not (value.startswith("/") and not value.startswith("//"))
    ):
        raise ValueError("must be an https:// URL or a path on this host")
    return value


def _secret(value: str) -> Secret:
    return Secret(value)


def _postgres_url(value: str) -> Secret:
    if value and (problem := postgres_url_problem(value)):
        raise ValueError(problem)
    return Secret(value)


def _cookie_keys(value: str) -> Secret:
    """Checked as the settings are read, so every command refuses a key it could not use
    with one line instead of a traceback, and without showing the value."""
    if value.strip():
        try:
            parse_keys(value)
        except CookieKeyError as exc:
            raise ValueError(str(exc)) from None
    return Secret(value)


def _smtp_url(value: str) -> Secret:
    if value and (problem := smtp_url_problem(value)):
        raise ValueError(problem)
    return Secret(value)


def _flag(value: str) -> bool:
    word = value.lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false")


def _grace(value: str) -> float:
    seconds = float(value)
    if not 0 <= seconds <= 86400:
        raise ValueError("must be a number of seconds from 0 to 86400")
    return seconds


POOLERS = ("none", "transaction")
"""What GATEWAY_DATABASE_URL may lead to: PostgreSQL itself (or a pooler that gives each
client a server connection of its own, PgBouncer's session mode), or a transaction pooler."""


def _pooler(value: str) -> str:
    word = value.lower() or "none"
    if word not in POOLERS:
        raise ValueError("must be none or transaction")
    return word


def _positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError("must be a positive whole number")
    return number


# `_setting` returns a `dataclasses.field`, safe as a default; ruff cannot see through it.
# ruff: noqa: RUF009


def _setting(
    env: str,
    default: str,
    help: str,
    parse: Callable[[str], Any] = str,
    *,
    secret: bool = False,
) -> Any:
    """A field of `Settings` read from the variable `env`, with its help text; its default
    is `default` read the way the variable's value would be, once, here."""
    return field(
        default=parse(default),
        metadata={"env": env, "default": default, "help": help, "parse": parse, "secret": secret},
    )


@dataclass(frozen=True)
class Settings:
    """The gateway's configuration after parsing; build it with `Settings.from_env`.

    `Settings()` equals `Settings.from_env({})`, and keyword arguments override single
    values, as in tests."""

    database_url: Secret = _setting(
        "GATEWAY_DATABASE_URL",
        "",
        "postgresql://… of the account database; unset: an embedded PostgreSQL under the data dir",
        _postgres_url,
        secret=True,
    )
    database_listen_url: Secret = _setting(
        "GATEWAY_DATABASE_LISTEN_URL",
        "",
        "postgresql://… straight to the same database, never through a pooler: for the LISTEN "
        "connection and the migrations' lock; unset: GATEWAY_DATABASE_URL",
        _postgres_url,
        secret=True,
    )
    database_pooler: str = _setting(
        "GATEWAY_DATABASE_POOLER",
        "none",
        "transaction: GATEWAY_DATABASE_URL leads to a pooler in transaction mode (PgBouncer "
        "pool_mode = transaction), so no statement is kept prepared; needs "
        "GATEWAY_DATABASE_LISTEN_URL. none: it leads to PostgreSQL, or a session pooler",
        _pooler,
    )
    public_url: str = _setting(
        "GATEWAY_PUBLIC_URL",
        "",
        "the URL patrons see, used for every link and redirect; unset: http://HOST:PORT",
        _public_url,
    )
    cookie_keys: Secret = _setting(
        "GATEWAY_COOKIE_KEYS",
        "",
        "comma-separated Fernet keys; the first encrypts, all decrypt; unset: a key kept in "
        "the data dir",
        _cookie_keys,
        secret=True,
    )
    smtp_url: Secret = _setting(
        "GATEWAY_SMTP_URL",
        "",
        "smtp://host:port or smtps://user:pass@host:port; unset: mail goes to DATA_DIR/outbox/",
        _smtp_url,
        secret=True,
    )
    mail_from: str = _setting(
        "GATEWAY_MAIL_FROM",
        "",
        "sender address; unset: no-reply@ + public host",
    )
    pass_number_pattern: re.Pattern[str] = _setting(
        "GATEWAY_PASS_NUMBER_PATTERN",
        "^[0-9]+$",
        "a username matching this (after NFKC) must be the account's own pass number",
        _pattern,
    )
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = _setting(
        "GATEWAY_TRUSTED_PROXIES",
        "",
        "comma-separated addresses or CIDR ranges of proxies whose X-Forwarded-For is read",
        _networks,
    )
    session_idle_timeout: float = _setting(
        "GATEWAY_SESSION_IDLE_TIMEOUT",
        "1800",
        "seconds without a request after which a session ends",
        _seconds,
    )
    session_lifetime: float = _setting(
        "GATEWAY_SESSION_LIFETIME",
        "43200",
        "seconds after login after which a session ends, active or not",
        _seconds,
    )
    reset_token_ttl: float = _setting(
        "GATEWAY_RESET_TOKEN_TTL",
        "1800",
        "seconds a password-reset link stays valid",
        _seconds,
    )
    activation_token_ttl: float = _setting(
        "GATEWAY_ACTIVATION_TOKEN_TTL",
        "604800",
        "seconds an activation link for a new member stays valid",
        _seconds,
    )
    backchannel_give_up_after: float = _setting(
        "GATEWAY_BACKCHANNEL_GIVE_UP_AFTER",
        "86400",
        "seconds a connected library's back-channel logout is retried before it is dropped",
        _seconds,
    )
    personal_data_url: str = _setting(
        "GATEWAY_PERSONAL_DATA_URL",
        "",
        "where patrons edit their e-mail address and other personal data (linked from the "
        "account page)",
    )
    signin_notices: bool = _setting(
        "GATEWAY_SIGNIN_NOTICES",
        "false",
        "true: mail the patron when a browser that never logged in to their account before "
        "does (browser, system and time; never where from)",
        _flag,
    )
    staff_console: bool = _setting(
        "GATEWAY_STAFF_CONSOLE",
        "on",
        "on: the staff console (helpdesk and admins) is served under /staff/; off: every "
        "/staff/ URL is 404",
        _flag,
    )
    staff_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = _setting(
        "GATEWAY_STAFF_NETWORKS",
        "",
        "comma-separated CIDR ranges the staff console may be reached from (the client address "
        "as the gateway trusts it); anywhere else every /staff/ URL is 404; unset: no limit",
        _networks,
    )
    staff_idle_timeout: float = _setting(
        "GATEWAY_STAFF_IDLE_TIMEOUT",
        "900",
        "seconds without a request after which a staff session ends",
        _seconds,
    )
    staff_session_lifetime: float = _setting(
        "GATEWAY_STAFF_SESSION_LIFETIME",
        "28800",
        "seconds after sign-in after which a staff session ends, active or not",
        _seconds,
    )
    theme_name: str = _setting(
        "GATEWAY_THEME_NAME",
        "",
        "the library's name on the login pages; unset: De Bibliotheek / The Library",
    )
    theme_colour: str = _setting(
        "GATEWAY_THEME_COLOUR",
        "#1f4e79",
        "the house colour of the login pages (hex)",
        _colour,
    )
    theme_text_colour: str = _setting(
        "GATEWAY_THEME_TEXT_COLOUR",
        "#ffffff",
        "text colour on the house colour (hex)",
        _colour,
    )
    theme_logo_url: str = _setting(
        "GATEWAY_THEME_LOGO_URL",
        "",
        "logo on the login pages: an https:// URL or a path on this host",
        _logo,
    )
    idle_timeout: float = _setting(
        "GATEWAY_IDLE_TIMEOUT",
        "15",
        "seconds a client connection may sit idle, or take to send a request's headers, "
        "before it is closed (slowloris defence)",
        _seconds,
    )
    shutdown_grace: float = _setting(
        "GATEWAY_SHUTDOWN_GRACE",
        "20",
        "seconds in-flight requests get to finish after SIGTERM",
        _seconds,
    )
    database_timeout: float = _setting(
        "GATEWAY_DATABASE_TIMEOUT",
        "3",
        "seconds a request waits for the database at each step (connecting, a free "
        "connection, a statement) before it is answered 503",
        _seconds,
    )
    database_grace: float = _setting(
        "GATEWAY_DATABASE_GRACE",
        "300",
        "seconds a session confirmed live keeps being served while the database cannot be "
        "asked; 0: none",
        _grace,
    )
    session_cache_size: int = _setting(
        "GATEWAY_SESSION_CACHE_SIZE",
        "100000",
        "sessions a worker keeps decoded, confirmed and signed for in memory (about 3.4 KiB"
        " each); more patrons active at once than this cost a decryption and a database read"
        " per request",
        _positive_int,
    )
    argon2_workers: int = _setting(
        "GATEWAY_ARGON2_WORKERS",
        "2",
        "threads that hash passwords; logins beyond the queue get a fast 503",
        _positive_int,
    )
    argon2_memory_kib: int = _setting(
        "GATEWAY_ARGON2_MEMORY_KIB",
        "19456",
        "argon2id memory per hash in KiB (OWASP: 19456); raising it re-hashes at login",
        _positive_int,
    )
    argon2_time_cost: int = _setting(
        "GATEWAY_ARGON2_TIME_COST",
        "2",
        "argon2id passes (OWASP: 2); raising it re-hashes at login",
        _positive_int,
    )
    admin_host: str = _setting(
        "GATEWAY_ADMIN_HOST",
        "127.0.0.1",
        "address of the admin listener (metrics, probes); loopback unless a scraper "
        "elsewhere must reach it, e.g. 0.0.0.0 in a pod",
    )
    log_level: str = _setting("GATEWAY_LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING or ERROR")
    # Command-line only (not environment): where the process listens and keeps its data.
    host: str = "127.0.0.1"
    port: int = 8080
    admin_port: int = 9090
    workers: int = 1
    data_dir: Path = Path("var")

    def __post_init__(self) -> None:
        if not self.public_url:
            host = self.host if ":" not in self.host else f"[{self.host}]"
            object.__setattr__(self, "public_url", f"http://{host}:{self.port}")
        if problem := _database_problem(self):
            raise SettingsError(problem)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """The settings `env` (default: the process's environment) gives; an override that
        is not None (a command-line option) wins over both the variable and the default."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for setting in SETTINGS:
            if setting.env not in env:
                continue
            raw = env[setting.env].strip()
            try:
                values[setting.attr] = setting.parse(raw)
            except (ValueError, re.error) as exc:
                shown = "(hidden)" if setting.secret else repr(raw)
                raise SettingsError(f"{setting.env}={shown}: {exc}") from None
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)

    @property
    def https(self) -> bool:
        return self.public_url.startswith("https://")

    @property
    def public_proto(self) -> str:
        return "https" if self.https else "http"

    @property
    def public_host(self) -> str:
        return urlsplit(self.public_url).netloc

    @property
    def sender(self) -> str:
        if self.mail_from:
            return self.mail_from
        return f"no-reply@{urlsplit(self.public_url).hostname}"


def _database_problem(settings: Settings) -> str | None:
    """Why the database settings cannot work together, if they cannot. A transaction pooler
    hands each transaction to whichever server connection is free, so what lives in a
    session (LISTEN, the migrations' session-level lock) needs a direct connection, or
    revocations would silently stop reaching this instance."""
    direct = settings.database_listen_url.reveal()
    if direct and not settings.database_url:
        return (
            "GATEWAY_DATABASE_LISTEN_URL is set without GATEWAY_DATABASE_URL: it must lead to "
            "the same database as GATEWAY_DATABASE_URL; set both, or neither for the "
            "embedded PostgreSQL"
        )
    if settings.database_pooler != "transaction":
        return None
    if not direct:
        return (
            "GATEWAY_DATABASE_POOLER=transaction needs GATEWAY_DATABASE_LISTEN_URL: LISTEN/NOTIFY"
            " and the migrations' lock cannot pass a transaction pooler; set it to a postgresql://"
            " URL that reaches PostgreSQL itself (docs/operations.md, Running behind PgBouncer)"
        )
    if direct == settings.database_url.reveal():
        return (
            "GATEWAY_DATABASE_LISTEN_URL is GATEWAY_DATABASE_URL, which GATEWAY_DATABASE_POOLER="
            "transaction says leads to a transaction pooler: it must reach PostgreSQL itself"
        )
    return None


SETTINGS: tuple[Setting, ...] = tuple(
    Setting(attr=item.name, **item.metadata) for item in fields(Settings) if item.metadata
)
