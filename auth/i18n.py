"""Dutch first, English too: the page texts and how a language is chosen.

Choice, strongest first: the `lang` query parameter (the switch on every page, remembered in a
cookie), the `lang` cookie, the browser's Accept-Language, then Dutch.
"""

from __future__ import annotations

from collections.abc import Mapping

LANGUAGES = ("nl", "en")
DEFAULT = "nl"
LANG_COOKIE = "library_lang"

MESSAGES: Mapping[str, Mapping[str, str]] = {
    "en": {
        "library": "The Library",
        "login.title": "Log in",
        "login.intro": "One login for the catalogue, reservations and digital resources.",
        "login.username": "Username or pass number",
        "login.password": "Password",
        "login.submit": "Log in",
        "login.failed": "That username or password is not right. Please try again.",
        "login.throttled": "Too many attempts. Please wait a moment before trying again.",
        "login.busy": "We are very busy right now. Please try again in a moment.",
        "login.forgot_password": "Forgot your password?",
        "login.forgot_username": "Forgot your username?",
        "logout.title": "Log out",
        "logout.confirm": "Do you want to log out of every library service in this browser?",
        "logout.submit": "Log out",
        "logged_in_as": "Logged in as",
        "csrf.title": "This form has expired",
        "csrf.text": "Please go back, reload the page and try again.",
        "language": "Language",
        "skip": "Skip to the content",
    },
    "nl": {
        "library": "De Bibliotheek",
        "login.title": "Inloggen",
        "login.intro": "Eén login voor de catalogus, reserveringen en digitale bronnen.",
        "login.username": "Gebruikersnaam of pasnummer",
        "login.password": "Wachtwoord",
        "login.submit": "Inloggen",
        "login.failed": "Deze gebruikersnaam of dit wachtwoord klopt niet. Probeer het opnieuw.",
        "login.throttled": "Te veel pogingen. Wacht even voordat u het opnieuw probeert.",
        "login.busy": "Het is nu erg druk. Probeer het over een ogenblik opnieuw.",
        "login.forgot_password": "Wachtwoord vergeten?",
        "login.forgot_username": "Gebruikersnaam vergeten?",
        "logout.title": "Uitloggen",
        "logout.confirm": "Wilt u in deze browser uitloggen bij alle diensten van de bibliotheek?",
        "logout.submit": "Uitloggen",
        "logged_in_as": "Ingelogd als",
        "csrf.title": "Dit formulier is verlopen",
        "csrf.text": "Ga terug, laad de pagina opnieuw en probeer het nog eens.",
        "language": "Taal",
        "skip": "Direct naar de inhoud",
    },
}


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
