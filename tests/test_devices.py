"""The device cookie's codec and the figures of the throttle, with plain asserts."""

from __future__ import annotations

import json
import time

import pytest
from cryptography.fernet import Fernet, MultiFernet

from auth.credentials import devices
from auth.credentials.devices import MAX_ACCOUNTS, Device, DeviceCodec
from auth.credentials.throttle import Decaying, Doubling, Policy

OLD, NEW = Fernet(Fernet.generate_key()), Fernet(Fernet.generate_key())


def test_a_sealed_cookie_opens_to_the_same_devices() -> None:
    codec = DeviceCodec(MultiFernet([NEW]), secure=False)
    entries = [Device("a", 0, "n1"), Device("b", 3, "n2")]
    assert codec.open(codec.seal(entries)) == entries


def test_a_cookie_sealed_with_a_retired_key_still_opens_during_rotation() -> None:
    sealed = DeviceCodec(MultiFernet([OLD]), secure=False).seal([Device("a", 0, "n")])
    rotating = DeviceCodec(MultiFernet([NEW, OLD]), secure=False)
    assert rotating.open(sealed) == [Device("a", 0, "n")]
    assert DeviceCodec(MultiFernet([NEW]), secure=False).open(sealed) == []


def test_a_cookie_older_than_its_lifetime_opens_to_nothing() -> None:
    keys = MultiFernet([NEW])
    old = keys.encrypt_at_time(b'[["a",0,"n"]]', int(time.time()) - 400 * 86400).decode()
    assert DeviceCodec(keys, secure=False).open(old) == []


@pytest.mark.parametrize(
    "payload",
    [b"{}", b'"x"', b'[["a","0","n"]]', b'[["a",0]]', b'[[1,0,"n"]]', b"not json"],
)
def test_a_well_sealed_but_malformed_cookie_opens_to_nothing(payload: bytes) -> None:
    keys = MultiFernet([NEW])
    assert DeviceCodec(keys, secure=False).open(keys.encrypt(payload).decode()) == []


def test_an_oversized_or_non_ascii_cookie_opens_to_nothing() -> None:
    codec = DeviceCodec(MultiFernet([NEW]), secure=False)
    assert codec.open("A" * 5000) == []
    assert codec.open("gAAAAé") == []
    assert codec.open(None) == []


def test_trust_needs_the_account_and_its_current_epoch() -> None:
    entries = [Device("a", 2, "n1"), Device("b", 0, "n2")]
    assert devices.trusted(entries, "a", 2) == Device("a", 2, "n1")
    assert devices.trusted(entries, "a", 3) is None  # the password changed since
    assert devices.trusted(entries, "c", 0) is None


def test_remembering_puts_the_patron_first_with_a_fresh_nonce_and_keeps_five() -> None:
    entries = [Device(str(n), 0, f"n{n}") for n in range(MAX_ACCOUNTS)]
    after = devices.remember(entries, "3", 1)
    assert [d.account_id for d in after] == ["3", "0", "1", "2", "4"]
    assert after[0].epoch == 1 and after[0].nonce != "n3"
    newcomer = devices.remember(entries, "new", 0)
    assert [d.account_id for d in newcomer] == ["new", "0", "1", "2", "3"]


def test_the_cookie_holds_no_readable_account_id() -> None:
    sealed = DeviceCodec(MultiFernet([NEW]), secure=False).seal([Device("patron-id", 0, "n")])
    assert "patron-id" not in sealed
    assert json.loads(NEW.decrypt(sealed.encode())) == [["patron-id", 0, "n"]]


def test_the_cookie_is_secure_and_prefixed_behind_https() -> None:
    codec = DeviceCodec(MultiFernet([NEW]), secure=True)
    assert codec.cookie_name == "__Secure-library_device"
    assert codec.cookie_flags["secure"] is True and codec.cookie_flags["path"] == "/auth/"
    assert DeviceCodec(MultiFernet([NEW]), secure=False).cookie_name == "library_device"


def test_the_account_block_doubles_from_thirty_seconds_to_five_minutes() -> None:
    account = Policy().account
    assert [account.block_for(n) for n in range(4, 11)] == [0, 30, 60, 120, 240, 300, 300]
    assert account.block_for(10**6) == 300


def test_the_device_block_starts_later_and_may_grow_longer() -> None:
    device = Policy().device
    assert device.block_for(9) == 0 and device.block_for(10) == 30
    assert device.block_for(10**6) == 900


def test_the_address_block_grows_a_second_per_point_over_a_hundred_up_to_a_minute() -> None:
    address = Policy().address
    assert address.block_for(100) == 0
    assert address.block_for(101) == pytest.approx(1)
    assert address.block_for(130) == pytest.approx(30)
    assert address.block_for(10**6) == 60


def test_the_figures_are_data() -> None:
    assert Doubling(free=1, first=1, longest=4).block_for(5) == 4
    assert Decaying(free=0, half_life=1, per_point=2, longest=10).block_for(3) == 6
