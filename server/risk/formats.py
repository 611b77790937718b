"""The portfolio report and a stress test's result for people and for programs: a
text table, JSON (the field names of credit.v1's PortfolioReport and
StressTestResult, amounts as integer fen) or CSV (one row per figure)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from server.core.portfolio import PortfolioView, StressView
from server.domain.losses import ExpectedLoss
from server.domain.portfolio import BUCKET_ORDER

FORMATS = ("table", "json", "csv")


def report_data(view: PortfolioView) -> dict[str, Any]:
    totals, book = view.totals, view.book
    return {
        "as_of_date": view.as_of.isoformat(),
        "totals": {
            "accounts_with_debt": totals.accounts_with_debt, "live_loans": totals.live_loans,
            "outstanding_principal_minor": totals.outstanding_principal_minor,
            "fees_owed_minor": totals.fees_owed_minor, "penalties_owed_minor": totals.penalties_owed_minor,
            "reserve_balance_minor": totals.reserve_balance_minor},
        "exposure": [{"grade": e.grade.value, "bucket": e.bucket.value, "loans": e.loans,
                      "outstanding_principal_minor": e.principal_minor} for e in book.exposure],
        "vintages": [{"capture_month": v.capture_month.strftime("%Y-%m"), "loans": v.loans,
                      "principal_minor": v.principal_minor,
                      "points": [{"months_on_book": p.months_on_book, "observed_on": p.observed_on.isoformat(),
                                  "bad_principal_minor": p.bad_principal_minor, "bad_share_bps": p.share_bps}
                                 for p in v.points]} for v in book.vintages],
        "roll_rates": [{"month": r.month.strftime("%Y-%m"), "from_bucket": r.from_bucket.value,
                        "to_bucket": r.to_bucket.value, "principal_minor": r.principal_minor,
                        "from_principal_minor": r.from_principal_minor, "share_bps": r.share_bps}
                       for r in book.roll_rates],
        "expected_loss": loss_data(view.expected_loss),
        "current_only": list(view.current_only),
        "generated_at": view.generated_at.isoformat(),
    }


def loss_data(loss: ExpectedLoss) -> dict[str, Any]:
    return {
        "policy_version": loss.policy_version, "scorecard_version": loss.scorecard_version,
        "scenario": loss.scenario, "lgd_bps": loss.lgd_bps,
        "grades": [{"grade": g.grade.value, "score": g.score, "pd_bps": g.pd_bps, "exposure_minor": g.exposure_minor,
                    "expected_loss_minor": g.expected_loss_minor} for g in loss.grades],
        "buckets": [{"bucket": b.bucket.value, "not_cure_rate_bps": b.not_cure_rate_bps, "observed": b.observed,
                     "loss_rate_bps": b.loss_rate_bps} for b in loss.buckets],
        "exposure_minor": loss.exposure_minor, "expected_loss_minor": loss.expected_loss_minor,
        "insurance_share_bps": loss.insurance_share_bps, "insured_loss_minor": loss.insured_loss_minor,
        "net_expected_loss_minor": loss.net_expected_loss_minor,
        "reserve_balance_minor": loss.reserve_balance_minor, "coverage_bps": loss.coverage_bps,
        "shortfall_minor": loss.shortfall_minor,
    }


def stress_data(view: StressView) -> dict[str, Any]:
    scenario = view.scenario
    return {
        "as_of_date": view.as_of.isoformat(),
        "scenario": {"name": scenario.name, "description": scenario.description,
                     "pd_multiplier_bps": {g.value: m for g, m in sorted(scenario.pd_multiplier_bps.items())},
                     "lgd_bps": scenario.lgd_bps, "roll_rate_multiplier_bps": scenario.roll_rate_multiplier_bps},
        "policy": loss_data(view.policy),
        "stressed": loss_data(view.stressed),
        "current_only": list(view.current_only),
    }


def as_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def report_csv(view: PortfolioView) -> str:
    """section, row, column, value: one figure a line, for a spreadsheet's pivot."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["section", "row", "column", "value"])
    data = report_data(view)
    for name, value in data["totals"].items():
        writer.writerow(["totals", "", name, value])
    for e in data["exposure"]:
        writer.writerow(["exposure_principal_minor", e["grade"], e["bucket"], e["outstanding_principal_minor"]])
        writer.writerow(["exposure_loans", e["grade"], e["bucket"], e["loans"]])
    for v in data["vintages"]:
        writer.writerow(["vintage_loans", v["capture_month"], "", v["loans"]])
        writer.writerow(["vintage_principal_minor", v["capture_month"], "", v["principal_minor"]])
        for p in v["points"]:
            writer.writerow(["vintage_bad_share_bps", v["capture_month"], p["months_on_book"], p["bad_share_bps"]])
    for r in data["roll_rates"]:
        writer.writerow([f"roll_rate_share_bps {r['month']}", r["from_bucket"], r["to_bucket"], r["share_bps"]])
    loss = data["expected_loss"]
    for g in loss["grades"]:
        writer.writerow(["expected_loss_pd_bps", g["grade"], "", g["pd_bps"]])
        writer.writerow(["expected_loss_minor", g["grade"], "", g["expected_loss_minor"]])
    for name in ("expected_loss_minor", "insured_loss_minor", "net_expected_loss_minor", "reserve_balance_minor",
                 "coverage_bps", "shortfall_minor"):
        writer.writerow(["expected_loss", "", name, loss[name]])
    return out.getvalue()


def yuan(minor: int) -> str:
    return f"{minor / 100:,.2f}"


def percent(bps: int) -> str:
    return f"{bps / 100:.2f} %"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        # The first column reads as labels (left), the others as figures (right).
        return "  ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}"
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return [line(header), "  ".join("-" * w for w in widths), *(line(row) for row in rows)]


