"""The recovery mail limits' own bookkeeping: what a key is, and what the hourly housekeeping
forgets. What the limits do to the forms is attacked in tests/security/test_reset_forgot.py."""

from __future__ import annotations

import asyncpg

from auth.credentials.mail_limits import MailLimits, Policy, mailbox_key
from auth.credentials.throttle import address_key


def test_a_mailbox_is_one_key_however_its_address_is_spelled() -> None:
    # \uff30: a full-width P, which NFKC makes an ordinary one.
    assert mailbox_key("\uff30atron@Example.ORG ") == mailbox_key("patron@example.org")
    assert mailbox_key("patron@example.org") != mailbox_key("patron2@example.org")


def test_a_mail_counts_as_long_as_its_longest_window() -> None:
    assert Policy().kept_for == 24 * 60 * 60


async def test_a_mailbox_has_had_its_mails_after_three_whatever_the_spelling(
    pool: asyncpg.Pool,
) -> None:
    limits = MailLimits(pool)
    client = address_key("192.0.2.10")
    async with pool.acquire() as conn:
        for spelling in ("Reader@Example.org", "reader@example.org", "READER@EXAMPLE.ORG"):
            assert not await limits.mailbox_spent(conn, "reader@example.org")
            await limits.sent(conn, client, spelling)
        assert await limits.mailbox_spent(conn, "Reader@example.org")
        assert not await limits.mailbox_spent(conn, "another.reader@example.org")
        # Three mails are far from the address's limits.
        assert not await limits.address_spent(conn, client)


async def test_housekeeping_forgets_only_mails_that_no_window_counts_any_more(
    pool: asyncpg.Pool,
) -> None:
    limits = MailLimits(pool)
    old, recent = address_key("192.0.2.20"), address_key("2001:db8:20::1")
    async with pool.acquire() as conn:
        for client in (old, old, recent):
            await limits.sent(conn, client)
    await pool.execute(
        "UPDATE recovery_mails SET sent_at = now() - interval '25 hours' WHERE key = $1", old
    )
    await pool.execute(
        "UPDATE recovery_mails SET sent_at = now() - interval '23 hours' WHERE key = $1", recent
    )
    assert await limits.purge() == 2
    left = await pool.fetch(
        "SELECT key FROM recovery_mails WHERE key = ANY($1::text[])", [old, recent]
    )
    assert [row["key"] for row in left] == [recent]
