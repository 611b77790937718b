"""Train the credit scorecard on the German credit data and write the model file.

    python -m server.risk.train [--out server/risk/models/scorecard-v1.json]

Weight-of-evidence binning (categories as they are, numbers in quantile bins merged
until each bin has a monotone bad rate), characteristics kept by information value,
logistic regression on the WoE values (Newton's method with a small ridge), scaled to
600 points at 50:1 good:bad odds with 20 points to double the odds, integer points per
bin. Grades are score bands cut at fixed shares of the training population. AUC and KS
are measured on a stratified 30 % held-out split that training never sees.

Sex, marital status and foreign-worker status are left out on purpose: a credit
decision must not turn on them.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

DATA = Path(__file__).resolve().parent / "data" / "germancredit.csv"
MODELS = Path(__file__).resolve().parent / "models"
SEED = 20_261_128
HOLD_OUT_SHARE = 0.3
POINTS, ODDS, PDO = 600, 50, 20
MIN_IV = 0.02
MIN_BIN_SHARE = 0.05

CATEGORICAL = [
    "status_of_existing_checking_account", "credit_history", "purpose", "savings_account_and_bonds",
    "present_employment_since", "other_debtors_or_guarantors", "property", "other_installment_plans", "housing",
    "job", "telephone", "installment_rate_in_percentage_of_disposable_income",
]
NUMERIC = ["duration_in_month", "credit_amount", "age_in_years"]
EXCLUDED = ["personal_status_and_sex", "foreign_worker"]
# Grade bands: shares of the training population from the best scores down.
GRADE_SHARES = [("A", 0.20), ("B", 0.25), ("C", 0.25), ("D", 0.20), ("E", 0.10)]


def load() -> tuple[list[dict], np.ndarray]:
    with DATA.open(encoding="utf-8", newline="") as file:
        rows = list(csv.DictReader(file))
    bad = np.array([r["creditability"] == "bad" for r in rows], dtype=float)
    return rows, bad


def split(bad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(SEED)
    test: list[int] = []
    for label in (0.0, 1.0):
        index = np.flatnonzero(bad == label)
        rng.shuffle(index)
        test.extend(index[: round(len(index) * HOLD_OUT_SHARE)])
    test_mask = np.zeros(len(bad), dtype=bool)
    test_mask[test] = True
    return np.flatnonzero(~test_mask), np.flatnonzero(test_mask)


def woe(good: float, bad: float, good_total: float, bad_total: float) -> float:
    return math.log(((good + 0.5) / good_total) / ((bad + 0.5) / bad_total))


def numeric_edges(values: np.ndarray, bad: np.ndarray) -> list[float]:
    """Quantile cut points, merged until the bad rate is monotone across bins."""
    edges = sorted(set(np.quantile(values, [0.2, 0.4, 0.6, 0.8]).round().tolist()))
    while edges:
        bins = np.digitize(values, edges, right=True)
        rates = [bad[bins == b].mean() for b in range(len(edges) + 1)]
        steps = np.sign(np.diff(rates))
        if np.all(steps >= 0) or np.all(steps <= 0):
            break
        # Drop the cut between the two closest neighbouring rates.
        drop = int(np.argmin(np.abs(np.diff(rates))))
        edges.pop(drop)
    return edges


def bin_characteristic(name: str, rows: list[dict], train: np.ndarray, bad: np.ndarray) -> dict:
    y = bad[train]
    good_total, bad_total = (y == 0).sum(), (y == 1).sum()
    if name in NUMERIC:
        values = np.array([float(rows[i][name]) for i in train])
        edges = numeric_edges(values, y)
        lows = [None] + edges
        highs = edges + [None]
        index = np.digitize(values, edges, right=True)
        bins: list[dict[str, Any]] = []
        for b, (low, high) in enumerate(zip(lows, highs, strict=True)):
            members = index == b
            label = (f"<= {high:g}" if low is None else f"> {low:g}" if high is None else f"{low:g} < x <= {high:g}")
            bins.append({"label": label, "above": low, "at_most": high,
                         "woe": woe((y[members] == 0).sum(), (y[members] == 1).sum(), good_total, bad_total),
                         "share": float(members.mean())})
        return {"name": name, "kind": "numeric", "bins": bins}
    labels = [rows[i][name] for i in train]
    categories = sorted(set(rows[i][name] for i in range(len(rows))))
    bins = []
    small = []
    for category in categories:
        members = np.array([v == category for v in labels])
        if members.mean() < MIN_BIN_SHARE:
            small.append(category)
            continue
        bins.append({"label": category, "values": [category],
                     "woe": woe((y[members] == 0).sum(), (y[members] == 1).sum(), good_total, bad_total),
                     "share": float(members.mean())})
    if small:
        members = np.array([v in small for v in labels])
        bins.append({"label": "other: " + "; ".join(small), "values": small,
                     "woe": woe((y[members] == 0).sum(), (y[members] == 1).sum(), good_total, bad_total),
                     "share": float(members.mean())})
    return {"name": name, "kind": "categorical", "bins": bins}


def woe_of(characteristic: dict, raw: str) -> float:
    return characteristic["bins"][bin_index(characteristic, raw)]["woe"]


def bin_index(characteristic: dict, raw: str) -> int:
    if characteristic["kind"] == "numeric":
        value = float(raw)
        for i, b in enumerate(characteristic["bins"]):
            if (b["above"] is None or value > b["above"]) and (b["at_most"] is None or value <= b["at_most"]):
                return i
    else:
        for i, b in enumerate(characteristic["bins"]):
            if raw in b["values"]:
                return i
    raise ValueError(f"{characteristic['name']}: no bin for {raw!r}")


def information_value(characteristic: dict, rows: list[dict], train: np.ndarray, bad: np.ndarray) -> float:
    y = bad[train]
    good_total, bad_total = (y == 0).sum(), (y == 1).sum()
    index = np.array([bin_index(characteristic, rows[i][characteristic["name"]]) for i in train])
    total = 0.0
    for b, bin_ in enumerate(characteristic["bins"]):
        members = index == b
        g, d = ((y[members] == 0).sum() + 0.5) / good_total, ((y[members] == 1).sum() + 0.5) / bad_total
        total += (g - d) * bin_["woe"]
    return float(total)


def fit(x: np.ndarray, good: np.ndarray, ridge: float = 1e-3) -> np.ndarray:
    """Logistic regression of good on x by Newton's method; returns [intercept, b...]."""
    design = np.column_stack([np.ones(len(x)), x])
    beta = np.zeros(design.shape[1])
    for _ in range(50):
        p = 1 / (1 + np.exp(-design @ beta))
        gradient = design.T @ (good - p) - ridge * np.r_[0, beta[1:]]
        hessian = design.T @ (design * (p * (1 - p))[:, None]) + ridge * np.diag(np.r_[0, np.ones(len(beta) - 1)])
        step = np.linalg.solve(hessian, gradient)
        beta += step
        if np.abs(step).max() < 1e-10:
            break
    return beta


