"""Dutch first, English too: the page texts and how a language is chosen.

The texts live in auth/locales/<lang>.json. Choice, strongest first: the `lang` query
parameter (the switch on every page, remembered in a cookie), the `lang` cookie, the
browser's Accept-Language, then Dutch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources

LANGUAGES = ("nl", "en")
DEFAULT = "nl"
LANG_COOKIE = "library_lang"


def _load() -> dict[str, Mapping[str, str]]:
    folder = resources.files("auth") / "locales"
    return {
        lang: json.loads((folder / f"{lang}.json").read_text(encoding="utf-8"))
        for lang in LANGUAGES
    }


# Loaded once; both catalogues have the same keys (checked by the tests).
MESSAGES: Mapping[str, Mapping[str, str]] = _load()


def negotiate(query: str | None, cookie: str | None, accept_language: str | None) -> str:
    for explicit in (query, cookie):
        if explicit in LANGUAGES:
            return explicit
    for lang, _quality in _ranked(accept_language or ""):
        primary = lang.split("-", 1)[0]
        if primary in LANGUAGES:
            return primary
    return DEFAULT


def _ranked(header: str) -> list[tuple[str, float]]:
    ranked = []
    for item in header.split(",")[:20]:
        lang, _, params = item.strip().lower().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        if lang and quality > 0:
            ranked.append((lang, quality))
    ranked.sort(key=lambda pair: pair[1], reverse=True)
    return ranked


def translator(lang: str) -> Mapping[str, str]:
    return MESSAGES.get(lang, MESSAGES[DEFAULT])
