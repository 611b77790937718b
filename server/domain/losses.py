"""Expected loss of the live book, PD x LGD x EAD, against the risk reserve; and the
same under a stress scenario. The assumptions are data: a versioned loss policy
(server/risk/loss-policy-*.json) and scenarios (server/risk/scenarios/*.json).

  1. EAD is the outstanding principal of each grade and delinquency bucket.
  2. PD of a grade's current loans comes from the scorecard: its odds at the score the
     policy names for the grade (a score inside the grade's band), calibrated from the
     development sample's bad rate to the book's (odds x (sample bad / sample good) /
     (book bad / book good)), PD = 1 / (1 + odds). A scenario multiplies it; at most 1.
  3. PD of a delinquent bucket is the chance of reaching charge-off from it: for each
     bucket from it to M4_PLUS, the monthly rate of not curing (ending the month in the
     same bucket or a later one) to the power of the months the bucket spans. The rate
     is the book's, pooled over the report's roll-rate months, when the book had at
     least the policy's minimum principal in that bucket; else the policy's. A scenario
     multiplies the rates (at most 1). A delinquent loan's PD is the larger of that and
     its grade's; a loan past the charge-off days not yet written off has PD 1.
  4. LGD is the policy's unless the scenario sets one.
  5. Each grade's loss is rounded half-up to the fen once; the total is their sum. The
     insured share (INSURANCE_SHARE_BPS) of the total is absorbed by the insurer; the
     reserve must carry the rest. Coverage is the reserve balance over that net loss
     (0 when there is no loss), the shortfall what the net loss exceeds the balance by.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, TypeGuard

from server.domain.errors import FieldViolation, InvalidArgument
from server.domain.loans import Bucket
from server.domain.money import round_half_up
from server.domain.portfolio import not_cured
from server.domain.pricing import Grade
from server.domain.scorecard import Scorecard

DEFAULT_POLICY = "loss-policy-v1"
DELINQUENT: tuple[Bucket, ...] = (Bucket.M1, Bucket.M2, Bucket.M3, Bucket.M4_PLUS)
ONE_BPS = 10_000
# PDs are kept to the millionth: finer than any input, coarse enough to stay exact.
PD_DENOMINATOR = 1_000_000
MAX_MULTIPLIER_BPS = 100_000  # 10x
SCENARIO_NAME_MAX = 64


@dataclass(frozen=True)
class LossPolicy:
    version: str
    scorecard_version: str
    score_by_grade: Mapping[Grade, int]
    sample_bad_rate_bps: int
    book_bad_rate_bps: int
    lgd_bps: int
    not_cure_rate_bps: Mapping[Bucket, int]
    bucket_months: Mapping[Bucket, int]
    min_observed_principal_minor: int
    roll_rate_months: int
    vintage_months: int

    @property
    def odds_calibration(self) -> Fraction:
        """What the scorecard's odds are multiplied by to speak of the book."""
        sample = Fraction(self.sample_bad_rate_bps, ONE_BPS)
        book = Fraction(self.book_bad_rate_bps, ONE_BPS)
        return (sample / (1 - sample)) / (book / (1 - book))

    def check(self, scorecard: Scorecard) -> None:
        """Refuse a policy that does not fit the scorecard or its own ranges."""
        problems = []
        if self.scorecard_version != scorecard.version:
            problems.append(f"written for {self.scorecard_version}, the scorecard is {scorecard.version}")
        bands = grade_bands(scorecard)
        for grade, (low, high) in bands.items():
            score = self.score_by_grade.get(grade)
            if score is None or not low <= score <= high:
                problems.append(f"score_by_grade.{grade}: {score} is not in the grade's band {low}..{high}")
        for name, value in (("sample_bad_rate_bps", self.sample_bad_rate_bps),
                            ("book_bad_rate_bps", self.book_bad_rate_bps)):
            if not 0 < value < ONE_BPS:
                problems.append(f"{name}: {value} must be between 1 and 9999")
        if not 0 <= self.lgd_bps <= ONE_BPS:
            problems.append(f"lgd_bps: {self.lgd_bps} must be between 0 and 10000")
        for b in DELINQUENT:
            if not 0 <= self.not_cure_rate_bps.get(b, -1) <= ONE_BPS:
                problems.append(f"not_cure_rate_bps.{b}: must be between 0 and 10000")
            if not 1 <= self.bucket_months.get(b, 0) <= 12:
                problems.append(f"bucket_months.{b}: must be between 1 and 12")
        if self.min_observed_principal_minor < 0:
            problems.append("min_observed_principal_minor: must not be negative")
        if not 1 <= self.roll_rate_months <= 24 or not 1 <= self.vintage_months <= 60:
            problems.append("roll_rate_months must be 1..24 and vintage_months 1..60")
        if problems:
            raise ValueError(f"loss policy {self.version}: " + "; ".join(problems))


