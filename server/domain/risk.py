"""Real-time risk rules for Authorize: each rule looks at facts gathered before the
hold and adds points with a reason; the total against two thresholds gives APPROVE,
REVIEW or DECLINE. The ruleset is data (server/risk/ruleset-*.json), checked at start."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, fields
from functools import cache
from importlib import resources

from server.domain.errors import InvariantViolation
from server.domain.pricing import Grade

RULES = ("BLOCK_LIST", "ACCOUNT_VELOCITY_COUNT", "ACCOUNT_VELOCITY_AMOUNT", "DEVICE_VELOCITY",
         "AMOUNT_ABOVE_HISTORY", "NEW_DEVICE_LARGE_AMOUNT", "SHARED_DEVICE", "SHARED_IP", "MERCHANT_RISK", "GRADE")


class Decision(enum.StrEnum):
    APPROVE = "APPROVE"
    REVIEW = "REVIEW"
    DECLINE = "DECLINE"


class ListKind(enum.StrEnum):
    """What a risk list entry names (risk_lists.kind)."""
    ACCOUNT = "ACCOUNT"
    DEVICE = "DEVICE"
    IP = "IP"
    MERCHANT = "MERCHANT"


class ListLevel(enum.StrEnum):
    """How a risk list rates it (risk_lists.level)."""
    BLOCK = "BLOCK"
    HIGH = "HIGH"
    MEDIUM = "MEDIUM"


@dataclass(frozen=True)
class Facts:
    """What the rules see; gathered in one query inside the Authorize transaction."""

    amount_minor: int
    grade: Grade
    device_id: str
    ip_address: str
    blocked: tuple[str, ...]          # ListKind values that block this request (ACCOUNT, DEVICE, IP)
    merchant_level: str | None        # a ListLevel value, or None when the merchant is on no list
    account_approvals_last_hour: int
    account_amount_last_day_minor: int
    device_authorizations_last_hour: int
    device_accounts_last_30_days: int  # other accounts seen on this device
    ip_accounts_last_day: int          # other accounts seen at this address
    device_known_for_account: bool
    captured_count: int
    largest_captured_minor: int


@dataclass(frozen=True)
class RuleResult:
    rule: str
    fired: bool
    score: int
    detail: str


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    score: int
    reasons: tuple[str, ...]
    results: tuple[RuleResult, ...]
    ruleset_version: str


class Ruleset:
    def __init__(self, config: dict) -> None:
        self.version = config["version"]
        self.review_at = int(config["review_at"])
        self.decline_at = int(config["decline_at"])
        self.rules = config["rules"]
        if not 0 < self.review_at < self.decline_at:
            raise ValueError(f"ruleset {self.version}: thresholds must be ordered, 0 < review_at < decline_at")
        missing = set(RULES) - set(self.rules)
        if missing or set(self.rules) - set(RULES):
            raise ValueError(f"ruleset {self.version}: rules must be exactly {RULES}")
        for name, params in self.rules.items():
            if any(not isinstance(v, int) or v < 0 for v in params.values()):
                raise ValueError(f"ruleset {self.version}: {name} parameters must be non-negative integers")

    def evaluate(self, facts: Facts) -> Verdict:
        r = self.rules
        checks = [
            ("BLOCK_LIST", bool(facts.blocked), r["BLOCK_LIST"]["score"], f"on the block list: {facts.blocked}"),
            ("ACCOUNT_VELOCITY_COUNT",
             facts.account_approvals_last_hour >= r["ACCOUNT_VELOCITY_COUNT"]["max_per_hour"],
             r["ACCOUNT_VELOCITY_COUNT"]["score"], f"{facts.account_approvals_last_hour} approvals in the last hour"),
            ("ACCOUNT_VELOCITY_AMOUNT",
             facts.account_amount_last_day_minor + facts.amount_minor
             > r["ACCOUNT_VELOCITY_AMOUNT"]["max_minor_per_day"],
             r["ACCOUNT_VELOCITY_AMOUNT"]["score"],
             f"{facts.account_amount_last_day_minor + facts.amount_minor} fen in 24 hours"),
            ("DEVICE_VELOCITY", facts.device_authorizations_last_hour >= r["DEVICE_VELOCITY"]["max_per_hour"],
             r["DEVICE_VELOCITY"]["score"], f"{facts.device_authorizations_last_hour} authorizations on the device"),
            ("AMOUNT_ABOVE_HISTORY",
             facts.captured_count >= r["AMOUNT_ABOVE_HISTORY"]["min_history"]
             and facts.amount_minor > facts.largest_captured_minor * r["AMOUNT_ABOVE_HISTORY"]["multiple_of_largest"],
             r["AMOUNT_ABOVE_HISTORY"]["score"], f"largest earlier purchase {facts.largest_captured_minor} fen"),
            ("NEW_DEVICE_LARGE_AMOUNT",
             bool(facts.device_id) and not facts.device_known_for_account and facts.captured_count > 0
             and facts.amount_minor >= r["NEW_DEVICE_LARGE_AMOUNT"]["min_amount_minor"],
             r["NEW_DEVICE_LARGE_AMOUNT"]["score"], "a device new to this account"),
            ("SHARED_DEVICE", facts.device_accounts_last_30_days >= r["SHARED_DEVICE"]["max_accounts_30_days"],
             r["SHARED_DEVICE"]["score"], f"device used by {facts.device_accounts_last_30_days} other accounts"),
            ("SHARED_IP", facts.ip_accounts_last_day >= r["SHARED_IP"]["max_accounts_per_day"],
             r["SHARED_IP"]["score"], f"address used by {facts.ip_accounts_last_day} other accounts"),
            ("MERCHANT_RISK", facts.merchant_level in ("HIGH", "MEDIUM"),
             r["MERCHANT_RISK"]["score_high" if facts.merchant_level == "HIGH" else "score_medium"],
             f"merchant risk {facts.merchant_level}"),
            ("GRADE", facts.grade in (Grade.D, Grade.E),
             r["GRADE"]["score_e" if facts.grade is Grade.E else "score_d"], f"grade {facts.grade}"),
        ]
        results = tuple(RuleResult(name, fired, score if fired else 0, detail if fired else "")
                        for name, fired, score, detail in checks)
        total = sum(result.score for result in results)
        decision = (Decision.DECLINE if total >= self.decline_at
                    else Decision.REVIEW if total >= self.review_at else Decision.APPROVE)
        reasons = tuple(result.rule for result in sorted(results, key=lambda x: -x.score) if result.fired)
        return Verdict(decision, total, reasons, results, self.version)


_FACT_NAMES = tuple(f.name for f in fields(Facts))


def facts_json(facts: Facts) -> str:
    # Field by field rather than asdict(): asdict deep-copies, and this runs per Authorize.
    values = {}
    for name in _FACT_NAMES:
        value = getattr(facts, name)
        if isinstance(value, enum.Enum):
            value = value.value
        values[name] = list(value) if isinstance(value, tuple) else value
    return json.dumps(values)


def results_json(results: tuple[RuleResult, ...]) -> str:
    return json.dumps([{"rule": r.rule, "fired": r.fired, "score": r.score, "detail": r.detail} for r in results])


def facts_of_json(text: str) -> Facts:
    """The facts that facts_json() stored, with the lists' values named by their enums.
    A stored record of another shape is a bug in our code, never the caller's."""
    try:
        values = json.loads(text)
        return Facts(**{**values, "grade": Grade(values["grade"]),
                        "blocked": tuple(ListKind(kind) for kind in values["blocked"]),
                        "merchant_level": ListLevel(values["merchant_level"]) if values["merchant_level"] else None})
    except (KeyError, TypeError, ValueError) as exc:
        raise InvariantViolation(f"stored risk facts not of the shape facts_json() writes: {exc}") from None


def results_of_json(text: str) -> tuple[RuleResult, ...]:
    """The results that results_json() stored, in the ruleset's order."""
    try:
        return tuple(RuleResult(str(r["rule"]), bool(r["fired"]), int(r["score"]), str(r["detail"]))
                     for r in json.loads(text))
    except (KeyError, TypeError, ValueError) as exc:
        raise InvariantViolation(f"stored rule results not of the shape results_json() writes: {exc}") from None


@cache
def load(version: str = "ruleset-v1") -> Ruleset:
    return Ruleset(json.loads(resources.files("server.risk").joinpath(f"{version}.json").read_text(encoding="utf-8")))