def report_table(view: PortfolioView) -> str:
    t, book = view.totals, view.book
    lines = [f"Portfolio as of {view.as_of.isoformat()} (CNY; shares of principal)", ""]
    lines += _table(["totals", ""], [
        ["accounts with debt", str(t.accounts_with_debt)], ["live loans", str(t.live_loans)],
        ["outstanding principal", yuan(t.outstanding_principal_minor)], ["fees owed", yuan(t.fees_owed_minor)],
        ["penalties owed", yuan(t.penalties_owed_minor)], ["risk reserve", yuan(t.reserve_balance_minor)]])
    buckets = [b for b in BUCKET_ORDER if any(e.bucket is b for e in book.exposure)]
    grades = sorted({e.grade for e in book.exposure})
    cells = {(e.grade, e.bucket): e.principal_minor for e in book.exposure}
    lines += ["", "Outstanding principal by grade and bucket"]
    lines += _table(["grade", *[b.value for b in buckets], "total"],
                    [[g.value, *[yuan(cells.get((g, b), 0)) for b in buckets],
                      yuan(sum(cells.get((g, b), 0) for b in buckets))] for g in grades])
    longest = max((len(v.points) for v in book.vintages), default=0)
    lines += ["", "Vintages: share of principal captured 30+ days past due (or charged off), by month on book"]
    lines += _table(["captured", "loans", "principal", *[f"MOB {k}" for k in range(longest)]],
                    [[v.capture_month.strftime("%Y-%m"), str(v.loans), yuan(v.principal_minor),
                      *[percent(p.share_bps) for p in v.points], *[""] * (longest - len(v.points))]
                     for v in book.vintages])
    pooled = book.pooled_roll_rates()
    starts = [b for b in BUCKET_ORDER if any(f is b for f, _ in pooled)]
    ends = [b for b in BUCKET_ORDER if any(e is b for _, e in pooled)]
    first, last = (book.roll_rate_months[0], book.roll_rate_months[-1]) if book.roll_rate_months else (None, None)
    span = f"{first:%Y-%m} to {last:%Y-%m}" if first and last else "none"
    lines += ["", f"Roll rates, months {span} pooled: share of principal in a bucket at a month's start "
                  "by bucket at its end"]
    lines += _table(["from \\ to", *[b.value for b in ends]],
                    [[f.value, *[percent(_share(pooled, f, e)) for e in ends]] for f in starts])
    lines += ["", *_loss_lines(view.expected_loss)]
    lines += ["", "Shown as they are now, not as of the date:", *[f"  - {note}" for note in view.current_only]]
    return "\n".join(lines) + "\n"


def _share(pooled: dict, start, end) -> int:
    total = sum(p for (f, _), p in pooled.items() if f is start)
    moved = pooled.get((start, end), 0)
    return (2 * moved * 10_000 + total) // (2 * total) if total else 0


def _loss_lines(loss: ExpectedLoss) -> list[str]:
    lines = [f"Expected loss ({loss.policy_version}, {loss.scorecard_version}, scenario {loss.scenario}, "
             f"LGD {percent(loss.lgd_bps)})"]
    lines += _table(["grade", "score", "PD", "exposure", "expected loss"],
                    [[g.grade.value, str(g.score), percent(g.pd_bps), yuan(g.exposure_minor),
                      yuan(g.expected_loss_minor)] for g in loss.grades])
    lines += [""]
    lines += _table(["bucket", "not cured a month", "source", "to charge-off"],
                    [[b.bucket.value, percent(b.not_cure_rate_bps), "book" if b.observed else "policy",
                      percent(b.loss_rate_bps)] for b in loss.buckets])
    lines += [""]
    lines += _table(["against the reserve", ""], [
        ["expected loss", yuan(loss.expected_loss_minor)],
        [f"insured share ({percent(loss.insurance_share_bps)})", yuan(loss.insured_loss_minor)],
        ["net expected loss", yuan(loss.net_expected_loss_minor)],
        ["risk reserve", yuan(loss.reserve_balance_minor)],
        ["coverage", percent(loss.coverage_bps)],
        ["shortfall", yuan(loss.shortfall_minor)]])
    return lines


def stress_table(view: StressView) -> str:
    s = view.scenario
    multipliers = ", ".join(f"{g.value} x{m / 10_000:g}" for g, m in sorted(s.pd_multiplier_bps.items())) or "none"
    lgd = percent(s.lgd_bps) if s.lgd_bps is not None else "the policy's"
    lines = [f"Stress test '{s.name}' as of {view.as_of.isoformat()} (CNY)",
             *([f"  {s.description}"] if s.description else []),
             f"  PD multipliers: {multipliers}; LGD: {lgd}; roll rates x{s.roll_rate_multiplier_bps / 10_000:g}", ""]
    p, x = view.policy, view.stressed
    lines += _table(["", "policy", s.name], [
        ["expected loss", yuan(p.expected_loss_minor), yuan(x.expected_loss_minor)],
        ["insured share", yuan(p.insured_loss_minor), yuan(x.insured_loss_minor)],
        ["net expected loss", yuan(p.net_expected_loss_minor), yuan(x.net_expected_loss_minor)],
        ["risk reserve", yuan(p.reserve_balance_minor), yuan(x.reserve_balance_minor)],
        ["coverage", percent(p.coverage_bps), percent(x.coverage_bps)],
        ["shortfall", yuan(p.shortfall_minor), yuan(x.shortfall_minor)]])
    lines += ["", *_loss_lines(x)]
    return "\n".join(lines) + "\n"
