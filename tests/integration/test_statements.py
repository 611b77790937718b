"""Monthly statements against a real PostgreSQL, the real services and the bot's
passes, with a clock the test moves and a real SMTP server (aiosmtpd).

Accounts open on 2027-01-15 (Shanghai), so their statement day is the 15th: the first
statement is dated 2027-02-15 and closes 2027-01-15 .. 02-14. A 3,000.00 loan over 3
months (flat fee, grade B) pays 1,000.00 + 18.00 a month."""

from __future__ import annotations

import asyncio
import collections
import random
import uuid
from datetime import UTC, date, datetime, timedelta

import asyncpg
import grpc
import pytest

from collections_bot.__main__ import build, build_statements
from collections_bot.config import BotSettings
from credit.v1 import collections_pb2, common_pb2, credit_line_pb2, repayment_pb2
from server.db.pool import create_pool
from server.domain.statements import CUSTOMER_ACCOUNTS
from tests.integration import test_collections
from tests.integration.test_collections import shanghai
from tests.support import buy, field_violations, key, refund, repay

smtp = test_collections.smtp  # the SMTP sink fixture
SHANGHAI = shanghai(1, 1).tzinfo


def bot_settings(port: int) -> BotSettings:
    return BotSettings.from_env({"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port), "SMTP_RETRY_BASE_S": "0.01",
                                 "SMTP_TRIES_PER_PASS": "3"})


@pytest.fixture
def billing_cycle() -> tuple[int, int | None]:
    """Statements are shown on the server's default cycle: the statement day the account
    opened on (15 January, the clock's start) and 20 due days."""
    return 0, None


@pytest.fixture
def passes(pool, clock, smtp):
    """The collections pass and the statement pass, as the daemon runs them."""
    _, port = smtp
    settings = bot_settings(port)
    return build(pool, settings, clock), build_statements(pool, settings, clock)


async def run(passes, clock, when):
    """Both passes, as the daemon runs them."""
    clock.set(when)
    collections_pass, statement_pass = passes
    await collections_pass.run()
    return await statement_pass.run()


async def issue(passes, clock, when):
    """The statement pass alone: no reminders in the sink, no penalties booked."""
    clock.set(when)
    return await passes[1].run()


async def statements(pool, account_id: str) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return await conn.fetch("SELECT * FROM statements WHERE account_id = $1 ORDER BY statement_date",
                                uuid.UUID(account_id))


async def lines(pool, account_id: str, statement_date: date) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return await conn.fetch("SELECT * FROM statement_lines WHERE account_id = $1 AND statement_date = $2 "
                                "ORDER BY line", uuid.UUID(account_id), statement_date)


async def owed_by_loans(api, account_id: str) -> int:
    """What the loans say the customer owes (every installment's unpaid principal, fee
    and penalty) less the credit balance: an oracle apart from the ledger."""
    reply = await api.repayment.ListLoans(repayment_pb2.ListLoansRequest(account_id=account_id, page_size=100))
    owed = sum(i.owed_minor for loan in reply.loans if loan.status == common_pb2.LOAN_STATUS_ACTIVE
               for i in loan.installments)
    return owed - (await api.account(account_id)).credit_balance_minor


async def ledger_balance_before(conn, account_id: uuid.UUID, instant: datetime) -> int:
    return await conn.fetchval(
        "SELECT coalesce(sum(p.amount_minor), 0) FROM postings p JOIN journal_entries e USING (entry_id) "
        "WHERE e.account_id = $1 AND e.created_at < $2 AND p.ledger_account = ANY($3::text[])",
        account_id, instant, [a.value for a in CUSTOMER_ACCOUNTS])


