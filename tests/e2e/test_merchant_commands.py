"""python -m server.merchants against the database the real server writes: a merchant is
registered, its category and payee read back and changed, a day that is not FAILED
refused when asked to be paid again, and its day written to a file."""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from tests.e2e.test_commands import command
from tests.support import buy


async def test_merchants_are_registered_and_their_day_written_from_the_command_line(api, server, tmp_path):
    url = server.database_url
    registered = command(url, "server.merchants", "register", "gadget-4410", "--category", "electronics")
    assert registered.returncode == 0 and registered.stdout.strip() == "registered gadget-4410 as ELECTRONICS", \
        registered.stderr
    shown = command(url, "server.merchants", "category", "gadget-4410")
    assert shown.stdout.strip() == "gadget-4410 ELECTRONICS 120 bps, paid to gadget-4410"
    assert command(url, "server.merchants", "category", "stall-1").stdout.strip() == \
        "stall-1 GENERAL 60 bps, paid to stall-1"
    moved = command(url, "server.merchants", "payee", "gadget-4410", "gadget-4410-boc-1")
    assert moved.returncode == 0 and moved.stdout.strip() == "gadget-4410 is paid to gadget-4410-boc-1", moved.stderr
    assert command(url, "server.merchants", "category", "gadget-4410").stdout.strip().endswith("gadget-4410-boc-1")
    unregistered = command(url, "server.merchants", "payee", "stall-1", "stall-1-acct")
    assert unregistered.returncode != 0 and "stall-1" in unregistered.stderr
    not_settled = command(url, "server.merchants", "pay-again", "gadget-4410", "--date", "2027-01-15")
    assert not_settled.returncode != 0 and "date" in not_settled.stderr
    wrong = command(url, "server.merchants", "register", "gadget-4410", "--category", "toys")
    assert wrong.returncode != 0 and "category" in wrong.stderr

    account = await api.open_account(limit_minor=1_000_000)
    await buy(api, account.account_id, 300_000, merchant_id="gadget-4410")
    # The server's clock is the wall clock: the capture is in today's Shanghai day
    # (or, a moment past midnight, in tomorrow's).
    days = {datetime.now(UTC).astimezone(ZoneInfo("Asia/Shanghai")).date() + timedelta(days=d) for d in (-1, 0)}
    written = [command(url, "server.merchants", "statement", "--date", day.isoformat(), "--out", str(tmp_path),
                       "--merchant", "gadget-4410") for day in sorted(days)]
    files = list(tmp_path.glob("merchant-settlement-gadget-4410-*.csv"))
    assert len(files) == 1, [w.stderr for w in written]
    with files[0].open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["line"], r["kind"], r["amount_minor"]) for r in rows] == [
        ("ITEM", "CAPTURE", "300000"), ("FEE", "ELECTRONICS:120", "-3600"), ("CARRIED_IN", "", "0"),
        ("NET", "", "296400"), ("PAYMENT", "", "296400")]
