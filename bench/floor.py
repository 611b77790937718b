"""The floor: the least a correct Authorize can cost on this stack, to measure the real
service against in the same run.

One method, `/credit.v1.CheckoutService/Authorize`, served by grpc.aio on uvloop with
no generated classes: the request's bytes are read with a small wire-format parser (the
account, the amount and the idempotency key), ONE SQL statement claims the key, takes
the limit if it is there and records the hold, and the reply is a hand-encoded
Authorization (id, account, status, decline reason, amount). No logging per call.

Its tables are prefixed `floor_` and made on start, so it can share the service's
database.

    python -m bench.floor --listen 127.0.0.1:50070 --dsn postgresql://...
    python -m bench.floor --listen 127.0.0.1:0 --dsn ... --accounts 100   # and seed accounts

It prints `floor serving on HOST:PORT` once serving (after a JSON line of account ids
with --accounts) and stops cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys

import asyncpg
import grpc
import uvloop

from bench.wire import WireError, as_int64, bytes_field, parse_fields, varint_field

SERVICE = "credit.v1.CheckoutService"
METHOD = "Authorize"
PATH = f"/{SERVICE}/{METHOD}"

# checkout.proto field numbers.
# AuthorizeRequest
REQ_ACCOUNT_ID, REQ_AMOUNT_MINOR, REQ_IDEMPOTENCY_KEY = 1, 4, 7
# Authorization
AUTH_ID, AUTH_ACCOUNT_ID, AUTH_STATUS, AUTH_DECLINE_REASON, AUTH_AMOUNT_MINOR = 1, 2, 5, 6, 7
# AuthorizationStatus / DeclineReason
STATUS_PENDING, STATUS_DECLINED = 1, 5
DECLINE_INSUFFICIENT_LIMIT = 1

POOL_SIZE = 16
MAX_AMOUNT_MINOR = 100_000_000_000

SCHEMA = """
SELECT pg_advisory_xact_lock(hashtext('bench.floor schema'));
CREATE TABLE IF NOT EXISTS floor_accounts (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    credit_limit bigint NOT NULL CHECK (credit_limit >= 0),
    held bigint NOT NULL DEFAULT 0 CHECK (held >= 0 AND held <= credit_limit)
);
CREATE TABLE IF NOT EXISTS floor_idempotency (
    key text PRIMARY KEY,
    account_id uuid NOT NULL,
    amount_minor bigint NOT NULL,
    authorization_id uuid NOT NULL
);
CREATE TABLE IF NOT EXISTS floor_holds (
    id uuid PRIMARY KEY,
    account_id uuid NOT NULL,
    amount_minor bigint NOT NULL CHECK (amount_minor > 0),
    status smallint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
"""

# $1 account, $2 amount, $3 idempotency key. The claim, the conditional take of the limit
# and the hold row are one statement; a retried key finds the first reply in the second
# branch (`same` is false when the key came with a different request). No row: the first
# call with this key has not committed yet.
AUTHORIZE = """
WITH claim AS (
    INSERT INTO floor_idempotency (key, account_id, amount_minor, authorization_id)
    VALUES ($3, $1, $2, gen_random_uuid())
    ON CONFLICT (key) DO NOTHING
    RETURNING authorization_id
), take AS (
    UPDATE floor_accounts SET held = held + $2
    WHERE id = $1 AND credit_limit - held >= $2 AND EXISTS (SELECT FROM claim)
    RETURNING id
), hold AS (
    INSERT INTO floor_holds (id, account_id, amount_minor, status)
    SELECT authorization_id, $1, $2, CASE WHEN EXISTS (SELECT FROM take) THEN 1 ELSE 5 END FROM claim
    RETURNING id, status
)
SELECT id::text, status, true AS same FROM hold
UNION ALL
SELECT h.id::text, h.status, i.account_id = $1 AND i.amount_minor = $2
FROM floor_idempotency i JOIN floor_holds h ON h.id = i.authorization_id
WHERE i.key = $3 AND NOT EXISTS (SELECT FROM claim)
"""

SEED_ACCOUNTS = """
INSERT INTO floor_accounts (credit_limit) SELECT $2 FROM generate_series(1, $1) RETURNING id::text
"""


async def create_schema(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        await conn.execute(SCHEMA)


async def seed_accounts(conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, count: int,
                        credit_limit_minor: int) -> list[str]:
    """`count` new floor accounts with that limit and nothing held; their ids."""
    return [row[0] for row in await conn.fetch(SEED_ACCOUNTS, count, credit_limit_minor)]


def encode_authorization(authorization_id: str, account_id: bytes, status: int, amount_minor: int) -> bytes:
    return b"".join((
        bytes_field(AUTH_ID, authorization_id.encode()),
        bytes_field(AUTH_ACCOUNT_ID, account_id),
        varint_field(AUTH_STATUS, status),
        varint_field(AUTH_DECLINE_REASON, DECLINE_INSUFFICIENT_LIMIT if status == STATUS_DECLINED else 0),
        varint_field(AUTH_AMOUNT_MINOR, amount_minor),
    ))


def parse_authorize(request: bytes) -> tuple[bytes, int, str]:
    """(account id, amount, idempotency key) of an AuthorizeRequest, or ValueError."""
    fields = parse_fields(request)
    account = fields.get(REQ_ACCOUNT_ID, b"")
    amount = fields.get(REQ_AMOUNT_MINOR, 0)
    key = fields.get(REQ_IDEMPOTENCY_KEY, b"")
    if not isinstance(account, bytes) or not isinstance(key, bytes) or not isinstance(amount, int):
        raise WireError("a field has the wrong wire type")
    amount = as_int64(amount)
    if not account:
        raise ValueError("account_id is required")
    if not 0 < amount <= MAX_AMOUNT_MINOR:
        raise ValueError(f"amount_minor must be between 1 and {MAX_AMOUNT_MINOR}")
    if not key:
        raise ValueError("idempotency_key is required")
    return account, amount, key.decode()


def authorize_handler(pool: asyncpg.Pool):
    async def authorize(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            account, amount, key = parse_authorize(request)
            row = await pool.fetchrow(AUTHORIZE, account.decode(), amount, key)
        except (ValueError, asyncpg.DataError) as error:  # WireError and bad UTF-8 are ValueErrors
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        if row is None:
            await context.abort(grpc.StatusCode.ABORTED, "the first call with this idempotency key is in progress")
        authorization_id, status, same = row
        if not same:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, "idempotency key reused for a different request")
        return encode_authorization(authorization_id, account, status, amount)

    return authorize


async def start_floor(dsn: str, listen: str, pool_size: int = POOL_SIZE) -> tuple[grpc.aio.Server, asyncpg.Pool, int]:
    """Make the tables, open the pool and start serving; (server, pool, port)."""
    conn = await asyncpg.connect(dsn, timeout=30)
    try:
        await create_schema(conn)
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(dsn, min_size=pool_size, max_size=pool_size, command_timeout=15)
    try:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        # No (de)serializers: raw bytes.
        handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(authorize_handler(pool))
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {METHOD: handler}),))
        port = server.add_insecure_port(listen)
        await server.start()
    except BaseException:
        await pool.close()
        raise
    return server, pool, port


async def serve(dsn: str, listen: str, accounts: int, credit_limit_minor: int) -> None:
    server, pool, port = await start_floor(dsn, listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        if accounts:
            async with pool.acquire() as conn:
                ids = await seed_accounts(conn, accounts, credit_limit_minor)
            print(json.dumps({"floor_accounts": ids}), flush=True)
        print(f"floor serving on {listen.rpartition(':')[0]}:{port}", flush=True)
        await stop.wait()
    finally:
        await server.stop(5)
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", default="127.0.0.1:50070", help="HOST:PORT (port 0: any free port)")
    parser.add_argument("--dsn", default=os.environ.get("DATABASE_URL"), help="postgresql:// URL (or DATABASE_URL)")
    parser.add_argument("--accounts", type=int, default=0, help="seed this many accounts and print their ids")
    parser.add_argument("--credit-limit-minor", type=int, default=10**10, help="limit of the seeded accounts")
    args = parser.parse_args()
    if not args.dsn:
        parser.error("--dsn (or DATABASE_URL) is required")
    if not 0 <= args.accounts <= 1_000_000:
        parser.error("--accounts must be between 0 and 1000000")
    try:
        uvloop.run(serve(args.dsn, args.listen, args.accounts, args.credit_limit_minor))
    except RuntimeError as error:  # e.g. the port is taken
        sys.exit(f"floor: {error}")


if __name__ == "__main__":
    main()
