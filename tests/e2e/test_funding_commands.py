"""python -m server.funding against the database the real server writes: partners are
added, listed, changed, deactivated and settled from the command line."""

from __future__ import annotations

import csv
import json

from tests.e2e.test_commands import command


def test_partners_are_managed_and_settled_from_the_command_line(server, tmp_path):
    url = server.database_url
    added = command(url, "server.funding", "add", "cli-bank", "--name", "CLI Bank", "--principal-share-bps", "6000",
                    "--fee-share-bps", "4000", "--max-exposure-minor", "5000000", "--grades", "a,b", "--terms", "3,6",
                    "--exposure-stripes", "4")
    assert added.returncode == 0 and added.stdout.strip() == "added cli-bank", added.stderr
    again = command(url, "server.funding", "add", "cli-bank", "--name", "Again", "--principal-share-bps", "1",
                    "--fee-share-bps", "0", "--max-exposure-minor", "1", "--grades", "A", "--terms", "3")
    assert again.returncode != 0 and "exists" in again.stderr

    # The platform keeps at least 30 %: the command says which setting is wrong.
    greedy = command(url, "server.funding", "update", "cli-bank", "--principal-share-bps", "7500")
    assert greedy.returncode != 0 and "principal_share_bps" in greedy.stderr

    updated = command(url, "server.funding", "update", "cli-bank", "--max-exposure-minor", "8000000",
                      "--terms", "3,6,12")
    assert updated.returncode == 0, updated.stderr
    listed = command(url, "server.funding", "list", "--format", "json")
    (bank,) = [p for p in json.loads(listed.stdout) if p["partner_id"] == "cli-bank"]
    assert (bank["principal_share_bps"], bank["max_exposure_minor"], bank["terms"], bank["grades"], bank["active"]) == (
        6000, 8_000_000, [3, 6, 12], ["A", "B"], True)

    assert command(url, "server.funding", "deactivate", "cli-bank").returncode == 0
    table = command(url, "server.funding", "list")
    assert table.returncode == 0 and table.stdout.splitlines()[0].split()[:3] == ["partner_id", "name", "active"]
    assert "False" in next(line for line in table.stdout.splitlines() if line.startswith("cli-bank"))

    settled = command(url, "server.funding", "settle", "--date", "2027-02-10", "--out", str(tmp_path),
                      "--partner", "cli-bank")
    assert settled.returncode == 0, settled.stderr
    with (tmp_path / "settlement-cli-bank-2027-02-10.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["line"], r["amount_minor"]) for r in rows] == [("TOTAL", "0")]
