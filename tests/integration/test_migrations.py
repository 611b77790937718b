"""Migrations build the schema the code expects, once, even when servers start together."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import pkgutil
import uuid

import asyncpg
import pytest

import server.db
from server.db import one
from server.db.migrate import Migration, MigrationError, load_migrations, migrate
from tests.conftest import create_database, drop_database, with_database


@pytest.fixture
async def empty_dsn(pg_admin_dsn, template_dsn):
    name = "e_" + (await create_database(pg_admin_dsn))[2:]
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    yield with_database(pg_admin_dsn, name)
    await drop_database(pg_admin_dsn, name)


async def test_two_servers_migrating_at_once_apply_each_migration_once(empty_dsn):
    first, second = await asyncpg.connect(empty_dsn), await asyncpg.connect(empty_dsn)
    try:
        applied = await asyncio.gather(migrate(first), migrate(second))
        names = [m.name for m in load_migrations()]
        assert sorted(applied[0] + applied[1]) == sorted(names)
        assert await first.fetchval("SELECT count(*) FROM schema_migrations") == len(names)
        assert await migrate(first) == []
    finally:
        await first.close()
        await second.close()


async def test_an_applied_migration_that_changed_is_refused(empty_dsn):
    conn = await asyncpg.connect(empty_dsn)
    try:
        migrations = load_migrations()
        await migrate(conn, migrations)
        edited = [Migration(m.version, m.name, m.sql + "\n-- edited") for m in migrations]
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await migrate(conn, edited)
    finally:
        await conn.close()


async def test_numbers_may_leave_gaps_but_a_migration_older_than_one_applied_is_refused(empty_dsn):
    """Branches number their migrations apart (and are renumbered when merged): a gap is
    fine, but a migration that would run after a later one already applied is not."""
    conn = await asyncpg.connect(empty_dsn)
    try:
        migrations = load_migrations()
        top = migrations[-1].version
        later = Migration(top + 2, f"{top + 2:04d}_later.sql", "CREATE TABLE later_one (id integer)")
        assert await migrate(conn, [*migrations, later]) == [m.name for m in migrations] + [later.name]
        earlier = Migration(top + 1, f"{top + 1:04d}_earlier.sql", "CREATE TABLE earlier_one (id integer)")
        with pytest.raises(MigrationError, match="older than"):
            await migrate(conn, [*migrations, earlier, later])
        assert await conn.fetchval("SELECT to_regclass('earlier_one')") is None
    finally:
        await conn.close()


def sql_constants() -> dict[str, dict[str, str]]:
    """Every module of server.db found on disk (so a new one cannot be missed), with its
    SQL: the public upper-case string constants. A module without any (the pool, the
    migration runner, the embedded server) holds no SQL and is left out."""
    found = {}
    for info in pkgutil.iter_modules(server.db.__path__):
        module = importlib.import_module(f"{server.db.__name__}.{info.name}")
        constants = {name: value for name, value in inspect.getmembers(module)
                     if name.isupper() and not name.startswith("_") and isinstance(value, str)}
        if constants:
            found[info.name] = constants
    return found


async def test_every_query_of_the_code_prepares_against_the_migrated_schema(db_dsn):
    """Each SQL constant in server.db must parse and type-check against the schema the
    migrations built: a renamed column or table fails here, not in production."""
    modules = sql_constants()
    # The discovery itself must see the modules that hold SQL, the small ones included.
    assert {"accounts", "authorizations", "collections", "idempotency", "ledger", "limits", "loans",
            "repayments", "reserve", "risk"} <= modules.keys()
    assert not {"embedded", "migrate", "pool"} & modules.keys()
    conn = await asyncpg.connect(db_dsn)
    try:
        for module, constants in modules.items():
            for name, sql in constants.items():
                try:
                    await conn.prepare(sql)
                except asyncpg.PostgresError as error:
                    raise AssertionError(f"server.db.{module}.{name} does not prepare: {error}") from error
        assert sum(len(constants) for constants in modules.values()) >= 80
    finally:
        await conn.close()


async def test_an_unbalanced_journal_entry_cannot_commit(db_dsn):
    conn = await asyncpg.connect(db_dsn)
    try:
        account_id = await conn.fetchval("""
            INSERT INTO accounts (account_id, customer_id, status, risk_grade, contact_name, contact_email,
                                  contact_phone, locale, time_zone, created_at, updated_at, statement_day)
            VALUES (gen_random_uuid(), 'c', 'ACTIVE', 'C', 'n', 'e@x.io', '+8613800138000', 'en',
                    'Asia/Shanghai', now(), now(), 1) RETURNING account_id""")
        with pytest.raises(asyncpg.CheckViolationError, match="does not balance"):
            async with conn.transaction():
                entry_id = await conn.fetchval("""
                    INSERT INTO journal_entries (entry_id, account_id, kind, reference_id, created_at, sequence,
                                                 previous_sha256, entry_sha256)
                    VALUES (gen_random_uuid(), $1, 'TEST', gen_random_uuid(), now(), 1, sha256(''), sha256(''))
                    RETURNING entry_id""",
                                               account_id)
                await conn.execute("""
                    INSERT INTO postings (entry_id, line, account_id, ledger_account, amount_minor)
                    VALUES ($1, 1, $2, 'PRINCIPAL_RECEIVABLE', 100), ($1, 2, $2, 'MERCHANT_PAYABLE', -99)""",
                                   entry_id, account_id)
        assert await conn.fetchval("SELECT count(*) FROM postings") == 0
    finally:
        await conn.close()


async def test_idempotency_records_move_to_the_bucket_of_the_account_their_reply_names(empty_dsn):
    """Migration 0013 on a populated database: each record goes to the account its stored
    reply names (OpenAccount's to the id derived from the customer, which a retry looks
    in), and one whose reply names none to the nil UUID's bucket."""
    from credit.v1 import checkout_pb2, credit_line_pb2, repayment_pb2
    from server.domain.accounts import account_id_of_customer

    conn = await asyncpg.connect(empty_dsn)
    try:
        migrations = load_migrations()
        before = [m for m in migrations if m.version < 13]
        await migrate(conn, before)
        account_id = uuid.uuid4()
        await conn.execute("""
            INSERT INTO accounts (account_id, customer_id, status, risk_grade, contact_name, contact_email,
                                  contact_phone, locale, time_zone, created_at, updated_at)
            VALUES ($1, 'cust-é-1', 'ACTIVE', 'C', 'n', 'e', 'p', 'en', 'Asia/Shanghai', now(), now())""",
                           account_id)
        account = credit_line_pb2.Account(account_id=str(account_id), customer_id="cust-é-1", credit_limit_minor=5)
        replies = {
            "OpenAccount": account,
            "AdjustLimit": account,
            "Authorize": checkout_pb2.Authorization(authorization_id=str(uuid.uuid4()), account_id=str(account_id),
                                                     amount_minor=300, term_months=3),
            "Repay": repayment_pb2.Repayment(repayment_id=str(uuid.uuid4()), amount_minor=7, account=account,
                                             account_id=str(account_id)),
            "AssessCredit": credit_line_pb2.AssessCreditResponse(score=640, account=account),
            "Void": checkout_pb2.Authorization(authorization_id=str(uuid.uuid4())),
        }
        for method, reply in replies.items():
            await conn.execute("""
                INSERT INTO idempotency_records (caller, method, idempotency_key, request_sha256, response)
                VALUES ('orders', $1, 'k', '\\x00', $2)""", method, reply.SerializeToString(deterministic=True))
        await conn.execute("""
            INSERT INTO idempotency_records (caller, method, idempotency_key, request_sha256, response)
            VALUES ('orders', 'Capture', 'k', '\\x00', '\\xffff0a')""")
        await migrate(conn, migrations)
        buckets = {r["method"]: r["account_id"] for r in await conn.fetch(
            "SELECT method, account_id FROM idempotency_records")}
        nil = uuid.UUID(int=0)
        assert buckets == {"OpenAccount": account_id_of_customer("cust-é-1"), "AdjustLimit": account_id,
                           "Authorize": account_id, "Repay": account_id, "AssessCredit": account_id,
                           "Void": nil, "Capture": nil}
    finally:
        await conn.close()


