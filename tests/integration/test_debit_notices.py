"""The notice of a failed auto-debit, end to end: a real PostgreSQL, the payment-gateway
simulator over gRPC (an instrument token ending in 2 has too little money, in 3 is no
longer valid, in 0 pays) and a real SMTP server (aiosmtpd). Each round is what the
daemon does: the auto-debits due, then the collections pass that plans and sends.

The loan is 3,000.00 over 3 months, in Shanghai: installments of 1,018.00."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import date, timedelta

import pytest

from collections_bot.__main__ import build
from collections_bot.config import BotSettings
from collections_bot.passes import CollectionsPass
from credit.v1 import collections_pb2
from server.invariants import check
from tests.integration.test_auto_debit import INSTALLMENT, _bot, borrower
from tests.integration.test_collections import smtp  # noqa: F401 (a fixture)
from tests.support import bind, debit_orders, morning, repay

NOTICE = "AUTO_DEBIT_FAILED_"


@pytest.fixture
def collections(pool, clock, smtp) -> CollectionsPass:  # noqa: F811
    return replica(pool, clock, smtp)


def replica(pool, clock, smtp, **env: str) -> CollectionsPass:  # noqa: F811
    """A collections bot of its own (as another replica would be) on the test's SMTP server."""
    _, port = smtp
    settings = BotSettings.from_env({"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port),
                                     "SMTP_RETRY_BASE_S": "0.01", "SMTP_TRIES_PER_PASS": "3", **env})
    return build(pool, settings, clock)


@pytest.fixture
def debits(pool, clock, gateway):
    return _bot(pool, clock, gateway)


@pytest.fixture
def round_at(pool, clock, debits, collections):
    return rounds(pool, clock, debits, collections)


def rounds(pool, clock, debits, collections):
    """Rounds of the bot at given times (its auto-debits, then its collections pass): what
    its auto-debits did."""
    async def round_at(when) -> Counter:
        clock.set(when)
        debited = await debits.debit()
        await collections.run()
        return debited

    return round_at


async def a_notice_waiting(api, pool, smtp, round_at) -> tuple[str, str]:  # noqa: F811
    """A failed first try whose notice the SMTP server turns away for now (it waits to be
    tried again): (account id, due date)."""
    sink, _ = smtp
    account_id, loan = await borrower(api, "card-6222-0000-0002")
    due = loan.installments[0].due_date
    sink.fail_next.extend(["451 4.3.0 try again later"] * 3)
    assert await round_at(morning(due, 8)) == Counter(completed=1)
    assert [(n["status"], n["reason"]) for n in await notices(pool, account_id)] == [("PENDING", "SMTP_TEMPORARY")]
    return account_id, due


async def notices(pool, account_id: str) -> list:
    async with pool.acquire() as conn:
        return await conn.fetch(
            "SELECT step_code, status, reason, tries, message_id, payment_order_id, planned_for "
            "FROM contact_attempts WHERE account_id = $1 AND payment_order_id IS NOT NULL "
            "ORDER BY created_at, step_code", uuid.UUID(account_id))


def parts(message) -> list[str]:
    return [message.get_body((kind,)).get_content() for kind in ("plain", "html")]


def notice_id(account_id: str, due: str, attempt: int) -> str:
    return f"<reminder.{account_id}.{due}.{NOTICE}{attempt}@credit.example>"


