"""Merchant-days over real captures and refunds (real gRPC server, real PostgreSQL):
the totals across customer accounts, the category's fee to the fen, the day boundary
in Asia/Shanghai, the day's file, and settling closed days: booked out of every
account's MERCHANT_PAYABLE once, across concurrent runs, with the carry between days."""

from __future__ import annotations

import asyncio
import csv
from datetime import UTC, date, datetime, timedelta

import grpc
import pytest

from collections_bot.__main__ import build
from collections_bot.config import BotSettings
from collections_bot.mail_sink import start as start_mail_sink
from credit.v1 import checkout_pb2
from server.core import merchant_settlements
from server.db import acquire
from server.domain.errors import InvalidArgument, NotFound
from server.domain.merchant_settlement import SettlementStatus
from server.domain.pricing import MerchantCategory
from tests.support import Api, buy, field_violations, free_port, merchant_payable_of, refund

MERCHANT = "school-2041"
DAY = date(2027, 1, 15)


async def payable_of(pool, loan_ids: list[str]) -> int:
    """What the ledger owes the merchant for these loans, from their postings."""
    async with acquire(pool) as conn:
        return -await conn.fetchval("""
            SELECT coalesce(sum(p.amount_minor), 0)::bigint FROM postings p
            JOIN journal_entries e ON e.entry_id = p.entry_id AND e.account_id = p.account_id
            LEFT JOIN refunds r ON r.refund_id = e.reference_id AND r.account_id = e.account_id
            WHERE p.ledger_account = 'MERCHANT_PAYABLE'
              AND coalesce(r.loan_id, e.reference_id) = ANY($1::uuid[])""", loan_ids)


async def test_a_day_of_several_customers_nets_captures_refunds_and_the_categorys_fee(
        api: Api, pool, clock, books, tmp_path):
    async with acquire(pool) as conn:
        await merchant_settlements.register_merchant(conn, MERCHANT, MerchantCategory.EDUCATION, clock.now())
    loans = []
    for amount in (100_001, 250_000, 37_550):
        account = await api.open_account(limit_minor=1_000_000)
        loans.append(await buy(api, account.account_id, amount, merchant_id=MERCHANT))
    other = await api.open_account(limit_minor=1_000_000)
    await buy(api, other.account_id, 90_000, merchant_id="shop-7")
    await refund(api, loans[1].loan_id, 40_000)
    # 23:59 in Shanghai is still the day; a capture at midnight is the next one's.
    clock.set(datetime(2027, 1, 15, 15, 59, 59, tzinfo=UTC))
    late = await buy(api, (await api.open_account(limit_minor=1_000_000)).account_id, 12_345, merchant_id=MERCHANT)
    clock.set(datetime(2027, 1, 15, 16, 0, tzinfo=UTC))
    next_day = await buy(api, (await api.open_account(limit_minor=1_000_000)).account_id, 50_000,
                         merchant_id=MERCHANT)

    async with acquire(pool) as conn:
        view = await merchant_settlements.merchant_day(conn, MERCHANT, DAY)
        written = await merchant_settlements.write_csv(
            conn, MERCHANT, DAY, tmp_path / merchant_settlements.file_name(MERCHANT, DAY))
        assert await merchant_settlements.merchants_of_day(conn, DAY) == sorted([MERCHANT, "shop-7"])
        following = await merchant_settlements.merchant_day(conn, MERCHANT, DAY + timedelta(days=1), -100)
    day = view.settlement
    captured = 100_001 + 250_000 + 37_550 + 12_345
    assert (day.category, day.fee_bps) == (MerchantCategory.EDUCATION, 40)
    assert (day.captured_minor, day.refunded_minor, day.captures, day.refunds) == (captured, 40_000, 4, 1)
    # 40 bps of 399,896 is 1,599.584: 1,600 fen, half-up once for the day.
    assert day.fee_minor == 1_600
    assert day.net_minor == day.payment_minor == captured - 40_000 - 1_600
    # The ledger agrees: what it owes the merchant for the day's loans is captures less refunds.
    assert await payable_of(pool, [loan.loan_id for loan in [*loans, late]]) == captured - 40_000
    assert written == view
    assert (following.settlement.captured_minor, following.settlement.fee_minor,
            following.settlement.payment_minor) == (50_000, 200, 50_000 - 200 - 100)
    assert next_day.principal_minor == 50_000

    with (tmp_path / merchant_settlements.file_name(MERCHANT, DAY)).open(encoding="utf-8") as text:
        rows = list(csv.DictReader(text))
    items = [r for r in rows if r["line"] == "ITEM"]
    assert sorted((r["kind"], int(r["amount_minor"])) for r in items) == sorted(
        [("CAPTURE", 100_001), ("CAPTURE", 250_000), ("CAPTURE", 37_550), ("CAPTURE", 12_345), ("REFUND", -40_000)])
    assert {r["loan_id"] for r in items} == {loan.loan_id for loan in [*loans, late]}
    assert [(r["line"], r["kind"], int(r["amount_minor"])) for r in rows[len(items):]] == [
        ("FEE", "EDUCATION:40", -1_600), ("CARRIED_IN", "", 0), ("NET", "", captured - 41_600),
        ("PAYMENT", "", captured - 41_600)]
    assert sum(int(r["amount_minor"]) for r in rows if r["line"] in ("ITEM", "FEE", "CARRIED_IN")) == day.net_minor
    assert not list(tmp_path.glob(".*.part"))
    await books()


