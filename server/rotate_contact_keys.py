"""python -m server.rotate_contact_keys: re-encrypt contact data with CONTACT_KEY_ID.

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

BATCH = 500


async def _main(dsn: str) -> tuple[int, int]:
    """(rewritten, still under another key). Rows locked by live traffic are skipped by a
    batch; they are counted at the end, without skipping, so none is missed silently."""
    conn = await asyncpg.connect(dsn)
    total = 0
    try:
        while True:
            async with conn.transaction():
                done = await rotate_contacts(conn, BATCH)
            total += done
            if done < BATCH:
                break
        return total, await remaining(conn)
    finally:
        await conn.close()


def main() -> None:
    database_url, _ = command_settings("to re-encrypt")
    rewritten, left = asyncio.run(_main(database_url))
    print(f"re-encrypted {rewritten} accounts; {left} still under another key")
    if left:
        sys.exit("some accounts were busy: run it again before removing the old key")


if __name__ == "__main__":
    main()
