"""Every setting of the gateway, declared once.

The table below is the single source for the environment variables, their defaults and their
help text: the CLI builds its `--help` from it, `library-gateway settings` prints it, and the
README's settings table is checked against it in the tests.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


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


def _positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError("must be a positive whole number")
    return number


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "database_url",
        "GATEWAY_DATABASE_URL",
        "",
        "postgresql://… of the account database; unset: an embedded PostgreSQL under the data dir",
        _secret,
        secret=True,
    ),
    Setting(
        "public_url",
        "GATEWAY_PUBLIC_URL",
        "",
        "the URL patrons see, used for every link and redirect; unset: http://HOST:PORT",
        _public_url,
    ),
    Setting(
        "cookie_keys",
        "GATEWAY_COOKIE_KEYS",
        "",
        "comma-separated Fernet keys; the first encrypts, all decrypt; unset: a key kept in "
        "the data dir",
        _secret,
        secret=True,
    ),
    Setting(
        "smtp_url",
        "GATEWAY_SMTP_URL",
        "",
        "smtp://host:port or smtps://user:pass@host:port; unset: mail goes to DATA_DIR/outbox/",
        _secret,
        secret=True,
    ),
    Setting("mail_from", "GATEWAY_MAIL_FROM", "", "sender address; unset: no-reply@ + public host"),
    Setting(
        "pass_number_pattern",
        "GATEWAY_PASS_NUMBER_PATTERN",
        "^[0-9]+$",
        "a username matching this (after NFKC) must be the account's own pass number",
        _pattern,
    ),
    Setting(
        "trusted_proxies",
        "GATEWAY_TRUSTED_PROXIES",
        "",
        "comma-separated addresses or CIDR ranges of proxies whose X-Forwarded-For is read",
        _networks,
    ),
    Setting(
        "session_idle_timeout",
        "GATEWAY_SESSION_IDLE_TIMEOUT",
        "1800",
        "seconds without a request after which a session ends",
        _seconds,
    ),
    Setting(
        "session_lifetime",
        "GATEWAY_SESSION_LIFETIME",
        "43200",
        "seconds after login after which a session ends, active or not",
        _seconds,
    ),
    Setting(
        "reset_token_ttl",
        "GATEWAY_RESET_TOKEN_TTL",
        "1800",
        "seconds a password-reset link stays valid",
        _seconds,
    ),
    Setting(
        "activation_token_ttl",
        "GATEWAY_ACTIVATION_TOKEN_TTL",
        "604800",
        "seconds an activation link for a new member stays valid",
        _seconds,
    ),
    Setting(
        "personal_data_url",
        "GATEWAY_PERSONAL_DATA_URL",
        "",
        "where patrons edit their e-mail address and other personal data (linked from the "
        "account page)",
    ),
    Setting(
        "theme_name",
        "GATEWAY_THEME_NAME",
        "",
        "the library's name on the login pages; unset: De Bibliotheek / The Library",
    ),
    Setting(
        "theme_colour",
        "GATEWAY_THEME_COLOUR",
        "#1f4e79",
        "the house colour of the login pages (hex)",
        _colour,
    ),
    Setting(
        "theme_text_colour",
        "GATEWAY_THEME_TEXT_COLOUR",
        "#ffffff",
        "text colour on the house colour (hex)",
        _colour,
    ),
    Setting(
        "theme_logo_url",
        "GATEWAY_THEME_LOGO_URL",
        "",
        "logo on the login pages: an https:// URL or a path on this host",
        _logo,
    ),
    Setting(
        "idle_timeout",
        "GATEWAY_IDLE_TIMEOUT",
        "15",
        "seconds a client connection may sit idle, or take to send a request's headers, "
        "before it is closed (slowloris defence)",
        _seconds,
    ),
    Setting(
        "shutdown_grace",
        "GATEWAY_SHUTDOWN_GRACE",
        "20",
        "seconds in-flight requests get to finish after SIGTERM",
        _seconds,
    ),
    Setting(
        "argon2_workers",
        "GATEWAY_ARGON2_WORKERS",
        "2",
        "threads that hash passwords; logins beyond the queue get a fast 503",
        _positive_int,
    ),
    Setting(
        "argon2_memory_kib",
        "GATEWAY_ARGON2_MEMORY_KIB",
        "19456",
        "argon2id memory per hash in KiB (OWASP: 19456); raising it re-hashes at login",
        _positive_int,
    ),
    Setting(
        "argon2_time_cost",
        "GATEWAY_ARGON2_TIME_COST",
        "2",
        "argon2id passes (OWASP: 2); raising it re-hashes at login",
        _positive_int,
    ),
    Setting(
        "admin_host",
        "GATEWAY_ADMIN_HOST",
        "127.0.0.1",
        "address of the admin listener (metrics, probes); loopback unless a scraper "
        "elsewhere must reach it, e.g. 0.0.0.0 in a pod",
    ),
    Setting("log_level", "GATEWAY_LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING or ERROR"),
)

_BY_ATTR = {setting.attr: setting for setting in SETTINGS}
_NO_SECRET = Secret("")


@dataclass(frozen=True)
class Settings:
    """The gateway's configuration after parsing; build it with `Settings.from_env`."""

    database_url: Secret = _NO_SECRET
    public_url: str = ""
    cookie_keys: Secret = _NO_SECRET
    smtp_url: Secret = _NO_SECRET
    mail_from: str = ""
    pass_number_pattern: re.Pattern[str] = re.compile("^[0-9]+$")
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    session_idle_timeout: float = 1800.0
    session_lifetime: float = 43200.0
    reset_token_ttl: float = 1800.0
    activation_token_ttl: float = 604800.0
    personal_data_url: str = ""
    theme_name: str = ""
    theme_colour: str = "#1f4e79"
    theme_text_colour: str = "#ffffff"
    theme_logo_url: str = ""
    idle_timeout: float = 15.0
    shutdown_grace: float = 20.0
    argon2_workers: int = 2
    argon2_memory_kib: int = 19456
    argon2_time_cost: int = 2
    admin_host: str = "127.0.0.1"
    log_level: str = "INFO"
    # Command-line only (not environment): where the process listens and keeps its data.
    host: str = "127.0.0.1"
    port: int = 8080
    admin_port: int = 9090
    workers: int = 1
    data_dir: Path = field(default_factory=lambda: Path("var"))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for setting in SETTINGS:
            raw = env.get(setting.env, setting.default).strip()
            try:
                values[setting.attr] = setting.parse(raw)
            except (ValueError, re.error) as exc:
                shown = "(hidden)" if setting.secret else repr(raw)
                raise SettingsError(f"{setting.env}={shown}: {exc}") from None
        values.update({key: value for key, value in overrides.items() if value is not None})
        settings = cls(**values)
        if not settings.public_url:
            host = settings.host if ":" not in settings.host else f"[{settings.host}]"
            object.__setattr__(settings, "public_url", f"http://{host}:{settings.port}")
        return settings

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


def describe(attr: str) -> Setting:
    return _BY_ATTR[attr]