async def test_a_refund_on_a_later_day_makes_that_day_negative_and_it_is_carried(api: Api, pool, clock, books):
    account = await api.open_account(limit_minor=1_000_000)
    loan = await buy(api, account.account_id, 200_000, merchant_id="tour-8")
    clock.advance(timedelta(days=1))
    await refund(api, loan.loan_id, 150_000)
    async with acquire(pool) as conn:
        first = await merchant_settlements.merchant_day(conn, "tour-8", DAY)
        second = await merchant_settlements.merchant_day(conn, "tour-8", DAY + timedelta(days=1),
                                                         first.settlement.carried_out_minor)
    # Unregistered: GENERAL, 60 bps.
    assert (first.settlement.category, first.settlement.fee_minor, first.settlement.payment_minor) == (
        MerchantCategory.GENERAL, 1_200, 198_800)
    assert (second.settlement.captured_minor, second.settlement.refunded_minor, second.settlement.fee_minor) == (
        0, 150_000, 0)
    assert (second.settlement.payment_minor, second.settlement.carried_out_minor) == (0, -150_000)
    await books()


async def test_a_day_without_activity_is_not_found_and_a_bad_merchant_id_is_refused(pool):
    async with acquire(pool) as conn:
        with pytest.raises(NotFound):
            await merchant_settlements.merchant_day(conn, "nobody-1", DAY)
        with pytest.raises(InvalidArgument, match="merchant_id"):
            await merchant_settlements.merchant_day(conn, "", DAY)
        with pytest.raises(InvalidArgument, match="date"):
            await merchant_settlements.settled_day(conn, "nobody-1", date.max)
        await merchant_settlements.register_merchant(conn, "fly-9", MerchantCategory.TRAVEL, datetime.now(UTC))
        assert await merchant_settlements.category(conn, "fly-9") == MerchantCategory.TRAVEL
        await merchant_settlements.register_merchant(conn, "fly-9", MerchantCategory.ELECTRONICS, datetime.now(UTC))
        assert await merchant_settlements.category(conn, "fly-9") == MerchantCategory.ELECTRONICS
        assert await merchant_settlements.category(conn, "nobody-1") == MerchantCategory.GENERAL


