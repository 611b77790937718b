"""python -m server.rotate_contact_keys: re-encrypt contact data, and the tokens of bound
payment instruments (which are sealed with the same keys), with CONTACT_KEY_ID.

After adding a new key to CONTACT_KEYS and making it CONTACT_KEY_ID, run this; keep the
old key configured until it reports nothing left, then remove it. Rows are rewritten a
batch at a time under SKIP LOCKED, so it can run beside live traffic."""

from __future__ import annotations

import asyncio
import sys

import asyncpg

from server.config import command_settings
from server.db.accounts import remaining_to_rotate as remaining
from server.db.accounts import rotate_contacts
from server.db.payment_orders import remaining_to_rotate as tokens_remaining
from server.db.payment_orders import rotate_tokens

BATCH = 500


async def _main(dsn: str) -> tuple[int, int]:
    """(rewritten, still under another key). Rows locked by live traffic are skipped by a
    batch; they are counted at the end, without skipping, so none is missed silently."""
    conn = await asyncpg.connect(dsn)
    total = 0
    try:
        for rotate in (rotate_contacts, rotate_tokens):
            while True:
                async with conn.transaction():
                    done = await rotate(conn, BATCH)
                total += done
                if done < BATCH:
                    break
        return total, await remaining(conn) + await tokens_remaining(conn)
    finally:
        await conn.close()


def main() -> None:
    database_url, _ = command_settings("to re-encrypt")
    rewritten, left = asyncio.run(_main(database_url))
    print(f"re-encrypted {rewritten} accounts and payment instruments; {left} still under another key")
    if left:
        sys.exit("some rows were busy: run it again before removing the old key")


if __name__ == "__main__":
    main()