async def check_statements_tie_to_the_ledger(pool, account_id: str) -> list[asyncpg.Record]:
    """Every rule that ties an account's statements to its ledger; the statements."""
    account = uuid.UUID(account_id)
    async with pool.acquire() as conn:
        issued = await conn.fetch("SELECT * FROM statements WHERE account_id = $1 ORDER BY statement_date", account)
        all_lines = await conn.fetch("SELECT * FROM statement_lines WHERE account_id = $1", account)
        previous, previous_cutoff = 0, datetime.min.replace(tzinfo=UTC)
        for s in issued:
            mine = [line for line in all_lines if line["statement_date"] == s["statement_date"]]
            assert s["opening_minor"] == previous, s["statement_date"]
            assert s["period_start"] < s["statement_date"]
            assert s["closing_minor"] == s["opening_minor"] + sum(line["amount_minor"] for line in mine)
            assert s["closing_minor"] == await ledger_balance_before(conn, account, s["cutoff_at"])
            by_kind: collections.Counter[str] = collections.Counter()
            for line in mine:
                by_kind[line["kind"]] += line["amount_minor"]
                assert previous_cutoff <= line["booked_at"] < s["cutoff_at"]
            assert s["purchases_minor"] == by_kind["PURCHASE"] and s["fees_minor"] == by_kind["FEE"]
            assert s["penalties_minor"] == by_kind["PENALTY"] and s["payments_minor"] == -by_kind["PAYMENT"]
            assert s["refunds_minor"] == -by_kind["REFUND"]
            assert s["waivers_minor"] == -by_kind["FEE_WAIVED"] - by_kind["PENALTY_WAIVED"]
            assert s["written_off_minor"] == -by_kind["WRITTEN_OFF"]
            assert s["adjustments_minor"] == by_kind["ADJUSTMENT"]
            previous, previous_cutoff = s["closing_minor"], s["cutoff_at"]
        # Each entry that moved the balance before the last cut-off is on exactly one
        # statement, and its lines there sum to its effect on the balance.
        if issued:
            effects = {r["entry_id"]: r["effect"] for r in await conn.fetch(
                "SELECT e.entry_id, sum(p.amount_minor) AS effect FROM journal_entries e JOIN postings p "
                "USING (entry_id) WHERE e.account_id = $1 AND e.created_at < $2 "
                "AND p.ledger_account = ANY($3::text[]) GROUP BY e.entry_id HAVING sum(p.amount_minor) <> 0",
                account, issued[-1]["cutoff_at"], [a.value for a in CUSTOMER_ACCOUNTS])}
            shown: dict[uuid.UUID, int] = collections.Counter()
            on_statements: dict[uuid.UUID, set] = collections.defaultdict(set)
            for line in all_lines:
                shown[line["entry_id"]] += line["amount_minor"]
                on_statements[line["entry_id"]].add(line["statement_date"])
            assert shown == effects
            assert all(len(dates) == 1 for dates in on_statements.values())
    return issued


# -- one month, then the next --------------------------------------------------------------