async def test_the_schema_takes_exactly_the_domains_contact_attempt_values(db_dsn):
    """The database checks channel, status, reason and outcome against the same names as
    the domain and the contract: a value added to one and not the other fails here."""
    import re

    from server.domain.reminders import AttemptStatus, Channel, Outcome, Reason

    conn = await asyncpg.connect(db_dsn)
    try:
        checks = {r["definition"] for r in await conn.fetch(
            "SELECT pg_get_constraintdef(oid) AS definition FROM pg_constraint "
            "WHERE conrelid = 'contact_attempts'::regclass AND contype = 'c'")}
    finally:
        await conn.close()

    def allowed(column: str) -> set[str]:
        [definition] = [d for d in checks if re.match(rf"CHECK \(\(?{column} ", d)]
        return set(re.findall(r"'([A-Z_]+)'::text", definition))

    assert allowed("channel") == set(Channel)
    assert allowed("status") == set(AttemptStatus)
    assert allowed("reason") == set(Reason)
    assert allowed("outcome") == set(Outcome)


async def test_migration_0014_plans_existing_attempts_and_snapshots_existing_cases(empty_dsn):
    """On a populated database: each attempt gets the day its step is for (a step no
    longer in the strategy, its installment's due date), and each case its penalty owed on
    active loans and its last write as the time of its snapshot."""
    conn = await asyncpg.connect(empty_dsn)
    try:
        migrations = load_migrations()
        await migrate(conn, [m for m in migrations if m.version < 14])
        account_id, loan_id, other_loan = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        # Only the rows this migration reads: foreign keys and triggers are not the point.
        await conn.execute("SET session_replication_role = replica")
        await conn.execute("""
            INSERT INTO accounts (account_id, customer_id, status, risk_grade, contact_name, contact_email,
                                  contact_phone, locale, time_zone, created_at, updated_at)
            VALUES ($1, 'c-14', 'ACTIVE', 'C', 'n', 'e', 'p', 'en', 'Asia/Shanghai', now(), now())""", account_id)
        for loan, status in ((loan_id, "ACTIVE"), (other_loan, "PAID_OFF")):
            await conn.execute("""
                INSERT INTO loans (loan_id, account_id, authorization_id, status, principal_minor, term_months,
                                   method, monthly_rate_bps, apr_bps, merchant_id, order_id, currency, start_date,
                                   created_at, updated_at)
                VALUES ($1, $2, gen_random_uuid(), $3, 300000, 3, 'FLAT_FEE', 60, 1077, 'm', 'o', 'CNY',
                        '2027-01-15', now(), now())""", loan, account_id, status)
            await conn.execute("""
                INSERT INTO installments (loan_id, sequence, account_id, due_date, principal_minor, fee_minor,
                                          penalty_minor, penalty_paid_minor)
                VALUES ($1, 1, $2, '2027-02-15', 100000, 1800, 150, 40)""", loan, account_id)
        for step in ("D-3_EMAIL", "D+7_VOICE", "RETIRED_STEP"):
            await conn.execute("""
                INSERT INTO contact_attempts (attempt_id, account_id, loan_id, sequence, step_code, channel, status,
                                              created_at, updated_at)
                VALUES (gen_random_uuid(), $1, $2, 1, $3, 'EMAIL', 'SENT', '2027-02-20T02:00:00Z', now())""",
                               account_id, loan_id, step)
        await conn.execute("""
            INSERT INTO collection_cases (account_id, bucket, days_past_due, overdue_minor, opened_at, updated_at)
            VALUES ($1, 'M1', 5, 101950, '2027-02-20T02:00:00Z', '2027-02-21T02:00:00Z')""", account_id)
        await conn.execute("SET session_replication_role = DEFAULT")
        await migrate(conn, migrations)

        planned = {r["step_code"]: r["planned_for"].isoformat() for r in await conn.fetch(
            "SELECT step_code, planned_for FROM contact_attempts")}
        assert planned == {"D-3_EMAIL": "2027-02-12", "D+7_VOICE": "2027-02-22", "RETIRED_STEP": "2027-02-15"}
        case = one(await conn.fetchrow("SELECT penalty_owed_minor, reviewed_at, updated_at FROM collection_cases"))
        assert case["penalty_owed_minor"] == 110  # the active loan's 150 less 40 paid; the paid-off loan not
        assert case["reviewed_at"] == case["updated_at"]
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("UPDATE collection_cases SET penalty_owed_minor = -1")
    finally:
        await conn.close()