def auc_and_ks(score: np.ndarray, bad: np.ndarray) -> tuple[float, float]:
    """AUC as the probability that a good scores above a bad (ties count half); KS as
    the largest gap between the cumulative score distributions of goods and bads."""
    goods, bads = score[bad == 0], score[bad == 1]
    greater = (goods[:, None] > bads[None, :]).sum() + 0.5 * (goods[:, None] == bads[None, :]).sum()
    auc = greater / (len(goods) * len(bads))
    cuts = np.unique(score)
    ks = max(abs((bads <= c).mean() - (goods <= c).mean()) for c in cuts)
    return float(auc), float(ks)


def train() -> dict:
    rows, bad = load()
    train_idx, test_idx = split(bad)
    characteristics = [bin_characteristic(name, rows, train_idx, bad) for name in CATEGORICAL + NUMERIC]
    for c in characteristics:
        c["iv"] = information_value(c, rows, train_idx, bad)
    kept = [c for c in characteristics if c["iv"] >= MIN_IV]

    def matrix(index: np.ndarray) -> np.ndarray:
        return np.array([[woe_of(c, rows[i][c["name"]]) for c in kept] for i in index])

    beta = fit(matrix(train_idx), 1 - bad[train_idx])
    # Drop characteristics whose weight came out with the wrong sign (collinearity),
    # then refit, so that a better bin never loses points.
    while (beta[1:] <= 0).any():
        kept = [c for c, b in zip(kept, beta[1:], strict=True) if b > 0]
        beta = fit(matrix(train_idx), 1 - bad[train_idx])

    factor = PDO / math.log(2)
    offset = POINTS - factor * math.log(ODDS)
    base_points = round(offset + factor * beta[0])
    for c, weight in zip(kept, beta[1:], strict=True):
        c["weight"] = float(weight)
        for b in c["bins"]:
            b["points"] = round(factor * weight * b["woe"])
    model = {
        "version": "scorecard-v1",
        "scale": {"points": POINTS, "odds": ODDS, "pdo": PDO},
        "base_points": base_points,
        "characteristics": [
            {"name": c["name"], "kind": c["kind"], "information_value": round(c["iv"], 4),
             "bins": [{k: v for k, v in b.items() if k in ("label", "values", "above", "at_most", "points")}
                      for b in c["bins"]]}
            for c in kept
        ],
    }

    def scores(index: np.ndarray) -> np.ndarray:
        return np.array([base_points + sum(c["bins"][bin_index(c, rows[i][c["name"]])]["points"] for c in kept)
                         for i in index], dtype=float)

    train_scores = scores(train_idx)
    cut = 0.0
    bands = []
    ordered = np.sort(train_scores)[::-1]
    for grade, share in GRADE_SHARES[:-1]:
        cut += share
        bands.append({"grade": grade, "min_score": int(ordered[min(len(ordered) - 1, round(cut * len(ordered)) - 1)])})
    bands.append({"grade": GRADE_SHARES[-1][0], "min_score": 0})
    model["grades"] = bands
    train_auc, train_ks = auc_and_ks(train_scores, bad[train_idx])
    test_auc, test_ks = auc_and_ks(scores(test_idx), bad[test_idx])
    model["metrics"] = {"train": {"rows": len(train_idx), "auc": round(train_auc, 4), "ks": round(train_ks, 4)},
                        "held_out": {"rows": len(test_idx), "auc": round(test_auc, 4), "ks": round(test_ks, 4)},
                        "seed": SEED}
    model["trained_on"] = "Statlog (German Credit Data), UCI, CC BY 4.0; see server/risk/data/ATTRIBUTION.md"
    model["excluded_characteristics"] = EXCLUDED
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=MODELS / "scorecard-v1.json")
    args = parser.parse_args()
    model = train()
    args.out.write_text(json.dumps(model, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    metrics = model["metrics"]
    print(f"{len(model['characteristics'])} characteristics; held-out AUC {metrics['held_out']['auc']}, "
          f"KS {metrics['held_out']['ks']} (train AUC {metrics['train']['auc']}, KS {metrics['train']['ks']}); "
          f"written to {args.out}")


if __name__ == "__main__":
    main()
