"""Operators' commands against the database the real server writes."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

from tests.e2e.conftest import ROOT
from tests.support import buy


def command(database_url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "DATABASE_URL": database_url, "LOG_LEVEL": "warning"})


async def test_review_campaign_and_key_rotation_run_as_commands(api, server):
    account = await api.open_account(limit_minor=1_000_000)
    await buy(api, account.account_id, 300_000)

    review = command(server.database_url, "server.risk.review")
    assert review.returncode == 0 and review.stdout.startswith("reviewed:"), review.stderr

    expires = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    campaign = command(server.database_url, "server.risk.campaign", "--grades", "B", "--raise-minor", "200000",
                       "--expires-at", expires, "--reason", "Spring Festival")
    assert campaign.returncode == 0 and campaign.stdout.startswith("granted to"), campaign.stderr
    assert (await api.account(account.account_id)).temporary_limit_minor == 200_000

    # A second campaign with a smaller raise leaves the larger one in force.
    smaller = command(server.database_url, "server.risk.campaign", "--grades", "B", "--raise-minor", "100000",
                      "--expires-at", expires, "--reason", "Lantern Festival")
    assert smaller.returncode == 0 and smaller.stdout.startswith("granted to"), smaller.stderr
    assert (await api.account(account.account_id)).temporary_limit_minor == 200_000

    rotate = command(server.database_url, "server.rotate_contact_keys")
    assert rotate.returncode == 0 and rotate.stdout.startswith("re-encrypted"), rotate.stderr

    missing = subprocess.run([sys.executable, "-m", "server.risk.review"], cwd=ROOT, capture_output=True, text=True,
                             timeout=60, env={k: v for k, v in os.environ.items() if k != "DATABASE_URL"})
    assert missing.returncode != 0 and "DATABASE_URL" in missing.stderr


def test_a_campaign_ending_past_the_maximum_is_refused_naming_the_setting(server):
    too_late = (datetime.now(UTC) + timedelta(days=31)).isoformat()
    refused = subprocess.run(
        [sys.executable, "-m", "server.risk.campaign", "--grades", "B", "--raise-minor", "100000",
         "--expires-at", too_late, "--reason", "too long"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "DATABASE_URL": server.database_url, "TEMPORARY_LIMIT_MAX_DAYS": "30"})
    assert refused.returncode != 0
    assert "--expires-at" in refused.stderr and "TEMPORARY_LIMIT_MAX_DAYS" in refused.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "server.risk.campaign", "--grades", "B", "--raise-minor", "100000",
         "--expires-at", too_late, "--reason", "r"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "DATABASE_URL": server.database_url, "TEMPORARY_LIMIT_MAX_DAYS": "forever"})
    assert bad.returncode != 0 and "TEMPORARY_LIMIT_MAX_DAYS" in bad.stderr
