"""Who may hold what, and the life of a hold: PENDING, then one of CAPTURED, VOIDED or
EXPIRED."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from server.domain import authorizations as holds
from server.domain.accounts import AccountStatus, CreditLine
from server.domain.authorizations import Approval, AuthorizationStatus, Decline, DeclineReason, Hold
from server.domain.errors import FailedPrecondition, InvalidArgument
from server.domain.pricing import DEFAULT_PRODUCT_TABLE, Grade, RepaymentMethod

NOW = datetime(2027, 1, 15, 2, 0, tzinfo=UTC)
FLAT = RepaymentMethod.FLAT_FEE


def line(status=AccountStatus.ACTIVE, grade=Grade.B, limit=100_000, held=0):
    return CreditLine(status, grade, limit, 0, None, held, 0)


def decide(credit, amount, term=3, method=FLAT):
    return holds.decide(credit, DEFAULT_PRODUCT_TABLE, amount, term, method, NOW)


def test_approves_within_the_available_limit_with_the_grade_rate():
    decision = decide(line(), 100_000)
    assert isinstance(decision, Approval)
    assert decision.offer.monthly_rate_bps == 60


@pytest.mark.parametrize("credit, amount, term, reason", [
    (line(status=AccountStatus.FROZEN), 10_000, 3, DeclineReason.ACCOUNT_FROZEN),
    (line(status=AccountStatus.CLOSED), 10_000, 3, DeclineReason.ACCOUNT_CLOSED),
    (line(), 100_001, 3, DeclineReason.INSUFFICIENT_LIMIT),
    (line(held=95_000), 10_000, 3, DeclineReason.INSUFFICIENT_LIMIT),
    (line(), 9_999, 3, DeclineReason.TERM_NOT_OFFERED),
    (line(grade=Grade.E, limit=10**7), 200_000, 6, DeclineReason.TERM_NOT_OFFERED),
])
def test_declines_carry_the_reason_that_matters(credit, amount, term, reason):
    decision = decide(credit, amount, term)
    assert isinstance(decision, Decline)
    assert decision.reason is reason
    assert decision.message


def test_a_frozen_account_is_declined_even_with_limit_to_spare():
    assert decide(line(status=AccountStatus.FROZEN, limit=10**9), 100).reason is DeclineReason.ACCOUNT_FROZEN


def pending(amount=50_000, expires_in=timedelta(minutes=30), status=AuthorizationStatus.PENDING):
    return Hold(status, amount, NOW + expires_in, 3, FLAT)


def test_full_capture_takes_everything_and_releases_nothing():
    result = holds.capture(pending(), 0, 10_000, NOW)
    assert (result.captured_minor, result.released_minor) == (50_000, 0)


def test_partial_capture_gives_back_the_rest():
    result = holds.capture(pending(), 30_000, 10_000, NOW)
    assert (result.captured_minor, result.released_minor) == (30_000, 20_000)


def test_capture_above_the_authorized_amount_names_the_field():
    with pytest.raises(InvalidArgument) as error:
        holds.capture(pending(), 50_001, 10_000, NOW)
    assert [v.field for v in error.value.violations] == ["amount_minor"]


def test_capture_below_the_plan_minimum_is_refused():
    with pytest.raises(InvalidArgument, match="minimum"):
        holds.capture(pending(), 9_999, 10_000, NOW)


@pytest.mark.parametrize("status", [AuthorizationStatus.VOIDED, AuthorizationStatus.EXPIRED,
                                    AuthorizationStatus.CAPTURED, AuthorizationStatus.DECLINED])
def test_only_a_pending_hold_can_be_captured(status):
    with pytest.raises(FailedPrecondition, match=status.value):
        holds.capture(pending(status=status), 0, 1, NOW)


def test_a_hold_past_its_expiry_is_expired_before_any_sweep():
    stale = pending(expires_in=timedelta(0))
    assert stale.effective_status(NOW) is AuthorizationStatus.EXPIRED
    with pytest.raises(FailedPrecondition, match="EXPIRED"):
        holds.capture(stale, 0, 1, NOW)
    with pytest.raises(FailedPrecondition, match="EXPIRED"):
        holds.void(stale, NOW)


def test_void_releases_once_and_a_second_void_changes_nothing():
    assert holds.void(pending(), NOW) is True
    assert holds.void(pending(status=AuthorizationStatus.VOIDED), NOW) is False
    with pytest.raises(FailedPrecondition):
        holds.void(pending(status=AuthorizationStatus.CAPTURED), NOW)