async def test_a_failed_debit_sends_one_notice_with_its_figures_and_next_try(
        api, pool, clock, smtp, round_at, ledger_checked):  # noqa: F811
    sink, _ = smtp
    account_id, loan = await borrower(api, "card-6222-0000-0002")
    due = loan.installments[0].due_date
    assert await round_at(morning(due, 8)) == Counter(completed=1)
    (order,) = await debit_orders(pool, account_id)
    assert (order["status"], order["failure_reason"]) == ("FAILED", "INSUFFICIENT_FUNDS")

    (message,) = sink.messages
    assert message["Message-ID"].strip() == notice_id(account_id, due, 1)
    assert message["Subject"] == f"您的分期账单自动扣款 ¥1,018.00 未成功（截至 {due} 应还）"
    assert message["To"] == "Wang Fang <wang.fang@example.com>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    for part in parts(message):
        assert "¥1,018.00" in part and due in part
        assert "余额不足" in part and "尾号 0002" in part
        # The next try: 4 hours after the failure, local time.
        assert f"{due} 12:00" in part and "再次自动扣款" in part
        assert "还款" in part and "card-6222" not in part
    (notice,) = await notices(pool, account_id)
    assert (notice["step_code"], notice["status"], notice["tries"]) == (f"{NOTICE}1", "SENT", 1)
    assert notice["payment_order_id"] == order["order_id"] and notice["planned_for"].isoformat() == due

    # Another round of this bot, and a second replica, send nothing more.
    assert await round_at(morning(due, 8, 30)) == Counter()
    clock.set(morning(due, 9))
    await replica(pool, clock, smtp).run()
    assert len(sink.messages) == 1

    # The API lists it among the account's contact attempts, as a notice of its order.
    page = await api.collections.ListContactAttempts(collections_pb2.ListContactAttemptsRequest(
        account_id=account_id, page_size=50))
    (listed,) = [a for a in page.attempts if a.kind == collections_pb2.CONTACT_ATTEMPT_KIND_DEBIT_FAILED]
    assert (listed.step_code, listed.payment_order_id, listed.status, listed.due_date) == (
        f"{NOTICE}1", str(order["order_id"]), collections_pb2.CONTACT_ATTEMPT_STATUS_SENT, due)
    assert {a.kind for a in page.attempts if a.step_code != listed.step_code} == {
        collections_pb2.CONTACT_ATTEMPT_KIND_REMINDER}
    await ledger_checked()


async def test_two_replicas_at_once_send_one_notice(api, pool, clock, smtp, debits):  # noqa: F811
    sink, _ = smtp
    account_id, loan = await borrower(api, "card-6222-0000-0002")
    due = loan.installments[0].due_date
    clock.set(morning(due, 8))
    assert await debits.debit() == Counter(completed=1)
    await asyncio.gather(*(replica(pool, clock, smtp).run() for _ in range(2)))
    assert [m["Message-ID"].strip() for m in sink.messages] == [notice_id(account_id, due, 1)]
    assert [(n["step_code"], n["status"]) for n in await notices(pool, account_id)] == [(f"{NOTICE}1", "SENT")]


async def test_a_debit_that_fails_then_succeeds_on_retry_sends_one_notice(
        api, pool, smtp, round_at, ledger_checked):  # noqa: F811
    sink, _ = smtp
    account_id, loan = await borrower(api, "card-6222-0000-0002", locale="en")
    due = loan.installments[0].due_date
    assert await round_at(morning(due, 8)) == Counter(completed=1)
    # Told, the customer binds a card with money on it before the next try.
    await bind(api, account_id, "card-6222-0000-0010", auto_debit=True)
    assert await round_at(morning(due, 12, 1)) == Counter(completed=1)
    assert await round_at(morning(date.fromisoformat(due) + timedelta(days=1), 9)) == Counter()
    assert [(o["attempt"], o["status"]) for o in await debit_orders(pool, account_id)] == [
        (1, "FAILED"), (2, "SUCCEEDED")]

    (message,) = sink.messages
    assert message["Subject"] == f"Auto-debit of CNY 1,018.00 due by {due} failed"
    for part in parts(message):
        assert "not enough money" in part and "ending in 0002" in part and f"{due} 12:00" in part
    assert [(n["step_code"], n["status"]) for n in await notices(pool, account_id)] == [(f"{NOTICE}1", "SENT")]
    await ledger_checked()


