"""Campaign raises: a campaign never lowers nor shortens the temporary raise in force."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.domain.accounts import AccountStatus, CreditLine
from server.domain.limits import TemporaryRaise, campaign_raise
from server.domain.pricing import Grade

NOW = datetime(2027, 1, 15, 2, 0, tzinfo=UTC)
DAY = timedelta(days=1)
OFFER = TemporaryRaise(500_000, NOW + 10 * DAY)


def line(temporary=0, expires_at=None):
    return CreditLine(AccountStatus.ACTIVE, Grade.A, 1_000_000, temporary, expires_at, 0, 0)


@pytest.mark.parametrize("temporary, expires_at, kept", [
    (0, None, False),                           # no raise: the campaign's
    (800_000, NOW - DAY, False),                # an expired raise counts for nothing
    (300_000, NOW + 5 * DAY, False),            # smaller and shorter: replaced
    (500_000, NOW + 5 * DAY, False),            # as large, shorter: extended
    (300_000, NOW + 10 * DAY, False),           # smaller, as long: raised
    (800_000, NOW + 20 * DAY, True),            # larger and longer: kept
    (800_000, NOW + 5 * DAY, True),             # larger but shorter: kept, never lowered
    (300_000, NOW + 20 * DAY, True),            # smaller but longer: kept, never shortened
    (500_000, NOW + 10 * DAY, True),            # the same (a campaign run twice): unchanged
])
def test_a_campaign_replaces_a_raise_only_when_better_on_both_counts(temporary, expires_at, kept):
    assert campaign_raise(line(temporary, expires_at), OFFER, NOW) == (None if kept else OFFER)


@given(temporary=st.integers(0, 10**7), ends_in_days=st.integers(-30, 90), offered=st.integers(1, 10**7),
       offered_days=st.integers(1, 90))
def test_a_campaign_never_lowers_the_amount_in_force_nor_ends_it_sooner(temporary, ends_in_days, offered,
                                                                        offered_days):
    before = line(temporary, NOW + ends_in_days * DAY)
    chosen = campaign_raise(before, TemporaryRaise(offered, NOW + offered_days * DAY), NOW)
    after = before if chosen is None else line(chosen.limit_minor, chosen.expires_at)
    in_force = before.temporary_limit_in_force_minor(NOW)
    assert after.temporary_limit_in_force_minor(NOW) >= in_force
    for days in range(0, 91, 7):
        # At every later instant the customer has at least what they had.
        moment = NOW + days * DAY
        assert after.temporary_limit_in_force_minor(moment) >= before.temporary_limit_in_force_minor(moment)
