"""Reading an authorization request, with plain asserts: which mistakes are answered with our
own page and which go back to the client, PKCE, pairwise subjects and claims by scope."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from auth.memberships import Membership
from auth.oidc.clients import Client, ClientSecret, ClientTable
from auth.oidc.requests import (
    QUESTION_TTL,
    AuthorizationRequest,
    ErrorRedirect,
    NotRedirectable,
    answer_location,
    answerable,
    claims_for,
    hinted_subject,
    needs_login,
    pairwise_subject,
    pkce_matches,
    read_authorization,
)

WEB = "https://online.example.nl/callback"
CONFIDENTIAL = Client(
    client_id="web",
    name="Web",
    redirect_uris=(WEB,),
    secret=ClientSecret("x" * 40),
    scopes=("openid", "profile"),
)
PUBLIC = Client(client_id="app", name="App", redirect_uris=("http://127.0.0.1:9/cb",))
TABLE = ClientTable((CONFIDENTIAL, PUBLIC))
# RFC 7636 Appendix B.
VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def params(**extra: str) -> dict[str, str]:
    return {
        "response_type": "code",
        "client_id": "web",
        "redirect_uri": WEB,
        "scope": "openid profile email",
        "state": "s",
        **extra,
    }


def test_a_good_request_keeps_only_the_scopes_the_client_may_have() -> None:
    read = read_authorization(params(nonce="n", max_age="30"), TABLE)
    assert isinstance(read, AuthorizationRequest)
    assert read.scopes == ("openid", "profile") and read.nonce == "n" and read.max_age == 30


@pytest.mark.parametrize(
    "extra",
    [
        {"client_id": "nobody"},
        {"client_id": ""},
        {"redirect_uri": "https://evil.example/cb"},
        {"redirect_uri": WEB.upper()},
        {"redirect_uri": WEB + "#x"},
        {"state": "x" * 5000},
    ],
)
def test_an_unknown_client_or_redirect_never_leads_anywhere(extra: dict[str, str]) -> None:
    assert isinstance(read_authorization(params(**extra), TABLE), NotRedirectable)


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        ({"response_type": "id_token"}, "unsupported_response_type"),
        ({"response_type": "code id_token"}, "unsupported_response_type"),
        ({"response_mode": "fragment"}, "invalid_request"),
        ({"scope": "profile"}, "invalid_scope"),
        ({"code_challenge": CHALLENGE, "code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge": CHALLENGE}, "invalid_request"),
        ({"code_challenge_method": "S256"}, "invalid_request"),
        ({"prompt": "none login"}, "invalid_request"),
        ({"max_age": "soon"}, "invalid_request"),
        ({"request_uri": "https://x"}, "request_uri_not_supported"),
    ],
)
def test_other_mistakes_go_back_to_the_registered_redirect_uri(
    extra: dict[str, str], error: str
) -> None:
    read = read_authorization(params(**extra), TABLE)
    assert isinstance(read, ErrorRedirect)
    assert (read.redirect_uri, read.error, read.state) == (WEB, error, "s")


def test_a_public_client_must_send_a_challenge() -> None:
    base = params(client_id="app", redirect_uri="http://127.0.0.1:9/cb")
    assert isinstance(read_authorization(base, TABLE), ErrorRedirect)
    with_pkce = {**base, "code_challenge": CHALLENGE, "code_challenge_method": "S256"}
    assert isinstance(read_authorization(with_pkce, TABLE), AuthorizationRequest)


def test_pkce_follows_rfc_7636() -> None:
    assert pkce_matches(VERIFIER, CHALLENGE)
    assert not pkce_matches(VERIFIER[:-1] + "l", CHALLENGE)
    assert not pkce_matches(None, CHALLENGE)
    assert not pkce_matches("short", CHALLENGE)
    assert pkce_matches(None, None)
    assert not pkce_matches(VERIFIER, None)  # a verifier for a code made without a challenge


def test_pairwise_subjects_are_stable_per_host_and_differ_between_hosts() -> None:
    secret = b"k" * 32
    one = pairwise_subject("a.example", "account", secret)
    assert one == pairwise_subject("a.example", "account", secret)
    assert one != pairwise_subject("b.example", "account", secret)
    assert one != pairwise_subject("a.example", "other", secret)
    assert "account" not in one


def test_max_age_asks_for_a_new_login_once_it_has_passed() -> None:
    read = read_authorization(params(max_age="60"), TABLE)
    assert isinstance(read, AuthorizationRequest)
    assert not needs_login(read, auth_time=1000, now=1060)
    assert needs_login(read, auth_time=1000, now=1061)


def test_the_answer_keeps_the_redirect_uris_own_query_and_adds_iss() -> None:
    location = answer_location(
        "https://x.example/cb?a=1", {"code": "c", "state": None}, "https://i"
    )
    assert location == "https://x.example/cb?a=1&code=c&iss=https%3A%2F%2Fi"


def test_claims_follow_the_granted_scopes() -> None:
    info: dict[str, Any] = {"username": "jan", "email": "jan@example.org", "pass_number": "123"}
    assert claims_for(["openid"], **info) == {}
    assert claims_for(["openid", "profile", "library"], **info) == {
        "preferred_username": "jan",
        "pass_number": "123",
        "memberships": [],
    }
    assert claims_for(["email"], **info)["email"] == "jan@example.org"
    assert claims_for(["email"], username="jan", email=None, pass_number="1") == {}


def test_the_library_scope_carries_the_memberships_without_their_pass_numbers() -> None:
    held = (Membership("kb", "123", "adult", date(2027, 1, 31)), Membership("obs", "9", None))
    claims = claims_for(["library"], username="j", email=None, pass_number="123", memberships=held)
    assert claims["memberships"] == [
        {"institution": "kb", "type": "adult", "valid_until": "2027-01-31"},
        {"institution": "obs", "type": None, "valid_until": None},
    ]
    assert "memberships" not in claims_for(["profile"], **{**held_free(), "memberships": held})


def held_free() -> dict[str, Any]:
    return {"username": "j", "email": None, "pass_number": "1"}


def test_max_age_0_always_asks_for_a_new_login() -> None:
    """OIDC Core 3.1.2.1: max_age=0 is prompt=login, also for a login within the second."""
    read = read_authorization(params(max_age="0"), TABLE)
    assert isinstance(read, AuthorizationRequest)
    assert needs_login(read, auth_time=1000, now=1000)


def test_a_hint_names_a_subject_only_for_the_client_it_was_issued_to() -> None:
    """`hinted_subject` takes the claims the signer verified; an empty `id_token_hint` is as
    if none was sent (RFC 6749 3.1)."""
    assert hinted_subject({"aud": "web", "sub": "s1"}, CONFIDENTIAL) == "s1"
    assert hinted_subject({"aud": ["web"], "sub": "s1"}, CONFIDENTIAL) == "s1"
    for claims in (
        None,
        {"aud": "app", "sub": "s1"},
        {"aud": ["web", "app"], "sub": "s1"},
        {"aud": "web"},
        {"aud": "web", "sub": ""},
        {"aud": "web", "sub": 7},
    ):
        assert hinted_subject(claims, CONFIDENTIAL) is None, claims
    read = read_authorization(params(id_token_hint=""), TABLE)
    assert isinstance(read, AuthorizationRequest) and read.id_token_hint is None


def test_a_consent_page_answers_only_its_own_question_of_its_own_patron_in_time() -> None:
    pending = {"id": "q1", "uid": "u1", "asked_at": 1000}
    assert answerable(pending, account_id="u1", question="q1", now=1000 + QUESTION_TTL)
    assert not answerable(pending, account_id="u1", question="q2", now=1000)
    assert not answerable(pending, account_id="u2", question="q1", now=1000)
    assert not answerable(pending, account_id="u1", question="q1", now=1001 + QUESTION_TTL)
    assert not answerable({"id": "q1", "uid": "u1"}, account_id="u1", question="q1", now=1000)
