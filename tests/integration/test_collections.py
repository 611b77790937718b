"""The collections bot's passes against a real PostgreSQL and a real SMTP server
(aiosmtpd): ageing, penalties booked once per day, reminder steps, contact rules.

Unless a test says otherwise the loan is 3,000.00 over 3 months, flat fee, grade B:
three installments of 1,000.00 + 18.00, due 2027-02-15, 03-15 and 04-15 (Shanghai).
The daily penalty on an unpaid 1,018.00 is 5 bps: 50.9, so 0.51."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, date, datetime, timedelta, timezone

import asyncpg
import pytest
from aiosmtpd.controller import Controller
from structlog.testing import capture_logs

from collections_bot.__main__ import build
from collections_bot.config import BotSettings
from collections_bot.mail_sink import MailSink
from collections_bot.mail_sink import start as start_mail_sink
from collections_bot.passes import CollectionsPass
from credit.v1 import collections_pb2, common_pb2
from server.db import collections as collection_rows
from server.db import one
from server.domain.cases import PromiseSource
from tests.support import buy, dated_apr_bps, free_port, key, repay


def shanghai(month, day, hour=10, year=2027):
    return datetime(year, month, day, hour, tzinfo=timezone(timedelta(hours=8)))


@pytest.fixture
def smtp():
    controller, sink = start_mail_sink("127.0.0.1", free_port())
    yield sink, controller.port
    controller.stop()


@pytest.fixture
def bot(pool, clock, smtp) -> CollectionsPass:
    _, port = smtp
    settings = BotSettings.from_env({"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port),
                                     "SMTP_RETRY_BASE_S": "0.01", "SMTP_TRIES_PER_PASS": "3"})
    return build(pool, settings, clock)


@pytest.fixture
async def loan(api):
    account = await api.open_account(limit_minor=1_000_000)
    return await buy(api, account.account_id, 300_000)


async def run(bot, clock, when):
    clock.set(when)
    return await bot.run()


async def attempts(pool, account_id):
    async with pool.acquire() as conn:
        return await conn.fetch(
            "SELECT step_code, sequence, status, reason, tries, message_id FROM contact_attempts "
            "WHERE account_id = $1 ORDER BY created_at, step_code", uuid.UUID(account_id))


async def penalties(pool, loan_id, sequence=1):
    async with pool.acquire() as conn:
        return [(r["accrual_date"], r["amount_minor"]) for r in await conn.fetch(
            "SELECT accrual_date, amount_minor FROM penalty_accruals WHERE loan_id = $1 AND sequence = $2 "
            "ORDER BY accrual_date", uuid.UUID(loan_id), sequence)]


# -- reminders over a real SMTP server ---------------------------------------------------

async def test_an_overdue_loan_gets_exactly_the_strategys_emails(api, bot, clock, loan, smtp, pool, books):
    sink, _ = smtp
    for day in range(10, 26):
        await run(bot, clock, shanghai(2, day))
    sent = {m["Message-ID"].strip(): m for m in sink.messages}
    steps = ["D-3_EMAIL", "D-1_EMAIL", "D+1_EMAIL", "D+7_EMAIL"]
    assert list(sent) == [f"<reminder.{loan.account_id}.2027-02-15.{step}@credit.example>" for step in steps]
    assert len(sink.messages) == 4

    upcoming, overdue = sink.messages[0], sink.messages[3]
    assert upcoming["Subject"] == "您的分期账单 ¥1,018.00 将于 2027-02-15 到期"
    assert upcoming["To"] == "Wang Fang <wang.fang@example.com>"
    assert upcoming["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert upcoming["List-Unsubscribe"].startswith("<https://credit.example/reminders/unsubscribe?account=")
    assert "mailto:unsubscribe@credit.example" in upcoming["List-Unsubscribe"]
    text = upcoming.get_body(("plain",)).get_content()
    html = upcoming.get_body(("html",)).get_content()
    for part in (text, html):
        # 0.6 % a month paid on days 31, 59 and 90 (February is short): 10.92 % a year.
        assert "¥1,018.00" in part and "年化利率" in part and "10.92%" in part
        assert "还款方式" in part
    # Three penalty days (02-19, 20, 21) of 0.51 by the D+7 email on 02-22.
    assert overdue["Subject"] == "您的分期账单 ¥1,019.53 已逾期 7 天"
    assert "逾期违约金 ¥1.53" in overdue.get_body(("plain",)).get_content()

    records = await attempts(pool, loan.account_id)
    voice = {r["step_code"]: (r["status"], r["reason"]) for r in records if "VOICE" in r["step_code"]}
    # This bot has no voice gateway: its voice steps wait (DEFERRED) for a bot that has
    # one, each until the next step supersedes it; none is suppressed for good.
    assert voice == {"D0_VOICE": ("SKIPPED", "SUPERSEDED"),
                     "D+3_VOICE": ("SKIPPED", "SUPERSEDED"),
                     "D+7_VOICE": ("DEFERRED", "CHANNEL_UNAVAILABLE")}
    assert all(r["status"] == "SENT" for r in records if "EMAIL" in r["step_code"])
    await books()


async def test_english_reminders_for_an_english_customer(api, bot, clock, smtp):
    sink, _ = smtp
    account = await api.open_account(limit_minor=1_000_000, locale="en")
    await buy(api, account.account_id, 300_000)
    await run(bot, clock, shanghai(2, 16))
    assert [m["Subject"] for m in sink.messages] == ["Your bill of CNY 1,018.00 is 1 day overdue"]
    body = sink.messages[0].get_body(("plain",)).get_content()
    assert "How to pay" in body and "APR 10.92 %" in body


async def test_after_downtime_only_the_latest_due_step_runs(bot, clock, loan, smtp, pool):
    sink, _ = smtp
    await run(bot, clock, shanghai(2, 23))
    assert [m["Message-ID"].strip() for m in sink.messages] == [
        f"<reminder.{loan.account_id}.2027-02-15.D+7_EMAIL@credit.example>"]
    skipped = {r["step_code"] for r in await attempts(pool, loan.account_id) if r["status"] == "SKIPPED"}
    assert skipped == {"D-3_EMAIL", "D-1_EMAIL", "D0_VOICE", "D+1_EMAIL", "D+3_VOICE"}


async def test_a_4xx_reply_is_retried_then_delivered_once(bot, clock, loan, smtp, pool):
    sink, _ = smtp
    sink.fail_next.extend(["451 4.3.0 Mailbox busy, try later", "421 4.7.0 Too many connections"])
    await run(bot, clock, shanghai(2, 16))
    assert sink.data_commands == 3
    assert len(sink.messages) == 1
    record = next(r for r in await attempts(pool, loan.account_id) if r["step_code"] == "D+1_EMAIL")
    assert (record["status"], record["tries"]) == ("SENT", 1)
    await run(bot, clock, shanghai(2, 16, 11))
    assert len(sink.messages) == 1


async def test_a_4xx_that_outlasts_a_pass_is_tried_again_later(bot, clock, loan, smtp, pool):
    sink, _ = smtp
    sink.fail_next.extend(["451 4.3.0 try later"] * 3)
    await run(bot, clock, shanghai(2, 16))
    record = next(r for r in await attempts(pool, loan.account_id) if r["step_code"] == "D+1_EMAIL")
    assert (record["status"], record["reason"]) == ("PENDING", "SMTP_TEMPORARY")
    await run(bot, clock, shanghai(2, 16, 10) + timedelta(minutes=6))
    assert len(sink.messages) == 1


async def test_a_5xx_reply_is_recorded_as_failed_and_not_retried(bot, clock, loan, smtp, pool):
    sink, _ = smtp
    sink.fail_next.append("550 5.1.1 No such user")
    await run(bot, clock, shanghai(2, 16))
    record = next(r for r in await attempts(pool, loan.account_id) if r["step_code"] == "D+1_EMAIL")
    assert (record["status"], record["reason"]) == ("FAILED", "SMTP_PERMANENT")
    await run(bot, clock, shanghai(2, 17))
    await run(bot, clock, shanghai(2, 18))
    assert sink.data_commands == 1 and sink.messages == []


# -- leases: a claimed attempt is sent and recorded only by its holder ----------------------

async def test_a_bot_that_lost_its_lease_can_neither_renew_nor_record(loan, clock, pool):
    now, lease = clock.now(), timedelta(seconds=5)
    first, second = uuid.uuid4(), uuid.uuid4()
    async with pool.acquire() as conn:
        attempt = one(await collection_rows.insert_attempt(
            conn, attempt_id=uuid.uuid4(), account_id=uuid.UUID(loan.account_id),
            due_date=date.fromisoformat(loan.installments[0].due_date), step_code="D-3_EMAIL", channel="EMAIL",
            status="PENDING", reason=None,
            message_id="<lease-test@credit.example>", planned_for=now.date(), now=now))
        attempt_id = attempt["attempt_id"]

        async def claim(owner, at):
            return await collection_rows.claim_attempts(conn, "EMAIL", now, lease_now=at, lease_until=at + lease,
                                                        owner=owner, limit=10)

        async def row():
            return await conn.fetchrow("SELECT status, lease_owner, lease_until, outcome, detail::text, tries "
                                       "FROM contact_attempts WHERE attempt_id = $1", attempt_id)

        [claimed] = await claim(first, now)
        assert (claimed["status"], claimed["lease_owner"]) == ("SENDING", first)
        assert await claim(second, now + timedelta(seconds=4)) == []  # still the first bot's
        [taken] = await claim(second, now + timedelta(seconds=6))  # its lease ran out
        assert taken["lease_owner"] == second

        assert await collection_rows.renew_leases(conn, [attempt_id], first, now + timedelta(hours=1),
                                                  timeout_s=5) == set()
        assert not await collection_rows.finish_attempt(conn, attempt_id, first, "SENT", now, outcome="DELIVERED",
                                                        detail={"smtp": "accepted"})
        assert tuple(await row()) == ("SENDING", second, now + timedelta(seconds=11), None, "{}", 2)

        # The holder renews and records; after that nobody can record over it.
        assert await collection_rows.renew_leases(conn, [attempt_id], second, now + timedelta(seconds=20),
                                                  timeout_s=5) == {attempt_id}
        assert await collection_rows.finish_attempt(conn, attempt_id, second, "SENT", now, outcome="DELIVERED")
        assert tuple(await row()) == ("SENT", None, None, "DELIVERED", "{}", 2)
        assert not await collection_rows.finish_attempt(conn, attempt_id, second, "FAILED", now, reason="LATE")
        assert (await row())["status"] == "SENT"


class TakeOverWhileReceiving(MailSink):
    """Receives like any server, but while the first message comes in another replica
    takes over every claimed email attempt, as it would once their leases ran out."""

    def __init__(self, dsn: str, now: datetime) -> None:
        super().__init__()
        self.dsn, self.now, self.owner = dsn, now, uuid.uuid4()
        self.taken: list = []

    async def handle_DATA(self, server, session, envelope) -> str:
        if not self.taken:
            conn = await asyncpg.connect(self.dsn)
            try:
                later = self.now + timedelta(hours=1)
                self.taken = await collection_rows.claim_attempts(conn, "EMAIL", self.now, lease_now=later,
                                                                  lease_until=later + timedelta(minutes=2),
                                                                  owner=self.owner, limit=10)
            finally:
                await conn.close()
        return await super().handle_DATA(server, session, envelope)


async def test_a_bot_whose_claim_is_taken_over_records_nothing_and_sends_no_more(api, clock, pool, db_dsn):
    for _ in range(2):
        account = await api.open_account(limit_minor=1_000_000)
        await buy(api, account.account_id, 300_000)
    when = shanghai(2, 12)
    sink = TakeOverWhileReceiving(db_dsn, when)
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        settings = BotSettings.from_env({"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(controller.port),
                                         "SMTP_RETRY_BASE_S": "0.01"})
        with capture_logs() as logs:
            report = await run(build(pool, settings, clock), clock, when)
    finally:
        controller.stop()

    # The first reminder went out before the takeover was seen; the second was not sent.
    assert len(sink.messages) == 1 and len(sink.taken) == 2
    assert report.lease_lost == 2 and not report.delivered
    lost = [entry["stage"] for entry in logs if entry["event"] == "attempt_lease_lost"]
    assert sorted(lost) == ["after_send", "before_send"]
    async with pool.acquire() as conn:
        held = await conn.fetch("SELECT status, lease_owner FROM contact_attempts WHERE channel = 'EMAIL'")
    assert [tuple(r) for r in held] == [("SENDING", sink.owner)] * 2


# -- contact rules ----------------------------------------------------------------------

async def test_nothing_is_sent_outside_the_contact_window_in_the_customers_zone(api, bot, clock, smtp, pool):
    sink, _ = smtp
    account = await api.open_account(limit_minor=1_000_000, time_zone="America/New_York")
    loan = await buy(api, account.account_id, 300_000)
    due = date.fromisoformat(loan.installments[0].due_date)
    new_york = timezone(timedelta(hours=-5))
    # 22:00 in New York is 11:00 in Shanghai: outside the window where the customer is.
    late = datetime(due.year, due.month, due.day, 22, tzinfo=new_york) + timedelta(days=1)
    await run(bot, clock, late)
    assert sink.messages == []
    deferred = [r for r in await attempts(pool, account.account_id) if r["status"] == "DEFERRED"]
    assert [(r["step_code"], r["reason"]) for r in deferred] == [("D+1_EMAIL", "OUTSIDE_CONTACT_WINDOW")]
    await run(bot, clock, late + timedelta(hours=11))  # 09:00 the next morning in New York
    assert len(sink.messages) == 1


async def test_an_opted_out_channel_is_not_used(api, bot, clock, loan, smtp, pool):
    sink, _ = smtp
    await api.collections.SetContactPreferences(collections_pb2.SetContactPreferencesRequest(
        account_id=loan.account_id, email_opt_out=True, idempotency_key=key()))
    await run(bot, clock, shanghai(2, 16))
    assert sink.messages == []
    record = next(r for r in await attempts(pool, loan.account_id) if r["step_code"] == "D+1_EMAIL")
    assert (record["status"], record["reason"]) == ("SUPPRESSED", "OPTED_OUT")


async def test_a_promise_suspends_reminders_and_a_broken_one_escalates(api, bot, clock, loan, smtp, pool, books):
    sink, _ = smtp
    clock.set(shanghai(2, 16, 9))
    promise = await api.collections.RecordPromiseToPay(collections_pb2.RecordPromiseToPayRequest(
        account_id=loan.account_id, promised_date="2027-02-18", amount_minor=101_800, idempotency_key=key()))
    assert (promise.status, promise.source) == (collections_pb2.PROMISE_STATUS_ACTIVE,
                                                collections_pb2.PROMISE_SOURCE_API)
    for day in (16, 17, 18):
        await run(bot, clock, shanghai(2, day))
    assert sink.messages == []
    record = next(r for r in await attempts(pool, loan.account_id) if r["step_code"] == "D+1_EMAIL")
    assert (record["status"], record["reason"]) == ("SUPPRESSED", "PROMISE_ACTIVE")

    await run(bot, clock, shanghai(2, 19))
    case = await api.collections.GetCase(collections_pb2.GetCaseRequest(account_id=loan.account_id))
    assert case.escalated and case.escalation_reason == collections_pb2.ESCALATION_REASON_BROKEN_PROMISE
    assert case.escalation_step_code == ""
    assert not case.HasField("active_promise")
    await run(bot, clock, shanghai(2, 22))
    assert [m["Message-ID"].strip() for m in sink.messages] == [
        f"<reminder.{loan.account_id}.2027-02-15.D+7_EMAIL@credit.example>"]
    await books()


async def test_a_promise_kept_by_payment_ends_quietly(api, bot, clock, loan, smtp):
    clock.set(shanghai(2, 16, 9))
    await api.collections.RecordPromiseToPay(collections_pb2.RecordPromiseToPayRequest(
        account_id=loan.account_id, promised_date="2027-02-18", amount_minor=101_800, idempotency_key=key()))
    clock.set(shanghai(2, 17, 12))
    await repay(api, loan.account_id, 101_800)
    await run(bot, clock, shanghai(2, 19))
    case = await api.collections.GetCase(collections_pb2.GetCaseRequest(account_id=loan.account_id))
    assert not case.escalated and case.bucket == common_pb2.DELINQUENCY_BUCKET_CURRENT


async def test_a_promise_more_than_seven_days_ahead_is_refused(api, clock, loan):
    import grpc

    clock.set(shanghai(2, 16, 9))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await api.collections.RecordPromiseToPay(collections_pb2.RecordPromiseToPayRequest(
            account_id=loan.account_id, promised_date="2027-02-24", amount_minor=100, idempotency_key=key()))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "promised_date" in (error.value.details() or "")


# -- penalties ----------------------------------------------------------------------------

async def test_no_penalty_in_the_grace_period_then_one_per_ended_day(bot, clock, loan, pool, books):
    await run(bot, clock, shanghai(2, 19))  # 02-16, 17, 18 are grace; 02-19 has not ended
    assert await penalties(pool, loan.loan_id) == []
    await run(bot, clock, shanghai(2, 20))
    assert await penalties(pool, loan.loan_id) == [(date(2027, 2, 19), 51)]
    await run(bot, clock, shanghai(2, 20, 15))  # a second pass the same day books nothing
    assert await penalties(pool, loan.loan_id) == [(date(2027, 2, 19), 51)]
    await books()


async def test_the_floor_is_one_fen_a_day(api, bot, clock, pool, books):
    account = await api.open_account(limit_minor=1_000_000)
    small = await buy(api, account.account_id, 100, term_months=1)  # 5 bps of 1.00 is 0.05
    await run(bot, clock, shanghai(2, 21))
    assert await penalties(pool, small.loan_id) == [(date(2027, 2, 19), 1), (date(2027, 2, 20), 1)]
    await books()


async def test_the_total_penalty_stops_at_the_cap(api, bot, clock, pool, books):
    account = await api.open_account(limit_minor=1_000_000)
    small = await buy(api, account.account_id, 100, term_months=1)  # cap: 25 % of 1.00
    await run(bot, clock, shanghai(4, 30))
    booked = await penalties(pool, small.loan_id)
    assert sum(amount for _, amount in booked) == 25 and len(booked) == 25
    await run(bot, clock, shanghai(5, 30))
    assert sum(amount for _, amount in await penalties(pool, small.loan_id)) == 25
    await books()


async def test_ten_days_down_are_caught_up_day_by_day(bot, clock, loan, pool, books):
    await run(bot, clock, shanghai(2, 20))
    await run(bot, clock, shanghai(3, 2))  # the bot was down from 02-20 to 03-02
    booked = await penalties(pool, loan.loan_id)
    assert [d for d, _ in booked] == [date(2027, 2, 19) + timedelta(days=n) for n in range(11)]
    assert all(amount == 51 for _, amount in booked)
    await books()


async def test_penalties_stop_after_payment_and_missed_days_count_what_was_owed(api, bot, clock, loan, pool, books):
    await run(bot, clock, shanghai(2, 20))  # 02-19 booked
    clock.set(shanghai(2, 22, 12))
    paid = await repay(api, loan.account_id, 101_800 + 51)
    assert paid.unapplied_minor == 0
    await run(bot, clock, shanghai(3, 1))
    # 02-20 and 02-21 ended unpaid (the payment came on 02-22): booked late, then nothing.
    assert await penalties(pool, loan.loan_id) == [
        (date(2027, 2, 19), 51), (date(2027, 2, 20), 51), (date(2027, 2, 21), 51)]
    after = await api.loan(loan.loan_id)
    assert (after.installments[0].penalty_minor, after.installments[0].owed_minor) == (153, 102)
    await books()


async def test_a_waived_penalty_leaves_the_books_and_is_not_booked_again(api, bot, clock, loan, pool, books):
    await run(bot, clock, shanghai(2, 22))  # 02-19, 20, 21
    waived = await api.collections.WaivePenalty(collections_pb2.WaivePenaltyRequest(
        loan_id=loan.loan_id, sequence=1, amount_minor=153, reason="hospital stay", idempotency_key=key()))
    assert waived.installments[0].penalty_minor == 0
    await run(bot, clock, shanghai(2, 22, 15))
    assert (await api.loan(loan.loan_id)).installments[0].penalty_minor == 0
    await run(bot, clock, shanghai(2, 23))
    assert (await api.loan(loan.loan_id)).installments[0].penalty_minor == 51  # only the new day 02-22
    await books()


async def test_repayment_pays_penalties_first(api, bot, clock, loan, books):
    await run(bot, clock, shanghai(2, 22))
    clock.set(shanghai(2, 22, 12))
    paid = await repay(api, loan.account_id, 1_000)
    assert [(a.component, a.amount_minor) for a in paid.allocations] == [
        (1, 153), (2, 847)]  # PENALTY then FEE
    await books()


# -- ageing and charge-off ----------------------------------------------------------------

async def test_buckets_follow_days_past_due_and_changes_are_recorded(api, bot, clock, loan, pool):
    for when, expected in ((shanghai(2, 16), "M1"), (shanghai(3, 18), "M2"), (shanghai(4, 17), "M3")):
        await run(bot, clock, when)
        case = await api.collections.GetCase(collections_pb2.GetCaseRequest(account_id=loan.account_id))
        assert common_pb2.DelinquencyBucket.Name(case.bucket) == "DELINQUENCY_BUCKET_" + expected
    async with pool.acquire() as conn:
        changes = await conn.fetch("SELECT detail FROM case_events WHERE account_id = $1 AND kind = 'BUCKET_CHANGED' "
                                   "ORDER BY event_id", uuid.UUID(loan.account_id))
    assert [c["detail"] for c in changes] and len(changes) == 3


async def test_a_loan_180_days_past_due_is_charged_off_in_the_ledger(api, bot, clock, loan, pool, books):
    due = shanghai(2, 15)
    await run(bot, clock, due + timedelta(days=179))
    assert (await api.loan(loan.loan_id)).status == common_pb2.LOAN_STATUS_ACTIVE
    await run(bot, clock, due + timedelta(days=180))
    after = await api.loan(loan.loan_id)
    assert after.status == common_pb2.LOAN_STATUS_CHARGED_OFF
    account = await api.account(loan.account_id)
    assert account.status == common_pb2.ACCOUNT_STATUS_CLOSED
    assert account.outstanding_principal_minor == 0
    case = await api.collections.GetCase(collections_pb2.GetCaseRequest(account_id=loan.account_id))
    assert case.bucket == common_pb2.DELINQUENCY_BUCKET_CHARGED_OFF
    async with pool.acquire() as conn:
        written_off = await conn.fetchval(
            "SELECT sum(p.amount_minor) FROM postings p JOIN journal_entries e USING (entry_id) "
            "WHERE p.account_id = $1 AND p.ledger_account = 'RISK_RESERVE' AND e.kind = 'LOAN_CHARGED_OFF'",
            uuid.UUID(loan.account_id))
    assert written_off >= 300_000
    await books()


# -- the CollectionsService ------------------------------------------------------------------

async def test_list_cases_by_bucket_in_bounded_pages(api, bot, clock):
    import grpc

    accounts = []
    for _ in range(3):
        account = await api.open_account(limit_minor=1_000_000)
        await buy(api, account.account_id, 300_000)
        accounts.append(account.account_id)
    await run(bot, clock, shanghai(2, 20))
    seen, token = [], ""
    while True:
        page = await api.collections.ListCases(collections_pb2.ListCasesRequest(
            bucket=common_pb2.DELINQUENCY_BUCKET_M1, page_size=2, page_token=token))
        assert len(page.cases) <= 2
        assert all(c.bucket == common_pb2.DELINQUENCY_BUCKET_M1 and c.days_past_due == 5 for c in page.cases)
        seen += [c.account_id for c in page.cases]
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted(accounts)
    empty = await api.collections.ListCases(collections_pb2.ListCasesRequest(bucket=common_pb2.DELINQUENCY_BUCKET_M3))
    assert list(empty.cases) == []
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await api.collections.ListCases(collections_pb2.ListCasesRequest(page_size=500))
    assert "page_size" in (error.value.details() or "")


async def test_contact_attempts_are_listed_in_pages_with_their_outcomes(api, bot, clock, loan, smtp):
    for day in (12, 14, 15, 16):
        await run(bot, clock, shanghai(2, day))
    seen, token = [], ""
    while True:
        page = await api.collections.ListContactAttempts(collections_pb2.ListContactAttemptsRequest(
            account_id=loan.account_id, page_size=2, page_token=token))
        seen += [(a.planned_for, a.step_code, collections_pb2.ContactAttemptStatus.Name(a.status),
                  collections_pb2.ContactAttemptReason.Name(a.reason), collections_pb2.ContactOutcome.Name(a.outcome))
                 for a in page.attempts]
        token = page.next_page_token
        if not token:
            break
    # In step order, with enums: the voice step waited for a bot with a voice gateway
    # until the next day's step superseded it.
    assert seen == [
        ("2027-02-12", "D-3_EMAIL", "CONTACT_ATTEMPT_STATUS_SENT", "CONTACT_ATTEMPT_REASON_UNSPECIFIED",
         "CONTACT_OUTCOME_DELIVERED"),
        ("2027-02-14", "D-1_EMAIL", "CONTACT_ATTEMPT_STATUS_SENT", "CONTACT_ATTEMPT_REASON_UNSPECIFIED",
         "CONTACT_OUTCOME_DELIVERED"),
        ("2027-02-15", "D0_VOICE", "CONTACT_ATTEMPT_STATUS_SKIPPED", "CONTACT_ATTEMPT_REASON_SUPERSEDED",
         "CONTACT_OUTCOME_UNSPECIFIED"),
        ("2027-02-16", "D+1_EMAIL", "CONTACT_ATTEMPT_STATUS_SENT", "CONTACT_ATTEMPT_REASON_UNSPECIFIED",
         "CONTACT_OUTCOME_DELIVERED")]
    assert all(a.channel for a in page.attempts)


async def test_one_active_promise_per_account_and_clear_errors(api, clock, loan):
    import grpc

    clock.set(shanghai(2, 16, 9))
    request = collections_pb2.RecordPromiseToPayRequest(account_id=loan.account_id, promised_date="2027-02-18",
                                                        amount_minor=101_800, idempotency_key=key())
    first = await api.collections.RecordPromiseToPay(request)
    assert await api.collections.RecordPromiseToPay(request) == first  # a retry, same key
    request.idempotency_key = key()
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await api.collections.RecordPromiseToPay(request)
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await api.collections.GetCase(collections_pb2.GetCaseRequest(account_id=str(uuid.uuid4())))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await api.collections.WaivePenalty(collections_pb2.WaivePenaltyRequest(
            loan_id=loan.loan_id, sequence=1, amount_minor=1, reason="r", idempotency_key=key()))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "amount_minor" in (error.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await api.collections.WaivePenalty(collections_pb2.WaivePenaltyRequest(
            loan_id=loan.loan_id, sequence=9, amount_minor=1, reason="r", idempotency_key=key()))
    assert "sequence" in (error.value.details() or "")


async def test_a_promise_needs_something_owed(api, clock):
    import grpc

    account = await api.open_account(limit_minor=1_000_000)
    clock.set(shanghai(2, 16, 9))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await api.collections.RecordPromiseToPay(collections_pb2.RecordPromiseToPayRequest(
            account_id=account.account_id, promised_date="2027-02-18", amount_minor=10_000,
            idempotency_key=key()))
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "owes nothing" in (error.value.details() or "")


async def test_list_cases_shows_the_bucket_it_filtered_on_and_says_as_of_when(api, bot, clock, loan):
    """ListCases is the snapshot of each case's last review: filtered and shown on the
    same bucket, with as_of the review's time; GetCase computes the case afresh, as of
    the call."""
    reviewed_at = shanghai(2, 20)
    await run(bot, clock, reviewed_at)
    clock.set(shanghai(3, 30))  # 43 days past due by now: M2 afresh, still M1 as last reviewed
    listed = await api.collections.ListCases(collections_pb2.ListCasesRequest(bucket=common_pb2.DELINQUENCY_BUCKET_M1))
    [case] = [c for c in listed.cases if c.account_id == loan.account_id]
    assert (case.bucket, case.days_past_due) == (common_pb2.DELINQUENCY_BUCKET_M1, 5)
    assert case.as_of.ToDatetime(tzinfo=UTC) == reviewed_at
    assert case.overdue_minor > 0 and case.penalty_owed_minor > 0
    now = await api.collections.GetCase(collections_pb2.GetCaseRequest(account_id=loan.account_id))
    assert (now.bucket, now.days_past_due) == (common_pb2.DELINQUENCY_BUCKET_M2, 43)
    assert now.as_of.ToDatetime(tzinfo=UTC) == shanghai(3, 30)
    m2 = await api.collections.ListCases(collections_pb2.ListCasesRequest(bucket=common_pb2.DELINQUENCY_BUCKET_M2))
    assert loan.account_id not in [c.account_id for c in m2.cases]


async def test_one_account_whose_review_fails_does_not_stop_the_pass(api, bot, clock, loan, monkeypatch):
    other = await api.open_account(limit_minor=1_000_000)
    other_loan = await buy(api, other.account_id, 300_000)
    review_account = type(bot._collections).review_account

    async def review_or_fail(self, conn, account, now, channels, steps):
        if str(account["account_id"]) == loan.account_id:
            raise ValueError("a bug in one account's review")
        return await review_account(self, conn, account, now, channels, steps)

    monkeypatch.setattr(type(bot._collections), "review_account", review_or_fail)
    with capture_logs() as logs:
        report = await run(bot, clock, shanghai(2, 20))
    assert (report.reviewed, report.failed) == (1, 1)
    assert [entry["account_id"] for entry in logs if entry["event"] == "account_review_failed"] == [loan.account_id]
    case = await api.collections.ListCases(collections_pb2.ListCasesRequest())
    assert [c.account_id for c in case.cases] == [other_loan.account_id]


async def test_starttls_and_login_when_configured(api, pool, clock, tmp_path):
    """Against an SMTP server that requires STARTTLS and a login: the certificate is
    checked against SMTP_CA_FILE and the password only travels encrypted."""
    import ssl
    import subprocess

    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    from collections_bot.mail_sink import MailSink

    cert, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key_file),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key_file)
    logins = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        logins.append((auth_data.login, session.ssl is not None))
        return AuthResult(success=(auth_data.login, auth_data.password) == (b"bot", b"s3cret"))

    sink = MailSink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True,
                            auth_required=True, auth_require_tls=True, authenticator=authenticator)
    controller.start()
    try:
        account = await api.open_account(limit_minor=1_000_000)
        await buy(api, account.account_id, 300_000)
        env = {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port), "SMTP_STARTTLS": "on", "SMTP_USERNAME": "bot",
               "SMTP_PASSWORD": "wrong", "SMTP_CA_FILE": str(cert), "SMTP_RETRY_BASE_S": "0.01",
               "SMTP_TRIES_PER_PASS": "1"}
        # A refused login is our setting, not the reminder's fault: it waits, it does not fail.
        await run(build(pool, BotSettings.from_env(env), clock), clock, shanghai(2, 16))
        assert [(r["step_code"], r["status"], r["reason"]) for r in await attempts(pool, account.account_id)
                if r["status"] != "SKIPPED"] == [("D+1_EMAIL", "PENDING", "SMTP_TEMPORARY")]
        await run(build(pool, BotSettings.from_env({**env, "SMTP_PASSWORD": "s3cret"}), clock),
                  clock, shanghai(2, 16, 11))
        assert len(sink.messages) == 1
        assert logins == [(b"bot", True), (b"bot", True)]
    finally:
        controller.stop()


def test_a_login_without_starttls_is_refused_at_start():
    from server.config import SettingsError

    with pytest.raises(SettingsError, match="SMTP_STARTTLS"):
        BotSettings.from_env({"SMTP_USERNAME": "bot", "SMTP_PASSWORD": "x"})


async def test_a_charge_off_is_written_off_against_the_reserve_with_the_insured_share_claimed(
        api, pool, clock, smtp, books):
    from credit.v1 import risk_pb2

    _, port = smtp
    settings = BotSettings.from_env({"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port), "INSURANCE_SHARE_BPS": "5000"})
    bot = build(pool, settings, clock)
    account = await api.open_account(limit_minor=1_000_000)
    await buy(api, account.account_id, 300_000)
    before = await api.risk.GetReservePool(risk_pb2.GetReservePoolRequest())
    await run(bot, clock, shanghai(2, 15) + timedelta(days=180))
    after = await api.risk.GetReservePool(risk_pb2.GetReservePoolRequest())
    written_off = after.written_off_minor - before.written_off_minor
    assert written_off >= 300_000  # all the principal, and the penalties booked
    assert after.insurance_claims_minor - before.insurance_claims_minor == 150_000
    assert after.balance_minor == before.balance_minor - written_off + 150_000
    await books()


# -- the core's contact attempts ----------------------------------------------------------------

async def test_attempts_list_in_step_order_whatever_order_they_were_planned_in(api, bot, clock, loan, pool):
    """Planned out of order (the later step first): listed by the day each step is for."""
    from server.domain.reminders import AttemptStatus, Channel, Step

    attempts = bot._collections.attempts
    account_id = uuid.UUID(loan.account_id)
    due = date(2027, 2, 15)
    steps = [Step("D+7_EMAIL", 7, Channel.EMAIL, "overdue"), Step("D0_VOICE", 0, Channel.VOICE, "due_today"),
             Step("D-3_EMAIL", -3, Channel.EMAIL, "upcoming")]
    async with pool.acquire() as conn:
        for minute, step in enumerate(steps):
            assert await attempts.plan(conn, account_id, due, step, AttemptStatus.PENDING, None, None,
                                       clock.now() + timedelta(minutes=minute))
    listed = await api.collections.ListContactAttempts(collections_pb2.ListContactAttemptsRequest(
        account_id=loan.account_id))
    assert [(a.planned_for, a.step_code) for a in listed.attempts] == [
        ("2027-02-12", "D-3_EMAIL"), ("2027-02-15", "D0_VOICE"), ("2027-02-22", "D+7_EMAIL")]
    assert {(a.due_date, a.loan_id, a.sequence) for a in listed.attempts} == {("2027-02-15", "", 0)}


async def test_a_calls_promise_waits_for_one_recorded_meanwhile_and_never_collides(bot, clock, loan, pool, db_dsn):
    """RecordPromiseToPay commits while a call's outcome is being recorded: the call waits
    for the account, sees the promise, records its outcome, and opens no second one."""
    import asyncio

    from server.core import promises
    from server.domain.reminders import Channel, Outcome

    attempts = bot._collections.attempts
    now = shanghai(2, 15)
    clock.set(now)
    channels = frozenset(Channel)
    await bot._collections.review_due_accounts(pool, now, channels, batch_size=10)
    owner = uuid.uuid4()
    [call] = await attempts.claim(pool, Channel.VOICE, now, lease_now=now, lease_until=now + timedelta(minutes=5),
                                  owner=owner, limit=10)
    context = await attempts.context(pool, call, owner, now, channels)
    account_id = uuid.UUID(loan.account_id)
    api_side = await asyncpg.connect(db_dsn)
    try:
        transaction = api_side.transaction()
        await transaction.start()
        await api_side.execute("UPDATE accounts SET version = version WHERE account_id = $1", account_id)
        await promises.open_promise(api_side, account_id, date(2027, 2, 17), 50_000, PromiseSource.API, now)
        recording = asyncio.create_task(attempts.record_call(pool, context, owner, now, Outcome.PROMISE_TO_PAY,
                                                             date(2027, 2, 16), []))
        await asyncio.sleep(0.3)
        assert not recording.done()  # waiting for the account
        await transaction.commit()
        assert await asyncio.wait_for(recording, 10)
    finally:
        await api_side.close()
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM promises WHERE account_id = $1", account_id) == 1
        assert await conn.fetchval("SELECT status FROM contact_attempts WHERE attempt_id = $1",
                                   call.attempt_id) == "SENT"


# -- one bill a month: every loan of an account on one bill, one set of reminders ---------

async def test_three_loans_bought_on_different_days_make_one_bill_a_month(api, bot, clock, smtp, pool, books):
    """Statement day 5, bills due 14 days later (the tests' PAYMENT_DUE_DAYS): purchases
    on 3 Jan, 17 Jan and 2 Feb are billed on 5 Jan, 5 Feb and 5 Feb, so their
    installments fall due on the 19th of each month together."""
    sink, _ = smtp
    clock.set(shanghai(1, 2))
    account = await api.open_account(limit_minor=2_000_000, statement_day=5)
    loans = []
    for month, day, amount in ((1, 3, 300_000), (1, 17, 450_000), (2, 2, 120_000)):
        clock.set(shanghai(month, day))
        loans.append(await buy(api, account.account_id, amount))
        if day == 17:
            # The first loan's January bill is paid the day before it falls due.
            clock.set(shanghai(1, 18))
            await repay(api, account.account_id, 100_000 + 929)
    assert [[i.due_date for i in loan.installments] for loan in loans] == [
        ["2027-01-19", "2027-02-19", "2027-03-19"],
        ["2027-02-19", "2027-03-19", "2027-04-19"],
        ["2027-02-19", "2027-03-19", "2027-04-19"]]

    # Each APR is the IRR of its own dated cash flows, as an independent solver finds it.
    purchases = [date(2027, 1, 3), date(2027, 1, 17), date(2027, 2, 2)]
    for loan, bought in zip(loans, purchases, strict=True):
        payments = [i.principal_minor + i.fee_minor for i in loan.installments]
        days = [(date.fromisoformat(i.due_date) - bought).days for i in loan.installments]
        assert abs(loan.apr_bps - dated_apr_bps(loan.principal_minor, payments, days)) <= 1
    # The first fees are by days: 16 of 31 (3 Jan to 19 Jan, reference month 19 Dec to
    # 19 Jan), 33 of 31 and 17 of 31; the later ones a whole month's 0.6 %.
    assert [loan.installments[0].fee_minor for loan in loans] == [929, 2_874, 395]
    assert [loan.installments[1].fee_minor for loan in loans] == [1_800, 2_700, 720]

    # The February bill goes unpaid.
    for day in range(14, 24):
        await run(bot, clock, shanghai(2, day))

    async with pool.acquire() as conn:
        records = await conn.fetch(
            "SELECT due_date, step_code, loan_id, status FROM contact_attempts WHERE account_id = $1",
            uuid.UUID(account.account_id))
    per_step = Counter((r["due_date"], r["step_code"]) for r in records)
    assert {due for due, _ in per_step} == {date(2027, 2, 19)}, "the paid January bill needs no reminder"
    assert set(per_step.values()) == {1}, "a step was taken more than once for one bill"
    assert {code for _, code in per_step} == {"D-3_EMAIL", "D-1_EMAIL", "D0_VOICE", "D+1_EMAIL", "D+3_VOICE"}
    assert all(r["loan_id"] is None for r in records)

    ids = [m["Message-ID"].strip() for m in sink.messages]
    assert ids == [f"<reminder.{account.account_id}.2027-02-19.{step}@credit.example>"
                   for step in ("D-3_EMAIL", "D-1_EMAIL", "D+1_EMAIL")]
    bill_minor = sum(loan.installments[k].principal_minor + loan.installments[k].fee_minor
                     for loan, k in ((loans[0], 1), (loans[1], 0), (loans[2], 0)))
    upcoming = sink.messages[0]
    assert upcoming["Subject"] == f"您的分期账单 ¥{bill_minor // 100:,}.{bill_minor % 100:02d} 将于 2027-02-19 到期"
    text = upcoming.get_body(("plain",)).get_content()
    for loan, k in ((loans[0], 2), (loans[1], 1), (loans[2], 1)):
        assert f"订单 {loan.order_id} 第 {k}/3 期" in text
    await books()


async def test_a_partly_paid_bill_stays_past_due_until_all_of_it_is_paid(api, bot, clock, smtp, pool, books):
    """Two loans on one bill; a payment after the due date that covers one of them. The
    older loan's installment is paid first (the waterfall, oldest loan first on a due
    date); the bill stays past due from its due date, the rest bears penalties, and the
    next reminder asks for what is left."""
    sink, _ = smtp
    clock.set(shanghai(1, 2))
    account = await api.open_account(limit_minor=2_000_000, statement_day=5)
    clock.set(shanghai(1, 10))
    first = await buy(api, account.account_id, 300_000)
    clock.set(shanghai(1, 20))
    second = await buy(api, account.account_id, 300_000)
    assert first.installments[0].due_date == second.installments[0].due_date == "2027-02-19"

    clock.set(shanghai(2, 21))
    await repay(api, account.account_id, first.installments[0].principal_minor + first.installments[0].fee_minor)
    case = await api.collections.GetCase(collections_pb2.GetCaseRequest(account_id=account.account_id), timeout=10)
    assert case.days_past_due == 2
    left = second.installments[0].principal_minor + second.installments[0].fee_minor
    assert case.overdue_minor == left

    for day in range(21, 28):
        await run(bot, clock, shanghai(2, day))
    case = await api.collections.GetCase(collections_pb2.GetCaseRequest(account_id=account.account_id), timeout=10)
    assert case.days_past_due == 8
    # Grace ends after 22 Feb: 23 to 26 Feb bear 5 bps a day on the unpaid second loan.
    assert await penalties(pool, second.loan_id) == [(date(2027, 2, d), divide(left * 5)) for d in range(23, 27)]
    assert await penalties(pool, first.loan_id) == []
    # The week-late email (26 Feb) asks for the second loan's installment only.
    reminder = next(m for m in sink.messages if "D+7_EMAIL" in m["Message-ID"])
    text = reminder.get_body(("plain",)).get_content()
    assert f"订单 {second.order_id} 第 1/3 期" in text and f"订单 {first.order_id}" not in text
    await books()


def divide(numerator: int) -> int:
    """A daily penalty: numerator / 10,000 half-up, at least 1 fen."""
    return max(1, (2 * numerator + 10_000) // 20_000)
