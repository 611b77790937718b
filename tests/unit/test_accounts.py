"""Limit arithmetic: available = effective limit - holds - outstanding principal, never
negative; a temporary raise counts only until it expires."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.domain.accounts import AccountStatus, CreditLine, temporary_limit_expiry
from server.domain.errors import InvalidArgument
from server.domain.pricing import Grade

NOW = datetime(2027, 1, 15, 2, 0, tzinfo=UTC)
amounts = st.integers(0, 10**11)


def line(limit=100_000, temporary=0, expires_at=None, held=0, outstanding=0, status=AccountStatus.ACTIVE):
    return CreditLine(status, Grade.B, limit, temporary, expires_at, held, outstanding)


@given(limit=amounts, temporary=amounts, held=amounts, outstanding=amounts, expired=st.booleans())
def test_available_is_effective_limit_minus_used_never_negative(limit, temporary, held, outstanding, expired):
    expires_at = NOW - timedelta(seconds=1) if expired else NOW + timedelta(days=1)
    credit = line(limit, temporary, expires_at, held, outstanding)
    effective = limit + (0 if expired else temporary)
    assert credit.effective_limit_minor(NOW) == effective
    assert credit.available_minor(NOW) == max(0, effective - held - outstanding)


def test_a_temporary_raise_counts_until_the_instant_it_expires():
    expires_at = NOW + timedelta(hours=1)
    credit = line(100_000, 50_000, expires_at, held=20_000)
    assert credit.available_minor(NOW) == 130_000
    assert credit.available_minor(expires_at - timedelta(microseconds=1)) == 130_000
    assert credit.available_minor(expires_at) == 80_000


def test_a_limit_cut_below_what_is_used_leaves_nothing_available():
    assert line(50_000, held=30_000, outstanding=40_000).available_minor(NOW) == 0


def test_a_frozen_or_closed_account_has_nothing_available_whatever_its_limit():
    for status in (AccountStatus.FROZEN, AccountStatus.CLOSED):
        credit = line(10**9, status=status)
        assert (credit.effective_limit_minor(NOW), credit.available_minor(NOW)) == (10**9, 0)
    assert line(10**9).available_minor(NOW) == 10**9


def test_a_temporary_raise_ends_after_now_and_at_most_the_maximum_ahead():
    latest = NOW + timedelta(days=90)
    assert temporary_limit_expiry(50_000, latest, NOW, 90) == latest
    assert temporary_limit_expiry(50_000, NOW + timedelta(seconds=1), NOW, 90) == NOW + timedelta(seconds=1)
    for expires_at in (None, NOW, latest + timedelta(microseconds=1), NOW + timedelta(days=365)):
        with pytest.raises(InvalidArgument) as error:
            temporary_limit_expiry(50_000, expires_at, NOW, 90)
        assert [v.field for v in error.value.violations] == ["expires_at"]
    # Removing the raise needs no end.
    assert temporary_limit_expiry(0, NOW + timedelta(days=365), NOW, 90) is None
