"""python -m server.rotate_contact_keys: re-encrypt contact data with CONTACT_KEY_ID.

After adding a new key to CONTACT_KEYS and making it CONTACT_KEY_ID, run this; keep the
old key configured until it reports nothing left, then remove it. Rows are rewritten a
batch at a time under SKIP LOCKED, so it can run beside live traffic."""

from __future__ import annotations

import asyncio

import asyncpg

from server.config import command_settings
from server.db.accounts import rotate_contacts

BATCH = 500


async def _main(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    total = 0
    try:
        while True:
            async with conn.transaction():
                done = await rotate_contacts(conn, BATCH)
            total += done
            if done < BATCH:
                return total
    finally:
        await conn.close()


def main() -> None:
    database_url, _ = command_settings("to re-encrypt")
    print(f"re-encrypted {asyncio.run(_main(database_url))} accounts")


if __name__ == "__main__":
    main()
