"""The concurrency sweep as a PNG: throughput and p99 against calls in flight, the
service next to the floor. Needs matplotlib (`pip install -e '.[bench]'`)."""

from __future__ import annotations

from pathlib import Path


def plot_sweep(points: list[dict], out: Path, title: str) -> None:
    """`points`: one per in-flight level, with the median `floor` and `service`
    summaries (calls_per_s, p99_ms)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = [p["in_flight"] for p in points]
    fig, (throughput, p99) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    for target, style in (("floor", "o--"), ("service", "s-")):
        label = "floor (one SQL statement)" if target == "floor" else "service (Authorize, risk checks on)"
        throughput.plot(levels, [p[target]["calls_per_s"] for p in points], style, label=label)
        p99.plot(levels, [p[target]["p99_ms"] for p in points], style, label=label)
    for axis, ylabel in ((throughput, "calls/s"), (p99, "p99 latency (ms)")):
        axis.set_xscale("log", base=2)
        axis.set_xticks(levels, [str(level) for level in levels])
        axis.set_xlabel("calls in flight")
        axis.set_ylabel(ylabel)
        axis.set_ylim(bottom=0)
        axis.grid(True, alpha=0.3)
        axis.legend()
    throughput.set_title("Throughput")
    p99.set_title("p99 latency")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