async def test_a_month_of_loans_repayments_refunds_and_penalties_is_stated_and_ties_to_the_ledger(
        api, passes, clock, pool, smtp, books):
    sink, _ = smtp
    account = await api.open_account(limit_minor=2_000_000)
    first = await buy(api, account.account_id, 300_000, merchant_id="jd-mall", order_id="order-tv")
    clock.set(shanghai(1, 20))
    second = await buy(api, account.account_id, 100_000, term_months=6, order_id="order-phone")
    clock.set(shanghai(1, 25))
    await refund(api, second.loan_id, 20_000)
    clock.set(shanghai(2, 1))
    await repay(api, account.account_id, 50_000)
    clock.set(shanghai(2, 14, 23))
    await repay(api, account.account_id, 1_000)

    # The day before the statement date nothing is issued.
    assert (await run(passes, clock, shanghai(2, 14, 23) + timedelta(minutes=30))).issued == 0
    report = await run(passes, clock, shanghai(2, 15, 9))
    assert report.issued == 1
    (february,) = await statements(pool, account.account_id)
    assert (february["statement_date"], february["period_start"]) == (date(2027, 2, 15), date(2027, 1, 15))
    assert february["cutoff_at"] == shanghai(2, 15, 0)
    assert february["payment_due_date"] == date(2027, 3, 7)
    refunded = await lines(pool, account.account_id, date(2027, 2, 15))
    assert [line["kind"] for line in refunded] == ["PURCHASE", "FEE", "PURCHASE", "FEE", "REFUND", "PAYMENT",
                                                   "PAYMENT"]
    assert refunded[0]["merchant_id"] == "jd-mall" and refunded[0]["order_id"] == "order-tv"
    assert (refunded[0]["term_months"], refunded[0]["method"], refunded[0]["apr_bps"]) == (
        3, "FLAT_FEE", first.apr_bps)
    assert refunded[4]["loan_id"] == uuid.UUID(second.loan_id)
    assert february["opening_minor"] == 0 and february["purchases_minor"] == 400_000
    assert february["payments_minor"] == 51_000
    # Fees are owed from capture, the whole schedule's; the refund took 200.00 of
    # principal and the fees that went with it.
    assert february["fees_minor"] == first.total_fee_minor + second.total_fee_minor
    fee_refunded = second.total_fee_minor - (await api.loan(second.loan_id)).total_fee_minor
    assert february["refunds_minor"] == -refunded[4]["amount_minor"] == 20_000 + fee_refunded
    assert february["closing_minor"] == await owed_by_loans(api, account.account_id)
    # The bill: both loans' first installments, due together on the statement's payment
    # due date (one bill a month), less what was paid early.
    due = await _due(pool, account.account_id, date(2027, 2, 15))
    assert [(d["order_id"], d["sequence"]) for d in due] == [("order-phone", 1), ("order-tv", 1)]
    assert {d["due_date"] for d in due} == {february["payment_due_date"]}
    assert february["amount_due_minor"] == sum(d["owed_minor"] for d in due)

    # A month later: penalties on the unpaid first installments (due 7 March, grace to
    # the 10th), one waived, a payment.
    for day in range(16, 29):
        await run(passes, clock, shanghai(2, day))
    for day in range(1, 15):
        await run(passes, clock, shanghai(3, day))
    clock.set(shanghai(3, 14, 12))
    await api.collections.WaivePenalty(collections_pb2.WaivePenaltyRequest(
        loan_id=first.loan_id, sequence=1, amount_minor=51, reason="goodwill", idempotency_key=key()))
    await repay(api, account.account_id, 200_000)
    await run(passes, clock, shanghai(3, 15))
    february_again, march = await statements(pool, account.account_id)
    assert february_again == february
    assert march["opening_minor"] == february["closing_minor"]
    assert march["penalties_minor"] > 0 and march["waivers_minor"] >= 51 and march["payments_minor"] == 200_000
    assert march["purchases_minor"] == 0 and march["fees_minor"] == 0
    assert march["closing_minor"] == await owed_by_loans(api, account.account_id)
    await check_statements_tie_to_the_ledger(pool, account.account_id)
    # Each statement was emailed once.
    ids = collections.Counter(m["Message-ID"].strip() for m in sink.messages if "statement." in m["Message-ID"])
    assert ids == {f"<statement.{account.account_id}.2027-02-15@credit.example>": 1,
                   f"<statement.{account.account_id}.2027-03-15@credit.example>": 1}
    await books()


async def _due(pool, account_id: str, statement_date: date) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return await conn.fetch("SELECT * FROM statement_installments WHERE account_id = $1 AND statement_date = $2 "
                                "ORDER BY due_date, order_id, sequence", uuid.UUID(account_id), statement_date)


# -- random books -------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [7, 2027])
async def test_statements_tie_to_the_ledger_over_random_books(api, passes, clock, pool, books, seed):
    """Random captures, repayments (some beyond what is owed), refunds, late days with
    their penalties, and waivers over five months; every statement of every account
    must tie to the ledger, line by line."""
    rng = random.Random(seed)
    accounts = [(await api.open_account(limit_minor=5_000_000, statement_day=rng.choice([1, 15, 28]))).account_id
                for _ in range(3)]
    loans: dict[str, list[str]] = {a: [] for a in accounts}
    when = shanghai(1, 15, 11)
    end = shanghai(6, 20)
    while when < end:
        clock.set(when)
        account_id = rng.choice(accounts)
        action = rng.choices(["buy", "repay", "refund", "waive", "wait"], weights=[3, 3, 1, 1, 4])[0]
        if action == "buy":
            loan = await buy(api, account_id, rng.randrange(5_000, 400_000), term_months=rng.choice([3, 6, 12]))
            loans[account_id].append(loan.loan_id)
        elif action == "repay":
            await repay(api, account_id, rng.randrange(1, 150_000))
        elif action in ("refund", "waive") and loans[account_id]:
            loan = await api.loan(rng.choice(loans[account_id]))
            if action == "refund" and loan.status == common_pb2.LOAN_STATUS_ACTIVE:
                left = loan.principal_minor - loan.refunded_minor
                if left > 0:
                    await refund(api, loan.loan_id, rng.randrange(1, left + 1))
            elif action == "waive":
                owed = [(i.sequence, i.penalty_minor) for i in loan.installments if i.penalty_minor > 0]
                if owed:
                    sequence, penalty = rng.choice(owed)
                    try:
                        await api.collections.WaivePenalty(collections_pb2.WaivePenaltyRequest(
                            loan_id=loan.loan_id, sequence=sequence, amount_minor=rng.randrange(1, penalty + 1),
                            reason="goodwill", idempotency_key=key()))
                    except grpc.aio.AioRpcError as error:
                        # More than the unpaid penalty cannot be waived: a refusal, not a bug.
                        assert error.code() in (grpc.StatusCode.FAILED_PRECONDITION,
                                                grpc.StatusCode.INVALID_ARGUMENT), error
        await run(passes, clock, when)
        when += timedelta(hours=rng.choice([5, 11, 23, 49, 97]))
    issued = 0
    for account_id in accounts:
        issued += len(await check_statements_tie_to_the_ledger(pool, account_id))
    assert issued >= 3 * 4
    async with pool.acquire() as conn:
        kinds = {r["kind"] for r in await conn.fetch("SELECT DISTINCT kind FROM statement_lines")}
    # The books went through every kind of movement they were built to make.
    assert {"PURCHASE", "FEE", "PAYMENT", "REFUND", "PENALTY", "FEE_WAIVED"} <= kinds, kinds
    await books()