async def test_migration_0016_gives_existing_accounts_the_day_they_opened_in_their_zone(empty_dsn):
    conn = await asyncpg.connect(empty_dsn)
    try:
        migrations = load_migrations()
        await migrate(conn, [m for m in migrations if m.version < 16])
        opened = {
            "c-early": ("2026-10-03T20:00:00Z", "Asia/Shanghai"),      # the 4th in Shanghai
            "c-late": ("2026-10-30T20:00:00Z", "Asia/Shanghai"),       # the 31st: capped at 28
            "c-west": ("2026-10-03T20:00:00Z", "America/Los_Angeles"),  # still the 3rd there
        }
        for customer, (created_at, zone) in opened.items():
            await conn.execute("""
                INSERT INTO accounts (account_id, customer_id, status, risk_grade, contact_name, contact_email,
                                      contact_phone, locale, time_zone, created_at, updated_at)
                VALUES (gen_random_uuid(), $1, 'ACTIVE', 'C', 'n', 'e', 'p', 'en', $2, $3::text::timestamptz, now())""",
                               customer, zone, created_at)
        await migrate(conn, migrations)
        days = {r["customer_id"]: (r["statement_day"], r["payment_due_days"]) for r in await conn.fetch(
            "SELECT customer_id, statement_day, payment_due_days FROM accounts")}
        assert days == {"c-early": (4, 20), "c-late": (28, 20), "c-west": (3, 20)}
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("UPDATE accounts SET statement_day = 29")
    finally:
        await conn.close()


