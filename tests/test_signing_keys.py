"""The key store on a real database: one active key per purpose and algorithm, made once,
rotated and pruned together, shared by every instance, and a JWKS with public parts only."""

from __future__ import annotations

import asyncio
import json
import secrets

import asyncpg
import jwt
import pytest
from cryptography.fernet import MultiFernet
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from auth import keys, notify
from auth.signing import KEYS, KEYS_CHANNEL, KeyStore
from auth.store import schema
from gateway import database

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi"}


@pytest.fixture
async def store(pool: asyncpg.Pool, cookie_keys: MultiFernet) -> KeyStore:
    store = KeyStore(pool, cookie_keys)
    await store.load()
    return store


def published(store: KeyStore) -> dict[str, dict[str, str]]:
    return {key["kid"]: key for key in json.loads(store.jwks_body)["keys"]}


def active_kids(store: KeyStore) -> dict[tuple[str, str], str]:
    found = {("oidc", alg): store.oidc_key(alg) for alg in ("RS256", "ES256", "EdDSA")}
    found["identity", "EdDSA"] = store.active
    kids = {slot: key.kid for slot, key in found.items() if key is not None}
    assert len(kids) == len(KEYS)
    return kids


async def test_after_load_every_purpose_has_a_key_of_each_algorithm_and_all_are_published(
    store: KeyStore,
) -> None:
    assert store.active is not None and isinstance(store.active.private, Ed25519PrivateKey)
    rs256, es256, eddsa = (store.oidc_key(alg) for alg in ("RS256", "ES256", "EdDSA"))
    assert rs256 is not None and isinstance(rs256.private, rsa.RSAPrivateKey)
    assert rs256.private.key_size == keys.RSA_KEY_BITS == 2048
    assert es256 is not None and isinstance(es256.private, ec.EllipticCurvePrivateKey)
    assert isinstance(es256.private.curve, ec.SECP256R1)
    assert eddsa is not None and isinstance(eddsa.private, Ed25519PrivateKey)
    assert store.oidc_key("HS256") is None and store.oidc_key("none") is None
    # The identity JWT and the provider never share a key.
    assert len(set(active_kids(store).values())) == len(KEYS)

    jwks = published(store)
    for (_purpose, alg), kid in active_kids(store).items():
        assert jwks[kid]["alg"] == alg and jwks[kid]["use"] == "sig"
    assert jwks[rs256.kid]["kty"] == "RSA"
    assert (jwks[es256.kid]["kty"], jwks[es256.kid]["crv"]) == ("EC", "P-256")
    assert (jwks[eddsa.kid]["kty"], jwks[eddsa.kid]["crv"]) == ("OKP", "Ed25519")
    # Every published key is usable by PyJWT, the README's verifier.
    assert {key.key_id for key in jwt.PyJWKSet.from_json(store.jwks_body.decode()).keys} == set(
        jwks
    )


async def test_loading_again_or_on_a_second_instance_at_once_makes_no_second_key(
    pool: asyncpg.Pool, store: KeyStore, cookie_keys: MultiFernet
) -> None:
    before = active_kids(store)
    others = [KeyStore(pool, cookie_keys) for _ in range(3)]
    await asyncio.gather(store.load(), *(other.load() for other in others))
    for each in (store, *others):
        assert active_kids(each) == before
        assert each.jwks_body == store.jwks_body


async def test_rotation_makes_new_keys_and_keeps_the_old_ones_published_until_pruned(
    store: KeyStore,
) -> None:
    old = active_kids(store)
    new = await store.rotate()
    assert new == active_kids(store)
    assert list(new) == list(KEYS)  # the identity key first: `keys rotate` prints it first
    assert not set(new.values()) & set(old.values())
    assert set(old.values()) | set(new.values()) <= set(published(store))

    # One purpose at a time: the identity key stays.
    newer = await store.rotate("oidc")
    assert set(newer) == {slot for slot in KEYS if slot[0] == "oidc"}
    assert active_kids(store)["identity", "EdDSA"] == new["identity", "EdDSA"]
    with pytest.raises(ValueError, match="purpose"):
        await store.rotate("nonsense")

    pruned = await store.prune(older_than=0)
    assert set(old.values()) | {new[slot] for slot in newer} <= set(pruned)
    assert set(published(store)) == set(active_kids(store).values())