# -- immutability, exactly once, catching up -----------------------------------------------

async def test_an_issued_statement_cannot_be_changed_or_deleted(api, passes, clock, pool):
    account = await api.open_account(limit_minor=1_000_000)
    await buy(api, account.account_id, 300_000)
    await issue(passes, clock, shanghai(2, 15))
    account_id = uuid.UUID(account.account_id)
    async with pool.acquire() as conn:
        for sql in ("UPDATE statements SET closing_minor = closing_minor + 1 WHERE account_id = $1",
                    "DELETE FROM statements WHERE account_id = $1",
                    "UPDATE statement_lines SET amount_minor = amount_minor + 1 WHERE account_id = $1",
                    "DELETE FROM statement_lines WHERE account_id = $1",
                    "UPDATE statement_installments SET owed_minor = owed_minor WHERE account_id = $1"):
            with pytest.raises(asyncpg.IntegrityConstraintViolationError, match="is issued and cannot change"):
                await conn.execute(sql, account_id)
        # A second issue of the same date is refused by the key.
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute("INSERT INTO statements SELECT * FROM statements WHERE account_id = $1", account_id)


async def test_two_bots_at_once_issue_and_email_each_statement_once(api, clock, smtp, db_dsn):
    sink, port = smtp
    accounts = [(await api.open_account(limit_minor=1_000_000)).account_id for _ in range(12)]
    for account_id in accounts:
        await buy(api, account_id, 300_000)
    clock.set(shanghai(2, 15))
    settings = bot_settings(port)
    pools = [await create_pool(db_dsn, min_size=1, max_size=4, command_timeout_s=30) for _ in range(2)]
    try:
        reports = await asyncio.gather(*(build_statements(p, settings, clock).run() for p in pools))
        again = await build_statements(pools[0], settings, clock).run()
        async with pools[0].acquire() as conn:
            issued = await conn.fetch("SELECT account_id, count(*) AS n FROM statements GROUP BY account_id")
            delivered = await conn.fetch("SELECT status, count(*) AS n FROM statement_deliveries GROUP BY status")
    finally:
        for p in pools:
            await p.close()
    assert sum(r.issued for r in reports) + sum(r.busy for r in reports) >= len(accounts)
    assert sum(r.issued for r in reports) + again.issued == len(accounts)
    assert {str(r["account_id"]): r["n"] for r in issued} == dict.fromkeys(accounts, 1)
    assert {r["status"]: r["n"] for r in delivered} == {"SENT": len(accounts)}
    ids = collections.Counter(m["Message-ID"].strip() for m in sink.messages)
    assert set(ids) == {f"<statement.{a}.2027-02-15@credit.example>" for a in accounts}
    assert max(ids.values()) == 1


