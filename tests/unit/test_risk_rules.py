"""Each risk rule fires in a scenario built for it and not in a clean one."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from server.domain.pricing import Grade
from server.domain.risk import Decision, Facts, Ruleset, load

RULES = load()
CLEAN = Facts(amount_minor=100_000, grade=Grade.B, device_id="d1", ip_address="203.0.113.7", blocked=(),
              merchant_level=None, account_approvals_last_hour=0, account_amount_last_day_minor=0,
              device_authorizations_last_hour=0, device_accounts_last_30_days=0, ip_accounts_last_day=0,
              device_known_for_account=True, captured_count=4, largest_captured_minor=80_000)

SCENARIOS: dict[str, dict[str, Any]] = {
    "BLOCK_LIST": dict(blocked=("DEVICE",)),
    "ACCOUNT_VELOCITY_COUNT": dict(account_approvals_last_hour=5),
    "ACCOUNT_VELOCITY_AMOUNT": dict(account_amount_last_day_minor=1_950_000),
    "DEVICE_VELOCITY": dict(device_authorizations_last_hour=10),
    "AMOUNT_ABOVE_HISTORY": dict(amount_minor=400_001, largest_captured_minor=80_000),
    "NEW_DEVICE_LARGE_AMOUNT": dict(device_known_for_account=False, amount_minor=500_000,
                                    largest_captured_minor=200_000),
    "SHARED_DEVICE": dict(device_accounts_last_30_days=3),
    "SHARED_IP": dict(ip_accounts_last_day=10),
    "MERCHANT_RISK": dict(merchant_level="HIGH"),
    "GRADE": dict(grade=Grade.E),
}


def test_a_clean_request_fires_nothing_and_is_approved():
    verdict = RULES.evaluate(CLEAN)
    assert (verdict.decision, verdict.score, verdict.reasons) == (Decision.APPROVE, 0, ())
    assert len(verdict.results) == len(SCENARIOS)


@pytest.mark.parametrize("rule", sorted(SCENARIOS))
def test_each_rule_fires_in_its_scenario_and_only_it(rule):
    verdict = RULES.evaluate(replace(CLEAN, **SCENARIOS[rule]))
    assert verdict.reasons == (rule,)
    fired = [r for r in verdict.results if r.fired]
    assert [r.rule for r in fired] == [rule] and fired[0].score > 0 and fired[0].detail


def test_scores_add_up_to_review_and_decline():
    review = RULES.evaluate(replace(CLEAN, **SCENARIOS["SHARED_DEVICE"]))
    assert review.decision is Decision.REVIEW  # 50
    decline = RULES.evaluate(replace(CLEAN, **SCENARIOS["SHARED_DEVICE"], **SCENARIOS["SHARED_IP"]))
    assert decline.decision is Decision.DECLINE and decline.reasons == ("SHARED_DEVICE", "SHARED_IP")
    assert RULES.evaluate(replace(CLEAN, **SCENARIOS["BLOCK_LIST"])).decision is Decision.DECLINE


def test_a_ruleset_with_thresholds_out_of_order_is_refused_at_start():
    config = {"version": "bad", "review_at": 80, "decline_at": 50, "rules": RULES.rules}
    with pytest.raises(ValueError, match="ordered"):
        Ruleset(config)
    with pytest.raises(ValueError, match="exactly"):
        Ruleset({"version": "bad", "review_at": 1, "decline_at": 2, "rules": {}})