async def test_get_merchant_settlement_over_grpc(api: Api, pool, clock):
    async with acquire(pool) as conn:
        await merchant_settlements.register_merchant(conn, "trip-3310", MerchantCategory.TRAVEL, clock.now())
    account = await api.open_account(limit_minor=1_000_000)
    loan = await buy(api, account.account_id, 123_457, merchant_id="trip-3310")
    await refund(api, loan.loan_id, 23_457)
    reply = await api.checkout.GetMerchantSettlement(
        checkout_pb2.GetMerchantSettlementRequest(merchant_id="trip-3310", date="2027-01-15"), timeout=10)
    # 80 bps of 123,457 is 987.656: 988 fen.
    assert (reply.merchant_id, reply.date, reply.time_zone, reply.category, reply.fee_bps) == (
        "trip-3310", "2027-01-15", "Asia/Shanghai", checkout_pb2.MERCHANT_CATEGORY_TRAVEL, 80)
    assert (reply.captured_minor, reply.refunded_minor, reply.fee_minor, reply.net_minor, reply.captures,
            reply.refunds) == (123_457, 23_457, 988, 99_012, 1, 1)
    assert (reply.status, reply.carried_in_minor, reply.paid_minor, reply.payment_order_id) == (
        checkout_pb2.MERCHANT_SETTLEMENT_STATUS_UNSPECIFIED, 0, 0, "")
    clock.advance(timedelta(days=1))
    [settled] = await merchant_settlements.settle_closed_days(pool, clock.now())
    reply = await api.checkout.GetMerchantSettlement(
        checkout_pb2.GetMerchantSettlementRequest(merchant_id="trip-3310", date="2027-01-15"), timeout=10)
    assert settled.settled is not None
    assert (reply.status, reply.net_minor, reply.carried_in_minor, reply.paid_minor, reply.payment_order_id) == (
        checkout_pb2.MERCHANT_SETTLEMENT_STATUS_REQUESTED, 99_012, 0, 0, str(settled.settled.payment_order_id))

    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await api.checkout.GetMerchantSettlement(
            checkout_pb2.GetMerchantSettlementRequest(merchant_id="", date="2027-13-01"), timeout=10)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(field_violations(bad.value)) == ["date", "merchant_id"]
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await api.checkout.GetMerchantSettlement(
            checkout_pb2.GetMerchantSettlementRequest(merchant_id="trip-3310"), timeout=10)
    assert field_violations(missing.value) == ["date"]
    with pytest.raises(grpc.aio.AioRpcError) as quiet:
        await api.checkout.GetMerchantSettlement(
            checkout_pb2.GetMerchantSettlementRequest(merchant_id="trip-3310", date="2027-01-16"), timeout=10)
    assert quiet.value.code() == grpc.StatusCode.NOT_FOUND


async def settled_entries(pool, settlement_id) -> list[tuple[str, str, int]]:
    """(account, ledger account, amount) of the entries a settled day posted."""
    async with acquire(pool) as conn:
        rows = await conn.fetch("""
            SELECT e.account_id::text, p.ledger_account, p.amount_minor FROM journal_entries e
            JOIN postings p ON p.account_id = e.account_id AND p.entry_id = e.entry_id
            WHERE e.kind = 'MERCHANT_DAY_SETTLED' AND e.reference_id = $1
            ORDER BY 1, 2""", settlement_id)
    return [(r[0], r[1], r[2]) for r in rows]


async def test_settling_a_closed_day_books_each_accounts_part_out_of_merchant_payable_once(
        api: Api, pool, clock, books, tmp_path):
    async with acquire(pool) as conn:
        await merchant_settlements.register_merchant(conn, "campus-51", MerchantCategory.EDUCATION, clock.now())
    accounts = [(await api.open_account(limit_minor=1_000_000)).account_id for _ in range(3)]
    loans = [await buy(api, account_id, amount, merchant_id="campus-51")
             for account_id, amount in zip(accounts, (100_001, 250_000, 37_550), strict=True)]
    # A second loan on the first account: its part is both captures.
    loans.append(await buy(api, accounts[0], 12_345, merchant_id="campus-51"))
    await refund(api, loans[1].loan_id, 40_000)
    async with acquire(pool) as conn:
        # Today is not closed: nothing settles.
        assert await merchant_settlements.settle_closed_days(pool, clock.now(), tmp_path) == []
    clock.advance(timedelta(days=1))
    settled = await merchant_settlements.settle_closed_days(pool, clock.now(), tmp_path)

    assert [(v.merchant_id, v.day) for v in settled] == [("campus-51", DAY)]
    day, row = settled[0].settlement, settled[0].settled
    captured = 100_001 + 250_000 + 37_550 + 12_345
    # 40 bps of 399,896 is 1,599.584: 1,600 fen.
    assert (day.captured_minor, day.refunded_minor, day.fee_minor, day.carried_in_minor, day.net_minor) == (
        captured, 40_000, 1_600, 0, captured - 40_000 - 1_600)
    assert row is not None and row.status is SettlementStatus.REQUESTED
    assert row.payment_order_id is not None and row.paid_minor == 0
    # Each account's part, captures less refunds there, left MERCHANT_PAYABLE: nothing is
    # owed for the day in any account any more. The fee is shared by captures (112,346,
    # 250,000 and 37,550 of 399,896: 449.5, 1,000.3 and 150.2 fen, the largest remainder
    # taking the odd fen) and earned; the rest is in flight to the merchant.
    assert sorted(await settled_entries(pool, row.settlement_id)) == sorted([
        (accounts[0], "MERCHANT_PAYABLE", 112_346), (accounts[0], "MERCHANT_FEE_INCOME", -450),
        (accounts[0], "MERCHANT_SETTLEMENT_IN_FLIGHT", -111_896),
        (accounts[1], "MERCHANT_PAYABLE", 210_000), (accounts[1], "MERCHANT_FEE_INCOME", -1_000),
        (accounts[1], "MERCHANT_SETTLEMENT_IN_FLIGHT", -209_000),
        (accounts[2], "MERCHANT_PAYABLE", 37_550), (accounts[2], "MERCHANT_FEE_INCOME", -150),
        (accounts[2], "MERCHANT_SETTLEMENT_IN_FLIGHT", -37_400)])
    assert await merchant_payable_of(pool, accounts) == 0
    # Settled once: a second run finds nothing to do.
    assert await merchant_settlements.settle_closed_days(pool, clock.now(), tmp_path) == []
    assert len(await settled_entries(pool, row.settlement_id)) == 9
    async with acquire(pool) as conn:
        again = await merchant_settlements.settled_day(conn, "campus-51", DAY)
    assert again.settled == row
    with (tmp_path / merchant_settlements.file_name("campus-51", DAY)).open(encoding="utf-8") as text:
        rows = list(csv.DictReader(text))
    assert [(r["line"], int(r["amount_minor"])) for r in rows if r["line"] != "ITEM"] == [
        ("FEE", -1_600), ("CARRIED_IN", 0), ("NET", captured - 41_600), ("PAYMENT", captured - 41_600)]
    await books()