def grade_bands(scorecard: Scorecard) -> dict[Grade, tuple[int, int]]:
    """Each grade's scores, lowest to highest; the open ends closed at the lowest and
    highest score the scorecard can give."""
    model = scorecard.model
    lowest = model["base_points"] + sum(min(b["points"] for b in c["bins"]) for c in model["characteristics"])
    highest = model["base_points"] + sum(max(b["points"] for b in c["bins"]) for c in model["characteristics"])
    bands = {}
    top = highest
    for band in model["grades"]:  # best grade first
        low = max(band["min_score"], lowest)
        bands[Grade(band["grade"])] = (low, top)
        top = low - 1
    return bands


def load_policy(version: str = DEFAULT_POLICY) -> LossPolicy:
    text = resources.files("server.risk").joinpath(f"{version}.json").read_text(encoding="utf-8")
    return _policy(json.loads(text))


@cache
def policy_for(version: str = DEFAULT_POLICY) -> LossPolicy:
    return load_policy(version)


def _policy(data: dict[str, Any]) -> LossPolicy:
    pd, rolls = data["pd"], data["roll_rates"]
    return LossPolicy(
        version=data["version"], scorecard_version=pd["scorecard"],
        score_by_grade={Grade(g): int(s) for g, s in pd["score_by_grade"].items()},
        sample_bad_rate_bps=int(pd["sample_bad_rate_bps"]), book_bad_rate_bps=int(pd["book_bad_rate_bps"]),
        lgd_bps=int(data["lgd_bps"]),
        not_cure_rate_bps={Bucket(b): int(r) for b, r in rolls["not_cure_rate_bps"].items()},
        bucket_months={Bucket(b): int(m) for b, m in rolls["bucket_months"].items()},
        min_observed_principal_minor=int(rolls["min_observed_principal_minor"]),
        roll_rate_months=int(rolls["months"]), vintage_months=int(data["vintage_months"]))


# -- PD ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GradePd:
    grade: Grade
    score: int
    pd: Fraction

    @property
    def pd_bps(self) -> int:
        return round_half_up(self.pd * ONE_BPS)


def grade_pds(scorecard: Scorecard, policy: LossPolicy) -> dict[Grade, GradePd]:
    """Rule 2, before any scenario. The odds come out of a power of two (a float); the PD
    is kept to the millionth."""
    result = {}
    calibration = float(policy.odds_calibration)
    scale = scorecard.model["scale"]
    for grade in Grade:
        score = policy.score_by_grade[grade]
        odds = scale["odds"] * 2 ** ((score - scale["points"]) / scale["pdo"]) * calibration
        pd = Fraction(round(PD_DENOMINATOR / (1 + odds)), PD_DENOMINATOR)
        result[grade] = GradePd(grade, score, pd)
    return result


# -- scenarios --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Scenario:
    name: str
    # Missing grades: 1x.
    pd_multiplier_bps: Mapping[Grade, int]
    # None: the policy's.
    lgd_bps: int | None = None
    roll_rate_multiplier_bps: int = ONE_BPS
    description: str = ""

    def pd_multiplier(self, grade: Grade) -> int:
        return self.pd_multiplier_bps.get(grade, ONE_BPS)