async def test_the_journal_chain_migration_chains_existing_entries_in_the_order_they_were_made(empty_dsn):
    """The journal chain migration on a populated journal: each account's entries get sequences by time
    (then entry id, for entries of one statement), previous hashes and hashes that the
    checker recomputes with the encoding auditors use; the accounts rows get the heads,
    and an account without entries keeps the empty chain's."""
    from server import invariants
    from server.domain import journal

    conn = await asyncpg.connect(empty_dsn)
    try:
        migrations = load_migrations()
        # Found by name, so that the test follows the migration if it is renumbered.
        chain = next(m.version for m in migrations if m.name.endswith("_journal_chain.sql"))
        await migrate(conn, [m for m in migrations if m.version < chain])
        accounts = [uuid.uuid4() for _ in range(3)]
        for n, account_id in enumerate(accounts):
            await conn.execute("""
                INSERT INTO accounts (account_id, customer_id, status, risk_grade, contact_name, contact_email,
                                      contact_phone, locale, time_zone, created_at, updated_at, statement_day)
                VALUES ($1, $2, 'ACTIVE', 'C', 'n', 'e@x.io', '+8613800138000', 'en', 'Asia/Shanghai', now(), now(), 1)
            """, account_id, f"chain-{n}")
        # Two accounts with entries; two of the first account's share their time.
        made = [(accounts[0], "2026-01-02 03:04:05.678901+00", 500), (accounts[0], "2026-01-01 00:00:00+00", 100),
                (accounts[0], "2026-01-02 03:04:05.678901+00", 700), (accounts[1], "2026-02-01 00:00:00+00", 42)]
        for account_id, created_at, amount in made:
            async with conn.transaction():
                entry_id = await conn.fetchval("""
                    INSERT INTO journal_entries (entry_id, account_id, kind, reference_id, created_at)
                    VALUES (gen_random_uuid(), $1, 'LOAN_CAPTURED', gen_random_uuid(), $2::text::timestamptz)
                    RETURNING entry_id""", account_id, created_at)
                await conn.execute("""
                    INSERT INTO postings (entry_id, line, account_id, ledger_account, amount_minor)
                    VALUES ($1, 1, $2, 'PRINCIPAL_RECEIVABLE', $3), ($1, 2, $2, 'MERCHANT_PAYABLE', -$3::bigint)""",
                                   entry_id, account_id, amount)
        await migrate(conn, migrations)

        rows = await conn.fetch("""
            SELECT e.account_id, e.entry_id, e.sequence, e.created_at, e.previous_sha256, e.entry_sha256
            FROM journal_entries e ORDER BY e.account_id, e.sequence""")
        first = [r for r in rows if r["account_id"] == accounts[0]]
        assert [r["sequence"] for r in first] == [1, 2, 3]
        assert [(r["created_at"], r["entry_id"]) for r in first] == sorted((r["created_at"], r["entry_id"])
                                                                           for r in first)
        assert bytes(first[0]["previous_sha256"]) == journal.GENESIS
        assert [bytes(r["previous_sha256"]) for r in first[1:]] == [bytes(r["entry_sha256"]) for r in first[:-1]]
        heads = {r["account_id"]: (r["journal_length"], bytes(r["journal_head_sha256"])) for r in await conn.fetch(
            "SELECT account_id, journal_length, journal_head_sha256 FROM accounts")}
        assert heads[accounts[0]] == (3, bytes(first[-1]["entry_sha256"]))
        assert heads[accounts[1]][0] == 1
        assert heads[accounts[2]] == (0, journal.GENESIS)
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            assert await invariants.chain_breaks(conn) == []
    finally:
        await conn.close()