async def test_the_last_failure_says_there_is_no_further_automatic_try(
        api, pool, smtp, round_at, ledger_checked):  # noqa: F811
    sink, _ = smtp
    account_id, loan = await borrower(api, "card-6222-0000-0003")
    due = loan.installments[0].due_date
    next_day = date.fromisoformat(due) + timedelta(days=1)
    for when in (morning(due, 8), morning(due, 12, 30), morning(next_day, 9)):
        assert await round_at(when) == Counter(completed=1)
    assert await round_at(morning(next_day, 15)) == Counter()

    told = {m["Message-ID"].strip(): m for m in sink.messages if NOTICE in m["Message-ID"]}
    assert list(told) == [notice_id(account_id, due, n) for n in (1, 2, 3)]
    first, second, last = told.values()
    for part in parts(first):
        assert "已失效" in part and "尾号 0003" in part and f"{due} 12:00" in part
        # A card that is no longer valid cannot be topped up: bind another.
        assert "已无法使用" in part and "绑定其他银行卡" in part and "充值" not in part
    # The second try failed at 12:30: the third is the next morning at AUTO_DEBIT_HOUR.
    for part in parts(second):
        assert f"{next_day.isoformat()} 08:00" in part
    for part in parts(last):
        assert "将不再自动扣款" in part and "再次自动扣款" not in part and "还款" in part
    # Within the caps: two notices on the due date; the third and the D+1 reminder the next day.
    assert len(sink.messages) == 4
    assert [(n["step_code"], n["status"]) for n in await notices(pool, account_id)] == [
        (f"{NOTICE}{n}", "SENT") for n in (1, 2, 3)]
    await ledger_checked()


async def test_a_bill_paid_while_its_notice_waits_to_be_sent_suppresses_it(
        api, pool, smtp, round_at, ledger_checked):  # noqa: F811
    sink, _ = smtp
    account_id, due = await a_notice_waiting(api, pool, smtp, round_at)
    await repay(api, account_id, INSTALLMENT)
    assert await round_at(morning(due, 8, 30)) == Counter()
    assert [(n["status"], n["reason"]) for n in await notices(pool, account_id)] == [("SUPPRESSED", "PAID")]
    assert sink.messages == []
    await ledger_checked()


async def test_a_bill_paid_before_the_pass_that_would_tell_of_its_failed_debit_is_not_told(
        api, pool, clock, smtp, debits, round_at, ledger_checked):  # noqa: F811
    sink, _ = smtp
    account_id, loan = await borrower(api, "card-6222-0000-0002")
    due = loan.installments[0].due_date
    clock.set(morning(due, 8))
    assert await debits.debit() == Counter(completed=1)
    await repay(api, account_id, INSTALLMENT)
    assert await round_at(morning(due, 8, 5)) == Counter()
    assert await notices(pool, account_id) == []
    assert sink.messages == []
    await ledger_checked()


async def test_the_checker_finds_a_notice_that_names_no_failed_debit_of_its_bill(api, pool, round_at):
    account_id, loan = await borrower(api, "card-6222-0000-0002")
    assert await round_at(morning(loan.installments[0].due_date, 8)) == Counter(completed=1)
    rule = "a debit-failure notice names a FAILED debit of its bill"
    async with pool.acquire() as conn:
        assert [v for v in await check(conn) if v.rule == rule] == []
        await conn.execute("UPDATE contact_attempts SET step_code = 'AUTO_DEBIT_FAILED_2' "
                           "WHERE account_id = $1 AND payment_order_id IS NOT NULL", uuid.UUID(account_id))
        assert [v.rule for v in await check(conn) if v.rule == rule] == [rule]
        # A notice's step that names no order at all would go out as a plain reminder.
        await conn.execute("UPDATE contact_attempts SET payment_order_id = NULL "
                           "WHERE account_id = $1 AND payment_order_id IS NOT NULL", uuid.UUID(account_id))
        assert [v.rule for v in await check(conn) if v.rule == rule] == [rule]