POLICY_AS_IS = Scenario("policy", {})


def multiplier_problem(value: int) -> str | None:
    """What is wrong with a multiplier in bps (PD or roll rates), or None."""
    if not 0 <= value <= MAX_MULTIPLIER_BPS:
        return f"must be between 0 and {MAX_MULTIPLIER_BPS} (10x), got {value}"
    return None


def lgd_problem(value: int) -> str | None:
    if not 0 <= value <= ONE_BPS:
        return f"must be between 0 and {ONE_BPS}, got {value}"
    return None


def parse_scenario(data: Any) -> Scenario:
    """A scenario file's JSON: {"name", "description", "pd_multiplier_bps": {"A": 15000,
    ...}, "lgd_bps", "roll_rate_multiplier_bps"}; refused with every bad field named."""
    if not isinstance(data, dict):
        raise InvalidArgument.of("scenario", "must be a JSON object")
    known = {"name", "description", "pd_multiplier_bps", "lgd_bps", "roll_rate_multiplier_bps"}
    found = [FieldViolation(key, "is not a field of a scenario") for key in data if key not in known]
    multipliers: dict[Grade, int] = {}
    raw = data.get("pd_multiplier_bps", {})
    if not isinstance(raw, dict):
        found.append(FieldViolation("pd_multiplier_bps", "must map grades A..E to basis points"))
        raw = {}
    for grade, value in raw.items():
        if grade not in Grade.__members__ or not _is_int(value):
            found.append(FieldViolation(f"pd_multiplier_bps.{grade}", "must be a grade A..E with integer bps"))
        else:
            multipliers[Grade(grade)] = value
    lgd, roll = data.get("lgd_bps"), data.get("roll_rate_multiplier_bps")
    for name, value in (("lgd_bps", lgd), ("roll_rate_multiplier_bps", roll)):
        if value is not None and not _is_int(value):
            found.append(FieldViolation(name, "must be an integer number of basis points"))
    lgd = lgd if _is_int(lgd) else None
    roll_bps = roll if _is_int(roll) else ONE_BPS
    for grade, value in multipliers.items():
        if problem := multiplier_problem(value):
            found.append(FieldViolation(f"pd_multiplier_bps.{grade}", problem))
    if lgd is not None and (problem := lgd_problem(lgd)):
        found.append(FieldViolation("lgd_bps", problem))
    if problem := multiplier_problem(roll_bps):
        found.append(FieldViolation("roll_rate_multiplier_bps", problem))
    name = data.get("name", "")
    description = data.get("description", "")
    if not isinstance(name, str) or not 0 < len(name) <= SCENARIO_NAME_MAX:
        found.append(FieldViolation("name", f"is required: a string of at most {SCENARIO_NAME_MAX} characters"))
    if not isinstance(description, str):
        found.append(FieldViolation("description", "must be a string"))
    if found:
        raise InvalidArgument(found)
    return Scenario(name, multipliers, lgd, roll_bps, description)


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def load_scenario(path: Path) -> Scenario:
    return parse_scenario(json.loads(path.read_text(encoding="utf-8")))


def shipped_scenario(name: str) -> Scenario:
    """baseline, downturn or severe: the scenarios in server/risk/scenarios/."""
    text = resources.files("server.risk").joinpath("scenarios", f"{name}.json").read_text(encoding="utf-8")
    return parse_scenario(json.loads(text))


# -- expected loss ----------------------------------------------------------------------------

@dataclass(frozen=True)
class BucketLossRate:
    bucket: Bucket
    # The monthly rate of not curing used, and whether the book's own (else the policy's).
    not_cure_rate: Fraction
    observed: bool
    # The chance of reaching charge-off from this bucket (rule 3).
    loss_rate: Fraction

    @property
    def not_cure_rate_bps(self) -> int:
        return round_half_up(self.not_cure_rate * ONE_BPS)

    @property
    def loss_rate_bps(self) -> int:
        return round_half_up(self.loss_rate * ONE_BPS)