async def test_the_reminders_per_bill_migration_dates_existing_attempts_by_their_bill_and_keeps_them_as_taken(
        empty_dsn):
    """On a populated database: attempts made per installment get their installment's
    due date and keep naming it; two loans' attempts of one step on one day both stay,
    and stand for that bill's step; new attempts are one per (account, due date, step)."""
    from datetime import UTC, date, datetime

    from server.core.contact_attempts import AttemptPolicy, ContactAttempts
    from server.db import collections as collection_rows
    from server.domain.penalties import PenaltyPolicy
    from server.domain.reminders import EMAIL_RETRY, VOICE_RETRY, ContactRules

    conn = await asyncpg.connect(empty_dsn)
    try:
        migrations = load_migrations()
        version = next(m.version for m in migrations if m.name.endswith("_reminders_per_bill.sql"))
        await migrate(conn, [m for m in migrations if m.version < version])
        account_id, loans = uuid.uuid4(), [uuid.uuid4(), uuid.uuid4()]
        await conn.execute("SET session_replication_role = replica")
        await conn.execute("""
            INSERT INTO accounts (account_id, customer_id, status, risk_grade, contact_name, contact_email,
                                  contact_phone, locale, time_zone, created_at, updated_at, statement_day)
            VALUES ($1, 'c-22', 'ACTIVE', 'C', 'n', 'e', 'p', 'en', 'Asia/Shanghai', now(), now(), 15)""",
                           account_id)
        for loan_id in loans:
            await conn.execute("""
                INSERT INTO loans (loan_id, account_id, authorization_id, status, principal_minor, term_months,
                                   method, monthly_rate_bps, apr_bps, merchant_id, order_id, currency, start_date,
                                   created_at, updated_at)
                VALUES ($1, $2, gen_random_uuid(), 'ACTIVE', 300000, 3, 'FLAT_FEE', 60, 1077, 'm', $3, 'CNY',
                        '2027-01-15', now(), now())""", loan_id, account_id, str(loan_id))
            for sequence, due in ((1, "2027-02-15"), (2, "2027-03-15")):
                await conn.execute("""
                    INSERT INTO installments (loan_id, sequence, account_id, due_date, principal_minor, fee_minor)
                    VALUES ($1, $2, $3, $4::text::date, 100000, 1800)""", loan_id, sequence, account_id, due)
            await conn.execute("""
                INSERT INTO contact_attempts (attempt_id, account_id, loan_id, sequence, step_code, channel, status,
                                              message_id, planned_for, created_at, updated_at)
                VALUES (gen_random_uuid(), $1, $2, 1, 'D-3_EMAIL', 'EMAIL', 'SENT', $3, '2027-02-12', now(), now())""",
                               account_id, loan_id, f"<reminder.{loan_id}.1.D-3_EMAIL@credit.example>")
        await conn.execute("SET session_replication_role = DEFAULT")
        await migrate(conn, migrations)

        stored = await conn.fetch("SELECT loan_id, sequence, due_date, message_id FROM contact_attempts")
        assert {(r["loan_id"], r["sequence"], r["due_date"]) for r in stored} == {
            (loan_id, 1, date(2027, 2, 15)) for loan_id in loans}
        attempts = ContactAttempts(AttemptPolicy(ContactRules(), EMAIL_RETRY, VOICE_RETRY, PenaltyPolicy(),
                                                 "credit.example"))
        assert set(await attempts.of_account(conn, account_id)) == {(date(2027, 2, 15), "D-3_EMAIL")}

        now = datetime.now(UTC)

        async def per_bill(due: date):
            return await collection_rows.insert_attempt(
                conn, attempt_id=uuid.uuid4(), account_id=account_id, due_date=due, step_code="D-3_EMAIL",
                channel="EMAIL", status="PENDING", reason=None, message_id=None, planned_for=due, now=now)

        assert await per_bill(date(2027, 3, 15)) is not None
        assert await per_bill(date(2027, 3, 15)) is None  # one per (account, due date, step)
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("UPDATE contact_attempts SET sequence = NULL WHERE loan_id IS NOT NULL")
    finally:
        await conn.close()


