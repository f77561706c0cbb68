"""Which browser on which system a session was started from, read from its User-Agent.

The patron's list of sessions and the sign-in notice name a session by its browser, so a
patron recognises their own phone and notices a stranger's computer. The User-Agent is read
with ua-parser (the maintained rules of uap-core); the same few values come back again and
again, so each is parsed once. A value nobody recognises, or none at all, reads as unknown:
the pages say so in their own words. Only the family names are kept (never the whole
header, which the client chose), cut short, so a made-up User-Agent cannot fill a page.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

from ua_parser import parse

MAX_NAME = 40
_UNKNOWN = ("", "Other")


class Browser(NamedTuple):
    name: str | None  # e.g. "Firefox 125"; None when not recognised
    system: str | None  # e.g. "Windows"; None when not recognised


@functools.lru_cache(maxsize=1024)
def describe(user_agent: str | None) -> Browser:
    if not user_agent:
        return Browser(None, None)
    result = parse(user_agent)
    name = system = None
    if result.user_agent is not None and result.user_agent.family not in _UNKNOWN:
        name = result.user_agent.family[:MAX_NAME]
        if result.user_agent.major:
            name = f"{name} {result.user_agent.major[:8]}"
    if result.os is not None and result.os.family not in _UNKNOWN:
        system = result.os.family[:MAX_NAME]
    return Browser(name, system)