async def test_closed_days_settle_oldest_first_each_carrying_a_negative_net_into_the_next(
        api: Api, pool, clock, books, tmp_path):
    account = (await api.open_account(limit_minor=2_000_000)).account_id
    loan = await buy(api, account, 200_000, merchant_id="tour-18")
    clock.advance(timedelta(days=1))
    await refund(api, loan.loan_id, 150_000)
    clock.advance(timedelta(days=1))
    await buy(api, account, 100_000, merchant_id="tour-18")
    clock.advance(timedelta(days=1))
    await buy(api, account, 100_000, merchant_id="tour-18")
    clock.advance(timedelta(days=1))

    settled = await merchant_settlements.settle_closed_days(pool, clock.now(), tmp_path)
    # GENERAL, 60 bps: 1,200 and 600 fen. The refund's day is -150,000, carried; the
    # next day's -50,600 too; the last pays 100,000 - 600 - 50,600.
    assert [(v.day, v.settlement.carried_in_minor, v.settlement.net_minor, v.settled and v.settled.status)
            for v in settled] == [
        (DAY, 0, 198_800, SettlementStatus.REQUESTED),
        (DAY + timedelta(days=1), 0, -150_000, SettlementStatus.CARRIED),
        (DAY + timedelta(days=2), -150_000, -50_600, SettlementStatus.CARRIED),
        (DAY + timedelta(days=3), -50_600, 48_800, SettlementStatus.REQUESTED)]
    assert [v.settled and v.settled.payment_order_id is None for v in settled] == [False, True, True, False]
    assert await merchant_payable_of(pool, [account]) == 0
    with (tmp_path / merchant_settlements.file_name("tour-18", DAY + timedelta(days=3))).open(
            encoding="utf-8") as text:
        last = {r["line"]: int(r["amount_minor"]) for r in csv.DictReader(text) if r["line"] != "ITEM"}
    assert (last["CARRIED_IN"], last["NET"], last["PAYMENT"]) == (-50_600, 48_800, 48_800)
    await books()


async def test_two_concurrent_runs_settle_each_day_once(api: Api, pool, clock, books):
    accounts = [(await api.open_account(limit_minor=1_000_000)).account_id for _ in range(4)]
    for n, account_id in enumerate(accounts):
        await buy(api, account_id, 50_000 + n, merchant_id="shop-301")
        await buy(api, account_id, 20_000 + n, merchant_id="shop-302")
    clock.advance(timedelta(days=1))

    first, second = await asyncio.gather(merchant_settlements.settle_closed_days(pool, clock.now()),
                                         merchant_settlements.settle_closed_days(pool, clock.now()))
    assert sorted(v.merchant_id for v in [*first, *second]) == ["shop-301", "shop-302"]
    for view in [*first, *second]:
        assert view.settled is not None
        # Payable, fee and in flight in each account.
        assert len(await settled_entries(pool, view.settled.settlement_id)) == 3 * len(accounts)
    async with acquire(pool) as conn:
        assert await conn.fetchval("SELECT count(*) FROM journal_entries WHERE kind = 'MERCHANT_DAY_SETTLED'") == 8
    assert await merchant_payable_of(pool, accounts) == 0
    await books()