async def test_a_notice_that_could_not_go_out_before_the_try_it_announces_is_dropped(
        api, pool, smtp, round_at, ledger_checked):  # noqa: F811
    sink, _ = smtp
    account_id, due = await a_notice_waiting(api, pool, smtp, round_at)
    # The bot is away until three days later, when the due date is out of reach: the
    # retry the notice announces (12:00 on the due date) never came. It is not sent.
    assert await round_at(morning(date.fromisoformat(due) + timedelta(days=3), 9)) == Counter()
    assert [(o["attempt"], o["status"]) for o in await debit_orders(pool, account_id)] == [(1, "FAILED")]
    assert [(n["status"], n["reason"]) for n in await notices(pool, account_id)] == [("SKIPPED", "SUPERSEDED")]
    assert not [m for m in sink.messages if NOTICE in m["Message-ID"]]
    await ledger_checked()


async def test_a_notice_held_back_by_the_cap_still_goes_out_the_next_day(
        api, pool, clock, smtp, debits, ledger_checked):  # noqa: F811
    sink, _ = smtp
    round_at = rounds(pool, clock, debits, replica(pool, clock, smtp, EMAIL_MAX_PER_DAY="1"))
    account_id, loan = await borrower(api, "card-6222-0000-0003")
    due = date.fromisoformat(loan.installments[0].due_date)
    for when in (morning(due, 8), morning(due, 12), morning(due + timedelta(days=1), 8)):
        assert await round_at(when) == Counter(completed=1)
    # The last try's notice finds the day's one email taken (the D+1 reminder): it waits.
    got = {n["step_code"]: (n["status"], n["reason"]) for n in await notices(pool, account_id)}
    assert got[f"{NOTICE}3"] == ("DEFERRED", "FREQUENCY_CAP")
    for when in (morning(due + timedelta(days=2), 8, 5), morning(due + timedelta(days=2), 12)):
        await round_at(when)
    got = {n["step_code"]: (n["status"], n["reason"]) for n in await notices(pool, account_id)}
    assert got[f"{NOTICE}3"] == ("SENT", None)
    (last,) = [m for m in sink.messages if m["Message-ID"].strip() == notice_id(account_id, due.isoformat(), 3)]
    assert all("将不再自动扣款" in part for part in parts(last))
    await ledger_checked()


async def test_the_notice_states_all_that_is_due_by_its_bill_and_the_card_the_next_try_uses(
        api, pool, clock, smtp, debits, ledger_checked):  # noqa: F811
    sink, _ = smtp
    round_at = rounds(pool, clock, debits, replica(pool, clock, smtp, EMAIL_MAX_PER_DAY="10"))
    account_id, loan = await borrower(api, "card-6222-0000-0002", locale="en")
    first, second = (date.fromisoformat(i.due_date) for i in loan.installments[:2])
    # The first bill's three tries fail and it stays unpaid.
    for when in (morning(first, 8), morning(first, 12), morning(first + timedelta(days=1), 8)):
        assert await round_at(when) == Counter(completed=1)
    sink.messages.clear()
    # The second bill's first try asks for both bills (the waterfall pays the older
    # first) and fails; its notice waits for the SMTP server, and meanwhile the customer
    # binds another card.
    sink.fail_next.extend(["451 4.3.0 try again later"] * 3)
    assert await round_at(morning(second, 8)) == Counter(completed=1)
    assert (await debit_orders(pool, account_id))[-1]["amount_minor"] == 2 * INSTALLMENT
    await bind(api, account_id, "card-6222-0000-7719", auto_debit=True)
    assert await round_at(morning(second, 9)) == Counter()
    (message,) = [m for m in sink.messages if NOTICE in m["Message-ID"]]
    assert message["Subject"] == f"Auto-debit of CNY 2,036.00 due by {second} failed"
    # What is due by the bill's date is both installments and the first one's late
    # penalties, booked by the pass after the debit: what the next try will take.
    async with pool.acquire() as conn:
        penalties = await conn.fetchval("SELECT sum(penalty_minor)::bigint FROM installments WHERE loan_id = $1",
                                        uuid.UUID(loan.loan_id))
    owed = 2 * INSTALLMENT + penalties
    assert penalties > 0
    for part in parts(message):
        assert f"Amount due by {second}" in part and f"CNY {owed // 100:,}.{owed % 100:02d}" in part
        assert "ending in 0002" in part and f"{second} 12:00" in part and "ending in 7719" in part
    await ledger_checked()
