"""The notice of a failed auto-debit: which failure is told, when it says the next try
is, and how it reads (server/domain/auto_debit.py, rule 6; the email channel)."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone

import pytest

from collections_bot.channels.email import DebitFailure, build_debit_failure_message, failure_in_words
from server.domain.auto_debit import (
    MAX_ATTEMPTS,
    NOTICE_WITHIN,
    Attempt,
    failure_to_tell,
    next_try,
    notice_step,
)
from server.domain.reminders import Attempt as ContactAttempt
from server.domain.reminders import AttemptKind, AttemptStatus, Channel

SHANGHAI = timezone(timedelta(hours=8))
DUE = date(2027, 2, 15)


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2027, 2, day, hour, minute, tzinfo=SHANGHAI)


# -- the next try a notice announces ----------------------------------------------------

def test_after_the_first_failure_the_next_try_is_four_hours_later():
    assert next_try(1, at(15, 8, 2), DUE, 8) == at(15, 12, 2)


def test_after_the_second_failure_the_next_try_is_the_next_morning():
    assert next_try(2, at(15, 12, 30), DUE, 8) == at(16, 8)
    assert next_try(2, at(15, 23, 50), DUE, 9) == at(16, 9)


def test_after_the_last_failure_there_is_no_next_try():
    assert next_try(MAX_ATTEMPTS, at(16, 8), DUE, 8) is None


def test_no_next_try_past_the_days_a_due_date_is_tried():
    # A first try made late (the bot was down) whose retry would fall on the third day after.
    assert next_try(2, at(17, 12), DUE, 8) is None
    assert next_try(1, at(17, 21), DUE, 8) is None
    assert next_try(1, at(17, 12), DUE, 8) == at(17, 16)


# -- which failure is told ----------------------------------------------------------------

def test_the_latest_try_is_told_when_it_failed_recently():
    first = Attempt(1, "FAILED", at(15, 8), uuid.uuid4())
    assert failure_to_tell([first], at(15, 8, 1)) == first
    assert failure_to_tell([first], at(15, 8) + NOTICE_WITHIN) == first


def test_a_failure_is_not_told_once_a_later_try_was_made():
    tries = [Attempt(1, "FAILED", at(15, 8)), Attempt(2, "REQUESTED", None)]
    assert failure_to_tell(tries, at(15, 12, 1)) is None
    tries = [Attempt(2, "SUCCEEDED", at(15, 12)), Attempt(1, "FAILED", at(15, 8))]
    assert failure_to_tell(tries, at(15, 12, 1)) is None


def test_of_several_failures_only_the_latest_is_told():
    tries = [Attempt(1, "FAILED", at(15, 8)), Attempt(2, "FAILED", at(15, 12))]
    assert failure_to_tell(tries, at(15, 12, 5)) == tries[1]


def test_an_old_failure_is_not_told_nor_a_due_date_without_tries():
    assert failure_to_tell([Attempt(3, "FAILED", at(16, 8))], at(16, 8) + NOTICE_WITHIN + timedelta(minutes=1)) \
        is None
    assert failure_to_tell([], at(15, 8)) is None


def test_each_try_has_its_own_notice_step():
    assert [notice_step(n) for n in (1, 2, 3)] == ["AUTO_DEBIT_FAILED_1", "AUTO_DEBIT_FAILED_2",
                                                   "AUTO_DEBIT_FAILED_3"]


def test_an_attempt_naming_a_payment_order_is_a_debit_failure_notice():
    now = at(15, 8)
    attempt = ContactAttempt(
        attempt_id=uuid.uuid4(), account_id=uuid.uuid4(), loan_id=None, sequence=None, due_date=DUE,
        step_code="D+1_EMAIL", channel=Channel.EMAIL, status=AttemptStatus.PENDING, reason=None, outcome=None,
        tries=0, planned_for=DUE, message_id=None, next_try_at=None, detail={}, created_at=now, updated_at=now)
    assert attempt.kind is AttemptKind.REMINDER
    assert replace(attempt, payment_order_id=uuid.uuid4()).kind is AttemptKind.DEBIT_FAILED


# -- how it reads --------------------------------------------------------------------------

@pytest.mark.parametrize("locale, reason, words", [
    ("en", "INSUFFICIENT_FUNDS", "not enough money"),
    ("en", "INSTRUMENT_INVALID", "can no longer be used"),
    ("en", "DECLINED", "declined"),
    ("zh-CN", "INSUFFICIENT_FUNDS", "余额不足"),
    ("zh-CN", "INSTRUMENT_INVALID", "已失效"),
    ("zh-CN", "DECLINED", "拒绝"),
    # A reason without words of its own reads as declined; a locale without templates as English.
    ("en", "SOMETHING_NEW", "declined"),
    ("fr-FR", "INSUFFICIENT_FUNDS", "not enough money"),
])
def test_the_reason_in_plain_words(locale, reason, words):
    assert words in failure_in_words(reason, locale)


def failure(locale: str, next_try_at: datetime | None) -> DebitFailure:
    return DebitFailure(to_address="wang.fang@example.com", name="Wang Fang", locale=locale,
                        message_id="<n@credit.example>", account_id=str(uuid.UUID(int=7)), due_date="2027-02-15",
                        amount_minor=101_800, owed_minor=101_800, failure_reason="INSUFFICIENT_FUNDS",
                        token_last4="0002", failed_at=at(15, 8), next_try_at=next_try_at)


def bodies(message) -> list[str]:
    return [message.get_body((kind,)).get_content() for kind in ("plain", "html")]


@pytest.mark.parametrize("locale, next_words, last_words", [
    ("en", "try again automatically at", "no further automatic try"),
    ("zh-CN", "再次自动扣款", "将不再自动扣款"),
])
def test_the_notice_says_what_failed_and_what_comes_next(locale, next_words, last_words):
    kwargs = {"mail_from": "Credit <noreply@credit.example>", "domain": "credit.example", "secret": "s"}
    retried = build_debit_failure_message(failure(locale, at(15, 12)), **kwargs)
    last = build_debit_failure_message(failure(locale, None), **kwargs)
    assert retried["Message-ID"] == "<n@credit.example>"
    assert retried["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    for part in bodies(retried):
        assert "1,018.00" in part and "2027-02-15" in part and "0002" in part and "2027-02-15 08:00" in part
        assert next_words in part and "2027-02-15 12:00" in part and last_words not in part
    for part in bodies(last):
        assert last_words in part and next_words not in part and "00000000" in part