async def test_the_invariants_find_a_settled_day_whose_payable_was_not_booked_out(api: Api, pool, clock):
    from server.invariants import check

    account = (await api.open_account(limit_minor=1_000_000)).account_id
    await buy(api, account, 80_000, merchant_id="shop-77")
    clock.advance(timedelta(days=1))
    async with acquire(pool) as conn:
        # A day recorded settled without its entries (what a bug that skipped them would leave).
        await conn.execute("""
            INSERT INTO merchant_settlements (merchant_id, settlement_date, settlement_id, category, fee_bps,
                captured_minor, refunded_minor, fee_minor, carried_in_minor, net_minor, status, payment_order_id,
                created_at, payee_id, payment_attempts)
            VALUES ('shop-77', $1, gen_random_uuid(), 'GENERAL', 60, 80000, 0, 480, 0, 79520, 'REQUESTED',
                    gen_random_uuid(), now(), 'shop-77', 1)""", DAY)
        violations = await check(conn)
    assert sorted((v.rule, v.subject.split()[-1], v.found, v.expected) for v in violations) == [
        ("a settled merchant-day earned its fee and put the rest in flight", "fee", 0, -480),
        ("a settled merchant-day earned its fee and put the rest in flight", "flight", 0, -79_520),
        ("a settled merchant-day moved its captures less refunds out of MERCHANT_PAYABLE", DAY.isoformat(), 0,
         80_000),
        ("an account's MERCHANT_PAYABLE is its merchant-days not settled yet", account, -80_000, 0),
        ("every settled merchant-day's MERCHANT_PAYABLE is zero", DAY.isoformat(), -80_000, 0),
        ("what is in flight for a merchant is what it is still owed", "shop-77", 0, -79_520)]


async def test_the_bots_pass_settles_each_closed_day_once_and_writes_its_file(api: Api, pool, clock, tmp_path):
    port = free_port()
    controller, _ = start_mail_sink("127.0.0.1", port)
    try:
        bot = build(pool, BotSettings.from_env({"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port),
                                                "SETTLEMENT_DIR": str(tmp_path)}), clock)
        account = (await api.open_account(limit_minor=1_000_000)).account_id
        await buy(api, account, 64_000, merchant_id="shop-91")
        assert (await bot.run()).merchant_days_settled == 0
        clock.advance(timedelta(days=1))
        assert (await bot.run()).merchant_days_settled == 1
        assert (await bot.run()).merchant_days_settled == 0
    finally:
        controller.stop()
    assert [p.name for p in (tmp_path / "merchants").iterdir()] == [merchant_settlements.file_name("shop-91", DAY)]
    assert await merchant_payable_of(pool, [account]) == 0


async def test_the_demonstration_merchants_are_registered_once_and_an_operators_change_stands(pool, clock):
    async with acquire(pool) as conn:
        await merchant_settlements.register_merchant(conn, "travel-2210", MerchantCategory.GENERAL, clock.now())
        await merchant_settlements.register_demo_merchants(conn, clock.now())
        await merchant_settlements.register_demo_merchants(conn, clock.now())
        assert [await merchant_settlements.category(conn, m) for m in ("school-2041", "travel-2210", "gadget-4410")] \
            == [MerchantCategory.EDUCATION, MerchantCategory.GENERAL, MerchantCategory.ELECTRONICS]


async def test_a_settled_day_shows_the_fee_it_was_settled_with_after_the_category_changes(api: Api, pool, clock):
    async with acquire(pool) as conn:
        await merchant_settlements.register_merchant(conn, "gadget-77", MerchantCategory.ELECTRONICS, clock.now())
    account = (await api.open_account(limit_minor=1_000_000)).account_id
    await buy(api, account, 100_000, merchant_id="gadget-77")
    clock.advance(timedelta(days=1))
    (view,) = await merchant_settlements.settle_closed_days(pool, clock.now())
    assert (view.settlement.fee_bps, view.settlement.fee_minor) == (120, 1_200)
    async with acquire(pool) as conn:
        await merchant_settlements.register_merchant(conn, "gadget-77", MerchantCategory.GENERAL, clock.now())
    shown = await api.checkout.GetMerchantSettlement(checkout_pb2.GetMerchantSettlementRequest(
        merchant_id="gadget-77", date=DAY.isoformat()), timeout=10)
    assert (shown.category, shown.fee_bps, shown.fee_minor, shown.net_minor) == (
        checkout_pb2.MERCHANT_CATEGORY_ELECTRONICS, 120, 1_200, 98_800)
