"""The portfolio report's chart: vintage curves and the bucket mix by grade, as a PNG.

matplotlib is not a dependency of the service: it comes with the `report` extra
(`pip install -e '.[report]'`) and is imported only when a chart is asked for."""

from __future__ import annotations

from pathlib import Path

from server.core.portfolio import PortfolioView
from server.domain.portfolio import BUCKET_ORDER

MISSING = ("--plot needs matplotlib, which the service does not install: "
           "run `.venv/bin/pip install -e '.[report]'` (or `make report-deps`) and try again")

# Later buckets darker, so the eye reads lateness as weight.
BUCKET_COLOURS = {"CURRENT": "#9ecae1", "M1": "#fdd49e", "M2": "#fc8d59", "M3": "#e34a33", "M4_PLUS": "#b30000",
                  "CHARGED_OFF": "#4d0000"}


class ChartUnavailable(RuntimeError):
    pass


def plot(view: PortfolioView, path: Path) -> None:
    """Write the chart of `view` to `path` (PNG)."""
    try:
        import matplotlib
    except ImportError:
        raise ChartUnavailable(MISSING) from None
    matplotlib.use("Agg")
    from matplotlib import pyplot

    book = view.book
    figure, (curves, mix) = pyplot.subplots(1, 2, figsize=(11, 4.2), dpi=100)
    for vintage in book.vintages:
        curves.plot([p.months_on_book for p in vintage.points], [p.share_bps / 100 for p in vintage.points],
                    marker="o", markersize=3, label=vintage.capture_month.strftime("%Y-%m"))
    curves.set_title("Vintages: principal 30+ days past due or charged off")
    curves.set_xlabel("months on book")
    curves.set_ylabel("% of principal captured")
    curves.grid(alpha=0.3)
    if book.vintages:
        curves.legend(title="captured", fontsize=8)

    grades = sorted({e.grade for e in book.exposure})
    bottoms = [0.0] * len(grades)
    for bucket in BUCKET_ORDER:
        heights = [sum(e.principal_minor for e in book.exposure if e.grade is g and e.bucket is bucket) / 100
                   for g in grades]
        if any(heights):
            mix.bar([g.value for g in grades], heights, bottom=bottoms, label=bucket.value,
                    color=BUCKET_COLOURS[bucket.value])
            bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    mix.set_title(f"Outstanding principal by grade and bucket, {view.as_of.isoformat()}")
    mix.set_xlabel("grade")
    mix.set_ylabel("CNY")
    mix.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, format="png")
    pyplot.close(figure)