async def test_a_bot_away_for_months_issues_the_missed_statements_in_order(api, passes, clock, pool, smtp):
    sink, _ = smtp
    account = await api.open_account(limit_minor=1_000_000)
    await buy(api, account.account_id, 300_000)
    clock.set(shanghai(3, 3))
    await repay(api, account.account_id, 101_800)
    report = await issue(passes, clock, shanghai(5, 20))
    assert report.issued == 4
    issued = await check_statements_tie_to_the_ledger(pool, account.account_id)
    assert [s["statement_date"] for s in issued] == [date(2027, m, 15) for m in (2, 3, 4, 5)]
    assert [s["period_start"] for s in issued] == [date(2027, 1, 15)] + [date(2027, m, 15) for m in (2, 3, 4)]
    assert issued[1]["payments_minor"] == 101_800
    assert len([m for m in sink.messages if "statement." in m["Message-ID"]]) == 4


async def test_an_account_without_activity_gets_a_stored_statement_but_no_email(api, passes, clock, pool, smtp):
    sink, _ = smtp
    account = await api.open_account(limit_minor=1_000_000)
    await run(passes, clock, shanghai(2, 15))
    (quiet,) = await statements(pool, account.account_id)
    assert (quiet["opening_minor"], quiet["closing_minor"], quiet["amount_due_minor"]) == (0, 0, 0)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM statement_deliveries") == 0
    assert sink.messages == []


async def test_a_moved_statement_day_closes_the_open_period_on_the_new_day(api, passes, clock, pool):
    account = await api.open_account(limit_minor=1_000_000)
    await run(passes, clock, shanghai(2, 15))
    clock.set(shanghai(2, 16))
    await api.lines.SetStatementDay(_set_day(account.account_id, 20))
    await run(passes, clock, shanghai(2, 20))
    assert [(s["period_start"], s["statement_date"]) for s in await statements(pool, account.account_id)] == [
        (date(2027, 1, 15), date(2027, 2, 15)), (date(2027, 2, 15), date(2027, 2, 20))]


def _set_day(account_id: str, day: int):
    return credit_line_pb2.SetStatementDayRequest(account_id=account_id, statement_day=day, idempotency_key=key())


# -- the email ---------------------------------------------------------------------------

async def test_the_statement_email_in_both_languages_with_a_4xx_retried(api, passes, clock, pool, smtp):
    sink, _ = smtp
    chinese = await api.open_account(limit_minor=1_000_000)
    english = await api.open_account(limit_minor=1_000_000, locale="en")
    for account in (chinese, english):
        await buy(api, account.account_id, 300_000, order_id=f"order-{account.account_id[:6]}")
    sink.fail_next.extend(["451 4.3.0 Mailbox busy, try later"])
    await issue(passes, clock, shanghai(2, 15))
    assert sink.data_commands == 3 and len(sink.messages) == 2
    by_id = {m["Message-ID"].strip(): m for m in sink.messages}
    zh = by_id[f"<statement.{chinese.account_id}.2027-02-15@credit.example>"]
    en = by_id[f"<statement.{english.account_id}.2027-02-15@credit.example>"]
    # Bought on the statement day, first billed a month later and due 20 days after: a
    # first period of 51 days against a 28-day reference month (7 Feb to 7 Mar), so a
    # first fee of 1,800 x 51 / 28 = 3,278.57 fen.
    assert zh["Subject"] == "您 2027-02-15 的账单：应还 ¥1,032.79，最后还款日 2027-03-07"
    assert en["Subject"] == "Your statement of 2027-02-15: CNY 1,032.79 due by 2027-03-07"
    assert "List-Unsubscribe" not in zh
    for message, account, words in (
            (zh, chinese, ("期初余额", "消费", "期末余额", "3 期，年化利率", "最后还款日")),
            (en, english, ("Opening balance", "Purchase", "Closing balance", "3 months, APR", "Due by"))):
        text = message.get_body(("plain",)).get_content()
        html = message.get_body(("html",)).get_content()
        for part in (text, html):
            assert all(word in part for word in words), part
            assert "3,068.79" in part and "1,032.79" in part and f"order-{account.account_id[:6]}" in part
    async with pool.acquire() as conn:
        tries = {r["account_id"]: (r["status"], r["tries"]) for r in await conn.fetch(
            "SELECT account_id, status, tries FROM statement_deliveries")}
    assert set(tries.values()) == {("SENT", 1)}


