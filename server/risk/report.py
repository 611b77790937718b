"""python -m server.risk.report [--as-of 2027-09-30] [--format table|json|csv] [--plot FILE.png]

The portfolio report (RiskService.GetPortfolioReport) for people: the book as it
stood at the end of --as-of (default today) in each account's time zone. Totals,
outstanding principal by grade and delinquency bucket, vintage curves, roll rates and
the expected loss against the risk reserve; docs/risk.md says how each is computed and
what is shown as it is now rather than as of the date. --plot also draws the vintage
curves and the bucket mix into a PNG (needs the `report` extra: matplotlib).

Reads DATABASE_URL, and INSURANCE_SHARE_BPS as the server does. Writes nothing."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import date
from pathlib import Path

from server.clock import SystemClock
from server.config import SettingsError, command_settings, int_setting
from server.core.portfolio import Portfolio, PortfolioView
from server.db import acquire
from server.db.pool import create_pool
from server.domain.errors import CreditError
from server.logging import configure_logging
from server.risk import charts, formats


def insurance_share_bps() -> int:
    try:
        return int_setting(os.environ, "INSURANCE_SHARE_BPS", 0, minimum=0, maximum=10_000)
    except SettingsError as error:
        sys.exit(f"bad setting: {error}")


async def read_report(dsn: str, as_of: date | None) -> PortfolioView:
    portfolio = Portfolio(SystemClock(), insurance_share_bps=insurance_share_bps())
    pool = await create_pool(dsn, min_size=1, max_size=1, command_timeout_s=600)
    try:
        async with acquire(pool) as conn:
            return await portfolio.report(conn, as_of)
    finally:
        await pool.close()


def render(view: PortfolioView, fmt: str) -> str:
    if fmt == "json":
        return formats.as_json(formats.report_data(view))
    if fmt == "csv":
        return formats.report_csv(view)
    return formats.report_table(view)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--as-of", type=date.fromisoformat, default=None, help="YYYY-MM-DD; default today")
    parser.add_argument("--format", choices=formats.FORMATS, default="table")
    parser.add_argument("--plot", type=Path, default=None, help="also draw the chart into this PNG")
    args = parser.parse_args(argv)
    if args.plot is not None and args.plot.suffix.lower() != ".png":
        parser.error("--plot writes a PNG: give a file name ending in .png")
    database_url, log_level = command_settings("to report on")
    configure_logging(log_level)
    try:
        view = asyncio.run(read_report(database_url, args.as_of))
    except CreditError as error:
        sys.exit(f"refused: {error.message}")
    sys.stdout.write(render(view, args.format))
    if args.plot is not None:
        try:
            charts.plot(view, args.plot)
        except charts.ChartUnavailable as error:
            print(error, file=sys.stderr)
            sys.exit(2)
        print(f"chart written to {args.plot}", file=sys.stderr)


if __name__ == "__main__":
    main()