async def test_the_merchant_payments_migration_holds_days_settled_before_it_and_marks_their_fee_to_book(empty_dsn):
    conn = await asyncpg.connect(empty_dsn)
    try:
        migrations = load_migrations()
        version = next(m.version for m in migrations if m.name.endswith("_merchant_payment_results.sql"))
        await migrate(conn, [m for m in migrations if m.version < version])
        for merchant_id, net, status, key in (("shop-1", 99_400, "REQUESTED", uuid.uuid4()),
                                              ("shop-2", -5_000, "CARRIED", None),
                                              ("shop-3", 0, "CARRIED", None)):
            fee = 0 if merchant_id == "shop-3" else 600
            await conn.execute("""
                INSERT INTO merchant_settlements (merchant_id, settlement_date, settlement_id, category, fee_bps,
                    captured_minor, refunded_minor, fee_minor, carried_in_minor, net_minor, status,
                    payment_order_id, created_at)
                VALUES ($1, '2027-01-15', gen_random_uuid(), 'GENERAL', 60, $2, $3, $4, 0, $5, $6, $7, now())""",
                               merchant_id, 100_000 if fee else 0, 100_000 - net - fee if fee else 0, fee, net,
                               status, key)
        await migrate(conn, migrations)
        rows = {r["merchant_id"]: tuple(r.values())[1:] for r in await conn.fetch("""
            SELECT merchant_id, fee_booked, submitted_at = 'infinity' AS held, payee_id, payment_attempts
            FROM merchant_settlements""")}
        assert rows == {"shop-1": (False, True, "shop-1", 1), "shop-2": (False, None, None, 0),
                        "shop-3": (True, None, None, 0)}
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("INSERT INTO merchants VALUES ('m', 'GENERAL', now(), now(), 'a b')")
    finally:
        await conn.close()
