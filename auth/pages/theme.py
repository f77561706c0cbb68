"""The login screen's house style: a name, a logo and two colours, checked once at start.

Colours end up inside a <style> block, so only plain hex colours are accepted; the logo must
be an https URL or a path on this host.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_HEX = re.compile(r"#[0-9a-fA-F]{3}(?:[0-9a-fA-F]{3})?")


class ThemeError(ValueError):
    pass


@dataclass(frozen=True)
class Theme:
    name: str = ""
    colour: str = "#1f4e79"
    text_colour: str = "#ffffff"
    logo_url: str = ""

    def __post_init__(self) -> None:
        for label, value in (("colour", self.colour), ("text colour", self.text_colour)):
            if not _HEX.fullmatch(value):
                raise ThemeError(f"theme {label} must be a hex colour like #1f4e79, not {value!r}")
        logo = self.logo_url
        if logo and not (
            logo.startswith("https://") or (logo.startswith("/") and not logo.startswith("//"))
        ):
            raise ThemeError("theme logo must be an https:// URL or a path on this host")
