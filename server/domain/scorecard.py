"""Credit assessment by scorecard: characteristics -> points -> score -> grade -> limit,
with the reasons that cost the most points. The model is a versioned data file
(server/risk/models/*.json, made by `python -m server.risk.train`); scoring is pure
Python."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources

from server.domain.errors import FieldViolation, InvalidArgument
from server.domain.pricing import Grade

DEFAULT_MODEL = "scorecard-v1"
MAX_REASONS = 4

# The limit a grade earns, in fen: the policy table.
LIMIT_POLICY_MINOR: dict[Grade, int] = {
    Grade.A: 5_000_000,
    Grade.B: 3_000_000,
    Grade.C: 1_500_000,
    Grade.D: 500_000,
    Grade.E: 100_000,
}

# Stable reason codes, one per characteristic; the description names the applicant's bin.
REASON_CODES = {
    "status_of_existing_checking_account": ("CHECKING_ACCOUNT", "checking account"),
    "credit_history": ("CREDIT_HISTORY", "credit history"),
    "purpose": ("PURPOSE", "purpose of credit"),
    "savings_account_and_bonds": ("SAVINGS", "savings"),
    "present_employment_since": ("EMPLOYMENT_LENGTH", "time in present employment"),
    "other_debtors_or_guarantors": ("GUARANTORS", "other debtors or guarantors"),
    "property": ("PROPERTY", "property"),
    "other_installment_plans": ("OTHER_INSTALLMENT_PLANS", "other installment plans"),
    "housing": ("HOUSING", "housing"),
    "telephone": ("TELEPHONE", "telephone"),
    "installment_rate_in_percentage_of_disposable_income": ("INSTALLMENT_BURDEN",
                                                            "installments as a share of disposable income"),
    "duration_in_month": ("CREDIT_DURATION", "duration of credit in months"),
    "credit_amount": ("CREDIT_AMOUNT", "credit amount"),
    "age_in_years": ("AGE", "age in years"),
}


@dataclass(frozen=True)
class Reason:
    code: str
    description: str
    points_lost: int


@dataclass(frozen=True)
class Assessment:
    score: int
    grade: Grade
    credit_limit_minor: int
    model_version: str
    reasons: tuple[Reason, ...]


@dataclass(frozen=True)
class Scorecard:
    model: dict

    @property
    def version(self) -> str:
        return self.model["version"]

    @property
    def characteristics(self) -> list[dict]:
        return self.model["characteristics"]

    def score_for_odds(self, good_to_bad_odds: float) -> float:
        """The scale: POINTS at ODDS, PDO more points for each doubling of the odds."""
        scale = self.model["scale"]
        return scale["points"] + scale["pdo"] * math.log2(good_to_bad_odds / scale["odds"])

    def assess(self, applicant: Mapping[str, str]) -> Assessment:
        violations = [FieldViolation(f"characteristics[{key}]", "is not a characteristic of this model")
                      for key in applicant if key not in {c["name"] for c in self.characteristics}]
        score = self.model["base_points"]
        reasons = []
        for characteristic in self.characteristics:
            name = characteristic["name"]
            raw = applicant.get(name)
            if raw is None:
                violations.append(FieldViolation(f"characteristics[{name}]", "is required by this model"))
                continue
            found = _bin(characteristic, raw)
            if found is None:
                allowed = ("a number" if characteristic["kind"] == "numeric"
                           else "one of: " + "; ".join(v for b in characteristic["bins"] for v in b["values"]))
                violations.append(FieldViolation(f"characteristics[{name}]", f"must be {allowed}"))
                continue
            score += found["points"]
            lost = max(b["points"] for b in characteristic["bins"]) - found["points"]
            if lost > 0:
                code, label = REASON_CODES.get(name, (name.upper(), name.replace("_", " ")))
                reasons.append(Reason(code, f"{label}: {found['label']}", lost))
        if violations:
            raise InvalidArgument(violations)
        grade = next(Grade(band["grade"]) for band in self.model["grades"] if score >= band["min_score"])
        reasons.sort(key=lambda r: (-r.points_lost, r.code))
        return Assessment(score, grade, LIMIT_POLICY_MINOR[grade], self.version, tuple(reasons[:MAX_REASONS]))


def _bin(characteristic: dict, raw: str) -> dict | None:
    if characteristic["kind"] == "numeric":
        try:
            value = float(raw)
        except ValueError:
            return None
        if not math.isfinite(value):
            return None
        for b in characteristic["bins"]:
            if (b["above"] is None or value > b["above"]) and (b["at_most"] is None or value <= b["at_most"]):
                return b
        return None
    return next((b for b in characteristic["bins"] if raw in b["values"]), None)


@cache
def load(version: str = DEFAULT_MODEL) -> Scorecard:
    text = resources.files("server.risk").joinpath("models", f"{version}.json").read_text(encoding="utf-8")
    return Scorecard(json.loads(text))
