"""python -m server.risk.review [--as-of 2027-03-01T09:00:00+08:00]

The periodic limit review: raises limits for customers who repay on time, cuts them
for customers who are late, freezes accounts 31 or more days past due; every change
and every refused raise is an account event with its reason codes."""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime

from server.config import command_settings
from server.core.limits import review_limits
from server.db.pool import create_pool
from server.logging import configure_logging


async def _main(dsn: str, now: datetime) -> None:
    pool = await create_pool(dsn, min_size=1, max_size=2, command_timeout_s=60)
    try:
        report = await review_limits(pool, now)
    finally:
        await pool.close()
    print(f"reviewed: {dict(report.actions)}; busy, left for the next run: {report.busy}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--as-of", type=datetime.fromisoformat, default=None)
    args = parser.parse_args()
    database_url, log_level = command_settings("to review")
    now = args.as_of or datetime.now(UTC)
    if now.tzinfo is None:
        parser.error("--as-of needs a UTC offset")
    configure_logging(log_level)
    asyncio.run(_main(database_url, now))


if __name__ == "__main__":
    main()
