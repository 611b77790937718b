"""Expected loss and stress scenarios (server/domain/losses.py)."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from fractions import Fraction
from importlib import resources

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.domain.errors import InvalidArgument
from server.domain.loans import Bucket
from server.domain.losses import (
    DELINQUENT,
    POLICY_AS_IS,
    Scenario,
    bucket_loss_rates,
    expected_loss,
    grade_bands,
    grade_pds,
    load_policy,
    parse_scenario,
    shipped_scenario,
)
from server.domain.pricing import Grade
from server.domain.scorecard import load as load_scorecard

POLICY = load_policy()
SCORECARD = load_scorecard()
PDS = grade_pds(SCORECARD, POLICY)


def test_the_policy_fits_the_scorecard():
    POLICY.check(SCORECARD)
    bands = grade_bands(SCORECARD)
    assert bands[Grade.A][0] == 561 and bands[Grade.E][1] == 466
    # Bands meet without gaps, best grade highest.
    ordered = [bands[g] for g in Grade]
    assert all(lower[1] + 1 == higher_low for higher_low, lower in
               zip([b[0] for b in ordered[:-1]], ordered[1:], strict=True))
    for grade, score in POLICY.score_by_grade.items():
        assert bands[grade][0] <= score <= bands[grade][1]


def test_the_sample_bad_rate_is_the_training_datas():
    text = resources.files("server.risk").joinpath("data", "germancredit.csv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(text.splitlines()))
    bad = sum(1 for r in rows if r["creditability"] == "bad")
    assert POLICY.sample_bad_rate_bps == bad * 10_000 // len(rows) == 3000


def test_a_policy_that_does_not_fit_is_refused():
    with pytest.raises(ValueError, match=r"score_by_grade\.A: 500"):
        replace(POLICY, score_by_grade={**POLICY.score_by_grade, Grade.A: 500}).check(SCORECARD)
    with pytest.raises(ValueError, match="lgd_bps"):
        replace(POLICY, lgd_bps=10_001).check(SCORECARD)
    with pytest.raises(ValueError, match="written for scorecard-v0"):
        replace(POLICY, scorecard_version="scorecard-v0").check(SCORECARD)


def test_pd_is_the_scorecards_odds_at_the_grades_score_calibrated_to_the_book():
    # Uncalibrated (the book's bad rate the sample's), 600 points is 50:1: PD 1/51.
    plain = replace(POLICY, book_bad_rate_bps=POLICY.sample_bad_rate_bps,
                    score_by_grade={**POLICY.score_by_grade, Grade.A: 600})
    assert grade_pds(SCORECARD, plain)[Grade.A].pd == Fraction(round(1_000_000 / 51), 1_000_000)
    # Calibrated: the odds times (0.3 / 0.7) / (0.04 / 0.96) = 10.29.
    assert float(POLICY.odds_calibration) == pytest.approx(0.3 / 0.7 / (0.04 / 0.96))
    odds_b = 50 * 2 ** ((545 - 600) / 20) * float(POLICY.odds_calibration)
    assert float(PDS[Grade.B].pd) == pytest.approx(1 / (1 + odds_b), abs=1e-6)
    assert [PDS[g].pd_bps for g in Grade] == [44, 129, 381, 1040, 2537]


def test_without_observations_the_policys_rates_of_not_curing_chain_to_charge_off():
    rates = bucket_loss_rates({}, POLICY)
    assert not any(r.observed for r in rates.values())
    m4 = Fraction(9, 10) ** 3
    assert rates[Bucket.M4_PLUS].loss_rate == m4
    assert rates[Bucket.M3].loss_rate == Fraction(8, 10) * m4
    assert rates[Bucket.M1].loss_rate == Fraction(4, 10) * Fraction(65, 100) * Fraction(8, 10) * m4
    shocked = bucket_loss_rates({}, POLICY, roll_rate_multiplier_bps=12_000)
    assert shocked[Bucket.M4_PLUS].not_cure_rate == 1  # 0.9 x 1.2, at most 1
    assert shocked[Bucket.M1].not_cure_rate == Fraction(48, 100)


def test_the_books_own_roll_rates_are_used_where_it_has_enough_principal():
    enough = POLICY.min_observed_principal_minor
    rolls = {(Bucket.M2, Bucket.M3): enough * 3 // 4, (Bucket.M2, Bucket.CURRENT): enough // 4,
             (Bucket.M3, Bucket.M4_PLUS): 1}
    rates = bucket_loss_rates(rolls, POLICY)
    assert rates[Bucket.M2].observed and rates[Bucket.M2].not_cure_rate == Fraction(3, 4)
    assert not rates[Bucket.M3].observed  # one fen is not enough to go by


def test_expected_loss_by_hand():
    exposure = {(Grade.A, Bucket.CURRENT): 1_000_000, (Grade.A, Bucket.M4_PLUS): 100_000,
                (Grade.E, Bucket.CURRENT): 200_000, (Grade.E, Bucket.CHARGED_OFF): 50_000}
    loss = expected_loss(exposure, PDS, {}, POLICY, POLICY_AS_IS, insurance_share_bps=3_000,
                         reserve_balance_minor=20_000)
    a, e = loss.grades[0], loss.grades[4]
    lgd = Fraction(9, 10)
    m4 = Fraction(729, 1000)
    assert a.expected_loss_minor == int(1_000_000 * PDS[Grade.A].pd * lgd + 100_000 * m4 * lgd + Fraction(1, 2))
    assert e.expected_loss_minor == int(200_000 * PDS[Grade.E].pd * lgd + 50_000 * lgd + Fraction(1, 2))
    assert loss.expected_loss_minor == a.expected_loss_minor + e.expected_loss_minor
    assert loss.exposure_minor == 1_350_000
    assert loss.insured_loss_minor == int(loss.expected_loss_minor * Fraction(3, 10) + Fraction(1, 2))
    assert loss.net_expected_loss_minor == loss.expected_loss_minor - loss.insured_loss_minor
    assert loss.shortfall_minor == loss.net_expected_loss_minor - 20_000
    assert loss.coverage_bps == 20_000 * 10_000 // loss.net_expected_loss_minor


def test_no_loss_no_shortfall_and_no_coverage_ratio():
    loss = expected_loss({}, PDS, {}, POLICY, POLICY_AS_IS, insurance_share_bps=0, reserve_balance_minor=5_000)
    assert (loss.expected_loss_minor, loss.shortfall_minor, loss.coverage_bps) == (0, 0, 0)


def test_the_shipped_scenarios_grow_harsher():
    baseline, downturn, severe = (shipped_scenario(n) for n in ("baseline", "downturn", "severe"))
    assert baseline.lgd_bps is None and baseline.roll_rate_multiplier_bps == 10_000
    assert all(baseline.pd_multiplier(g) == 10_000 for g in Grade)
    for milder, harsher in ((baseline, downturn), (downturn, severe)):
        assert all(milder.pd_multiplier(g) <= harsher.pd_multiplier(g) for g in Grade)
        assert (milder.lgd_bps or POLICY.lgd_bps) <= (harsher.lgd_bps or POLICY.lgd_bps)
        assert milder.roll_rate_multiplier_bps <= harsher.roll_rate_multiplier_bps


def test_a_bad_scenario_names_every_bad_field():
    with pytest.raises(InvalidArgument) as error:
        parse_scenario({"name": "", "pd_multiplier_bps": {"A": 200_000, "F": 1, "B": 1.5}, "lgd_bps": 10_001,
                        "roll_rate_multiplier_bps": "lots", "severity": 3})
    assert sorted(v.field for v in error.value.violations) == sorted([
        "severity", "pd_multiplier_bps.F", "pd_multiplier_bps.B", "lgd_bps", "roll_rate_multiplier_bps",
        "pd_multiplier_bps.A", "name"])
    with pytest.raises(InvalidArgument):
        parse_scenario(["not", "an", "object"])
    scenario = parse_scenario(json.loads('{"name": "mild", "pd_multiplier_bps": {"C": 12000}}'))
    assert scenario == Scenario("mild", {Grade.C: 12_000})


# -- properties ------------------------------------------------------------------------------

amounts = st.integers(min_value=0, max_value=10**9)
exposures = st.dictionaries(st.tuples(st.sampled_from(list(Grade)), st.sampled_from(list(Bucket))), amounts,
                            max_size=12)
rolls = st.dictionaries(st.tuples(st.sampled_from(list(Bucket)), st.sampled_from(list(Bucket))), amounts,
                        max_size=12)
multipliers = st.integers(min_value=0, max_value=100_000)


@st.composite
def scenarios(draw) -> Scenario:
    return Scenario("s", {g: draw(multipliers) for g in Grade},
                    draw(st.one_of(st.none(), st.integers(0, 10_000))), draw(multipliers))


def harsher(scenario: Scenario, draw) -> Scenario:
    return Scenario("h", {g: m + draw(st.integers(0, 50_000)) for g, m in scenario.pd_multiplier_bps.items()},
                    min(10_000, (scenario.lgd_bps if scenario.lgd_bps is not None else POLICY.lgd_bps)
                        + draw(st.integers(0, 5_000))),
                    scenario.roll_rate_multiplier_bps + draw(st.integers(0, 50_000)))


@given(exposures, rolls, scenarios(), st.integers(0, 10_000), st.integers(-10**9, 10**9), st.data())
def test_a_harsher_scenario_never_loses_less(exposure, pooled, scenario, share, reserve, data):
    mild = expected_loss(exposure, PDS, pooled, POLICY, scenario, insurance_share_bps=share,
                         reserve_balance_minor=reserve)
    harsh = expected_loss(exposure, PDS, pooled, POLICY, harsher(scenario, data.draw),
                          insurance_share_bps=share, reserve_balance_minor=reserve)
    assert harsh.expected_loss_minor >= mild.expected_loss_minor
    assert harsh.net_expected_loss_minor >= mild.net_expected_loss_minor
    assert harsh.shortfall_minor >= mild.shortfall_minor
    for loss in (mild, harsh):
        assert loss.insured_loss_minor + loss.net_expected_loss_minor == loss.expected_loss_minor
        assert 0 <= loss.expected_loss_minor <= loss.exposure_minor
        assert loss.exposure_minor == sum(exposure.values())
        assert all(0 <= b.loss_rate <= b.not_cure_rate <= 1 for b in loss.buckets)
    # A later bucket is never likelier to cure.
    rates = [b.loss_rate for b in mild.buckets]
    assert [b.bucket for b in mild.buckets] == list(DELINQUENT)
    if not any(b.observed for b in mild.buckets):
        assert rates == sorted(rates)
