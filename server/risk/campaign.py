"""python -m server.risk.campaign --grades A,B --raise-minor 500000 \\
       --expires-at 2027-11-12T00:00:00+08:00 --reason "Double 11"

Grant a temporary limit raise, ending at --expires-at, to every active account of the
given grades that has nothing overdue (a holiday or promotion cohort). --expires-at may
be at most TEMPORARY_LIMIT_MAX_DAYS (default 90) days ahead, as for GrantTemporaryLimit.
An account whose own temporary raise in force is larger or ends later keeps it: a
campaign never lowers nor shortens a raise."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import UTC, datetime, timedelta

from server.config import SettingsError, command_settings, temporary_limit_max_days_setting
from server.core.limits import CampaignReport, grant_campaign
from server.db.pool import create_pool
from server.domain.pricing import Grade
from server.logging import configure_logging


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grades", required=True, help="comma-separated, e.g. A,B")
    parser.add_argument("--raise-minor", type=int, required=True)
    parser.add_argument("--expires-at", type=datetime.fromisoformat, required=True)
    parser.add_argument("--reason", required=True)
    args = parser.parse_args()
    try:
        grades = [Grade(g.strip().upper()) for g in args.grades.split(",") if g.strip()]
    except ValueError:
        parser.error("--grades: use letters A to E")
    now = datetime.now(UTC)
    if args.expires_at.tzinfo is None or args.expires_at <= now:
        parser.error("--expires-at must be in the future, with a UTC offset")
    if not 0 < args.raise_minor <= 100_000_000_000:
        parser.error("--raise-minor must be a positive amount in fen")
    try:
        max_days = temporary_limit_max_days_setting(os.environ)
    except SettingsError as error:
        sys.exit(f"bad setting: {error}")
    if args.expires_at > now + timedelta(days=max_days):
        parser.error(f"--expires-at must be at most {max_days} days ahead (TEMPORARY_LIMIT_MAX_DAYS)")
    database_url, log_level = command_settings("of the accounts")
    configure_logging(log_level)

    async def run() -> CampaignReport:
        pool = await create_pool(database_url, min_size=1, max_size=2, command_timeout_s=60)
        try:
            return await grant_campaign(pool, grades=grades, raise_minor=args.raise_minor,
                                        expires_at=args.expires_at, reason=args.reason, now=now,
                                        max_days=max_days)
        finally:
            await pool.close()

    report = asyncio.run(run())
    print(f"granted to {report.granted} accounts; {report.kept} kept a temporary limit at least as good; "
          f"{report.busy} busy (run again for them)")


if __name__ == "__main__":
    main()
