"""python -m server.risk.stress SCENARIO.json [--as-of 2027-09-30] [--format table|json]

A stress test of the book (RiskService.RunStressTest) for people: the expected loss,
the loss the insured share absorbs and the risk reserve's shortfall, under the loss
policy as it stands and under the scenario. SCENARIO is a JSON file, or the name of a
shipped one: baseline, downturn or severe (server/risk/scenarios/, explained in
docs/risk.md):

    {"name": "downturn", "description": "...",
     "pd_multiplier_bps": {"A": 15000, "B": 15000, "C": 17500, "D": 20000, "E": 20000},
     "lgd_bps": 9500, "roll_rate_multiplier_bps": 11500}

A grade left out keeps its PD; no lgd_bps keeps the policy's. Reads DATABASE_URL and
INSURANCE_SHARE_BPS; runs in a read-only transaction and writes nothing."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import date
from pathlib import Path

from server.clock import SystemClock
from server.config import command_settings
from server.core.portfolio import Portfolio, StressView
from server.db import acquire
from server.db.pool import create_pool
from server.domain.errors import CreditError, InvalidArgument
from server.domain.losses import Scenario, load_scenario, shipped_scenario
from server.logging import configure_logging
from server.risk import formats
from server.risk.report import insurance_share_bps

SHIPPED = ("baseline", "downturn", "severe")


def scenario_from(argument: str) -> Scenario:
    """A file, else a shipped scenario's name; exits naming what is wrong."""
    path = Path(argument)
    try:
        if path.is_file():
            return load_scenario(path)
        if argument in SHIPPED:
            return shipped_scenario(argument)
    except InvalidArgument as error:
        sys.exit(f"{argument}: {error.message}")
    except (OSError, ValueError) as error:
        sys.exit(f"{argument}: not a readable JSON scenario ({error})")
    sys.exit(f"{argument}: no such file, and not one of the shipped scenarios ({', '.join(SHIPPED)})")


async def run(dsn: str, scenario: Scenario, as_of: date | None) -> StressView:
    portfolio = Portfolio(SystemClock(), insurance_share_bps=insurance_share_bps())
    pool = await create_pool(dsn, min_size=1, max_size=1, command_timeout_s=600)
    try:
        async with acquire(pool) as conn:
            return await portfolio.stress(conn, scenario, as_of)
    finally:
        await pool.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", help="a scenario JSON file, or baseline, downturn or severe")
    parser.add_argument("--as-of", type=date.fromisoformat, default=None, help="YYYY-MM-DD; default today")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    args = parser.parse_args(argv)
    scenario = scenario_from(args.scenario)
    database_url, log_level = command_settings("to stress")
    configure_logging(log_level)
    try:
        view = asyncio.run(run(database_url, scenario, args.as_of))
    except CreditError as error:
        sys.exit(f"refused: {error.message}")
    sys.stdout.write(formats.as_json(formats.stress_data(view)) if args.format == "json"
                     else formats.stress_table(view))


if __name__ == "__main__":
    main()