async def test_the_jwks_never_holds_a_private_member(pool: asyncpg.Pool, store: KeyStore) -> None:
    await store.rotate()
    # Even a stored public part that somehow carries private members is published without them.
    rs256 = store.oidc_key("RS256")
    assert rs256 is not None and isinstance(rs256.private, rsa.RSAPrivateKey)
    leaked = jwt.algorithms.RSAAlgorithm.to_jwk(rs256.private, as_dict=True)
    assert leaked.keys() >= PRIVATE_MEMBERS
    await pool.execute(
        "UPDATE signing_keys SET public_jwk = public_jwk || $2::jsonb WHERE kid = $1",
        rs256.kid,
        json.dumps({name: leaked[name] for name in PRIVATE_MEMBERS}),
    )
    await store.refresh()

    body = store.jwks_body.decode()
    for key in json.loads(body)["keys"]:
        assert not PRIVATE_MEMBERS & key.keys(), key
    assert leaked["d"] not in body and leaked["p"] not in body
    assert published(store)[rs256.kid]["n"] == leaked["n"]


@pytest.mark.parametrize("alg", keys.ALGORITHMS)
def test_a_public_jwk_is_made_of_the_public_key_alone(alg: str) -> None:
    jwk = keys.public_jwk(keys.generate(alg), "kid-1", alg)
    assert not PRIVATE_MEMBERS & jwk.keys()
    assert jwk["kid"] == "kid-1" and jwk["alg"] == alg and jwk["use"] == "sig"
    assert jwt.PyJWK(jwk).algorithm_name == alg


async def test_an_unreadable_oidc_key_makes_no_token_and_is_replaced_at_the_next_load(
    pool: asyncpg.Pool, store: KeyStore
) -> None:
    rs256 = store.oidc_key("RS256")
    assert rs256 is not None
    await pool.execute(
        "UPDATE signing_keys SET private_key = 'not a fernet token' WHERE kid = $1", rs256.kid
    )
    await store.refresh()
    assert store.oidc_key("RS256") is None
    assert store.active is not None  # the identity JWT is not affected
    await store.load()
    replacement = store.oidc_key("RS256")
    assert replacement is not None and replacement.kid != rs256.kid
    assert rs256.kid in published(store)  # still verifies what it signed


async def test_every_instance_sees_a_rotation_made_on_another(
    database_url: str, pool: asyncpg.Pool, store: KeyStore, cookie_keys: MultiFernet
) -> None:
    other = KeyStore(pool, cookie_keys)
    await other.load()
    assert active_kids(other) == active_kids(store)
    refreshed = asyncio.Event()

    async def refresh() -> None:
        await other.refresh()
        refreshed.set()

    def on_keys(_payload: str) -> None:
        asyncio.get_running_loop().create_task(refresh())

    async with notify.listening(database_url, {KEYS_CHANNEL: on_keys}, lambda: None):
        rotated = await store.rotate()
        await asyncio.wait_for(refreshed.wait(), timeout=30)
    assert active_kids(other) == rotated
    assert other.jwks_body == store.jwks_body


@pytest.fixture
async def before_purposes(postgres_server: str) -> str:
    """The URL of a database migrated up to the migration before signing keys got a purpose."""
    url = await database.ensure_database(postgres_server, "t_keys_" + secrets.token_hex(3))
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "CREATE TABLE schema_migrations (version text PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for name, sql in schema.migration_files():
            if name >= "0006":
                break
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", name)
    finally:
        await conn.close()
    return url


async def test_the_identity_key_made_before_purposes_existed_keeps_its_kid_and_signs_on(
    before_purposes: str, cookie_keys: MultiFernet
) -> None:
    private = keys.generate("EdDSA")
    kid = "20240101-0123abcd"
    pool = await database.create_pool(before_purposes, max_size=2)
    try:
        await pool.execute(
            "INSERT INTO signing_keys (kid, algorithm, private_key, public_jwk, active)"
            " VALUES ($1, 'EdDSA', $2, $3::jsonb, true)",
            kid,
            cookie_keys.encrypt(keys.private_pem(private)),
            json.dumps(keys.public_jwk(private, kid, "EdDSA")),
        )
        async with pool.acquire() as conn:
            assert "0006_signing_key_purpose.sql" in await schema.migrate(conn)
        row = await pool.fetchrow("SELECT * FROM signing_keys WHERE kid = $1", kid)
        assert row is not None and row["purpose"] == "identity" and row["active"]
        store = KeyStore(pool, cookie_keys)
        await store.load()
    finally:
        await pool.close()
    assert store.active is not None and store.active.kid == kid
    assert active_kids(store)["identity", "EdDSA"] == kid
    assert kid in published(store)