@dataclass(frozen=True)
class GradeLoss:
    grade: Grade
    score: int
    # The grade's PD for current loans, scenario applied.
    pd: Fraction
    exposure_minor: int
    expected_loss_minor: int

    @property
    def pd_bps(self) -> int:
        return round_half_up(self.pd * ONE_BPS)


@dataclass(frozen=True)
class ExpectedLoss:
    policy_version: str
    scorecard_version: str
    scenario: str
    lgd_bps: int
    grades: tuple[GradeLoss, ...]
    buckets: tuple[BucketLossRate, ...]
    insurance_share_bps: int
    reserve_balance_minor: int

    @property
    def expected_loss_minor(self) -> int:
        return sum(g.expected_loss_minor for g in self.grades)

    @property
    def exposure_minor(self) -> int:
        return sum(g.exposure_minor for g in self.grades)

    @property
    def insured_loss_minor(self) -> int:
        return round_half_up(Fraction(self.expected_loss_minor * self.insurance_share_bps, ONE_BPS))

    @property
    def net_expected_loss_minor(self) -> int:
        return self.expected_loss_minor - self.insured_loss_minor

    @property
    def coverage_bps(self) -> int:
        """Reserve over the net loss, in bps (0 when there is no loss)."""
        net = self.net_expected_loss_minor
        return max(0, self.reserve_balance_minor) * ONE_BPS // net if net > 0 else 0

    @property
    def shortfall_minor(self) -> int:
        return max(0, self.net_expected_loss_minor - self.reserve_balance_minor)


def bucket_loss_rates(pooled_rolls: Mapping[tuple[Bucket, Bucket], int], policy: LossPolicy,
                      roll_rate_multiplier_bps: int = ONE_BPS) -> dict[Bucket, BucketLossRate]:
    """Rule 3 for each delinquent bucket, latest first (each one's chance includes the
    later buckets')."""
    shock = Fraction(roll_rate_multiplier_bps, ONE_BPS)
    result: dict[Bucket, BucketLossRate] = {}
    onward = Fraction(1)
    for b in reversed(DELINQUENT):
        stayed, total = not_cured(pooled_rolls, b)
        observed = total > 0 and total >= policy.min_observed_principal_minor
        base = Fraction(stayed, total) if observed else Fraction(policy.not_cure_rate_bps[b], ONE_BPS)
        rate = min(Fraction(1), base * shock)
        onward = onward * rate ** policy.bucket_months[b]
        result[b] = BucketLossRate(b, rate, observed, onward)
    return {b: result[b] for b in DELINQUENT}


def expected_loss(exposure: Mapping[tuple[Grade, Bucket], int], pds: Mapping[Grade, GradePd],
                  pooled_rolls: Mapping[tuple[Bucket, Bucket], int], policy: LossPolicy, scenario: Scenario, *,
                  insurance_share_bps: int, reserve_balance_minor: int) -> ExpectedLoss:
    """Rules 1-5 over the live book's principal by grade and bucket."""
    lgd_bps = policy.lgd_bps if scenario.lgd_bps is None else scenario.lgd_bps
    lgd = Fraction(lgd_bps, ONE_BPS)
    rates = bucket_loss_rates(pooled_rolls, policy, scenario.roll_rate_multiplier_bps)
    grades = []
    for grade in Grade:
        pd = min(Fraction(1), pds[grade].pd * Fraction(scenario.pd_multiplier(grade), ONE_BPS))
        loss = Fraction(0)
        ead_total = 0
        for (g, b), ead in exposure.items():
            if g is not grade or ead <= 0:
                continue
            ead_total += ead
            if b is Bucket.CURRENT:
                chance = pd
            elif b is Bucket.CHARGED_OFF:
                chance = Fraction(1)
            else:
                chance = max(pd, rates[b].loss_rate)
            loss += ead * chance * lgd
        grades.append(GradeLoss(grade, pds[grade].score, pd, ead_total, round_half_up(loss)))
    return ExpectedLoss(policy.version, policy.scorecard_version, scenario.name, lgd_bps, tuple(grades),
                        tuple(rates.values()), insurance_share_bps, reserve_balance_minor)