async def test_a_4xx_that_outlasts_a_pass_is_sent_on_a_later_pass_and_a_5xx_is_final(api, passes, clock, pool,
                                                                                  smtp):
    sink, _ = smtp
    account = await api.open_account(limit_minor=1_000_000)
    await buy(api, account.account_id, 300_000)
    sink.fail_next.extend(["421 4.7.0 Too many connections"] * 3)
    await issue(passes, clock, shanghai(2, 15))
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT status, reason, tries, next_try_at FROM statement_deliveries")
    assert (row["status"], row["reason"], row["tries"]) == ("PENDING", "SMTP_TEMPORARY", 1)
    assert sink.messages == []
    await issue(passes, clock, shanghai(2, 15, 10) + timedelta(minutes=1))
    assert sink.messages == []
    await issue(passes, clock, shanghai(2, 15, 10) + timedelta(minutes=6))
    assert len(sink.messages) == 1
    await issue(passes, clock, shanghai(2, 16))
    assert len(sink.messages) == 1

    other = await api.open_account(limit_minor=1_000_000)  # its statement day is the 16th
    await buy(api, other.account_id, 300_000)
    await issue(passes, clock, shanghai(3, 15))
    assert len(sink.messages) == 2
    sink.fail_next.append("550 5.1.1 No such user")
    await issue(passes, clock, shanghai(3, 16))
    async with pool.acquire() as conn:
        final = await conn.fetchrow("SELECT status, reason FROM statement_deliveries WHERE account_id = $1",
                                    uuid.UUID(other.account_id))
    assert (final["status"], final["reason"]) == ("FAILED", "SMTP_PERMANENT")


# -- the API ------------------------------------------------------------------------------

async def test_get_and_list_statements(api, passes, clock):
    account = await api.open_account(limit_minor=1_000_000)
    loan = await buy(api, account.account_id, 300_000, merchant_id="jd-mall", order_id="order-1")
    await issue(passes, clock, shanghai(4, 16))
    got = await api.repayment.GetStatement(repayment_pb2.GetStatementRequest(account_id=account.account_id,
                                                                             period="2027-02"))
    assert (got.statement_date, got.period_start, got.payment_due_date) == ("2027-02-15", "2027-01-15", "2027-03-07")
    assert got.purchases_minor == 300_000 and got.fees_minor == loan.total_fee_minor
    assert got.closing_minor == 300_000 + loan.total_fee_minor == got.principal_owed_minor + got.fee_owed_minor
    assert [line.kind for line in got.lines] == [repayment_pb2.STATEMENT_LINE_KIND_PURCHASE,
                                                 repayment_pb2.STATEMENT_LINE_KIND_FEE]
    assert got.lines[0].order_id == "order-1" and got.lines[0].apr_bps == loan.apr_bps
    assert [(i.sequence, i.due_date, i.owed_minor) for i in got.installments] == [(1, "2027-03-07", 103_279)]
    exact = await api.repayment.GetStatement(repayment_pb2.GetStatementRequest(account_id=account.account_id,
                                                                               period="2027-02-15"))
    assert exact == got

    pages, token = [], ""
    while True:
        page = await api.repayment.ListStatements(repayment_pb2.ListStatementsRequest(
            account_id=account.account_id, page_size=2, page_token=token))
        pages.append([s.statement_date for s in page.statements])
        token = page.next_page_token
        if not token:
            break
    assert pages == [["2027-04-15", "2027-03-15"], ["2027-02-15"]]

    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await api.repayment.GetStatement(repayment_pb2.GetStatementRequest(account_id=account.account_id,
                                                                           period="2027-01"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND and "period" in (missing.value.details() or "")
    for period in ("2027-13", "Feb 2027", "", "2027-02-30"):
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await api.repayment.GetStatement(repayment_pb2.GetStatementRequest(account_id=account.account_id,
                                                                               period=period))
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field_violations(bad.value) == ["period"]
    with pytest.raises(grpc.aio.AioRpcError) as bad_token:
        await api.repayment.ListStatements(repayment_pb2.ListStatementsRequest(account_id=account.account_id,
                                                                               page_token="nonsense"))
    assert field_violations(bad_token.value) == ["page_token"]
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await api.repayment.ListStatements(repayment_pb2.ListStatementsRequest(account_id=str(uuid.uuid4())))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
