"""Turn episodes into the numbers people read: a table, JSON, CSV and a sweep plot with 95% intervals."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from gpc.runtime.atomic import whole_file, write_text_whole
from gpc.runtime.episodes import NON_FINITE_ACTION, Episode
from gpc.runtime.stats import mean_interval, wilson_interval


@dataclass
class Row:
    name: str
    candidate: str
    episodes: int
    success_rate: float
    success_ci: tuple[float, float]
    mean_length: float
    maxima: dict[str, tuple]  # key -> (mean, ci low, ci high); the interval None for one episode
    non_finite: int  # episodes ended as failures on a non-finite action chunk (NaN or inf): 0 for a sound policy


def summarize(episodes: Sequence[Episode], candidates: Sequence[str], names: Sequence[str]) -> list[Row]:
    rows = []
    for label, name in zip(candidates, names):
        mine = sorted((e for e in episodes if e.candidate == label), key=lambda e: e.seed)  # sums in one order
        if not mine:
            continue
        successes = sum(e.success for e in mine)
        maxima = {}
        for key in mine[0].maxima:
            values = [e.maxima[key] for e in mine]
            maxima[key] = (float(np.mean(values)), *mean_interval(values))
        rows.append(Row(name, label, len(mine), successes / len(mine), wilson_interval(successes, len(mine)),
                        float(np.mean([e.length for e in mine])), maxima,
                        sum(e.reason == NON_FINITE_ACTION for e in mine)))
    return rows


def format_table(rows: Sequence[Row]) -> str:
    keys = list(rows[0].maxima) if rows else []
    header = (["policy", "episodes", "success % [95% CI]"] + [f"mean max {k} [95% CI]" for k in keys]
              + ["mean length", "non-finite"])
    lines = [header]
    for r in rows:
        cells = [r.name, str(r.episodes),
                 f"{100 * r.success_rate:5.1f} [{100 * r.success_ci[0]:4.1f}, {100 * r.success_ci[1]:4.1f}]"]
        cells += [f"{m:.3f} [{lo:.3f}, {hi:.3f}]" if lo is not None else f"{m:.3f} [one episode]"
                  for m, lo, hi in (r.maxima[k] for k in keys)]
        cells += [f"{r.mean_length:.0f}", str(r.non_finite)]
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [" | ".join(cell.ljust(w) for cell, w in zip(line, widths)) for line in lines]
    text.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(text)


def write_reports(rows: Sequence[Row], out: Path, sweep: Sequence[tuple[float, Row]] = (),
                  sweep_label: str = "weight on the first parent") -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_text_whole(out / "summary.json", json.dumps([asdict(r) for r in rows], indent=2))
    table = io.StringIO()
    writer = csv.writer(table)
    keys = list(rows[0].maxima) if rows else []
    writer.writerow(["policy", "candidate", "episodes", "success_rate", "success_ci_low", "success_ci_high",
                     "mean_length"] + [f"mean_max_{k}" for k in keys] + ["non_finite"])
    for r in rows:
        writer.writerow([r.name, r.candidate, r.episodes, r.success_rate, *r.success_ci, r.mean_length]
                        + [r.maxima[k][0] for k in keys] + [r.non_finite])
    write_text_whole(out / "summary.csv", table.getvalue())
    if sweep:
        plot_sweep(sweep, out / "sweep.png", sweep_label)


def plot_sweep(sweep: Sequence[tuple[float, Row]], path: Path, xlabel: str = "weight on the first parent") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = np.array([x for x, _ in sweep])
    rates = np.array([r.success_rate for _, r in sweep]) * 100
    lo = np.array([r.success_ci[0] for _, r in sweep]) * 100
    hi = np.array([r.success_ci[1] for _, r in sweep]) * 100
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(xs, rates, yerr=[rates - lo, hi - rates], fmt="o-", capsize=3, label="success rate (95% Wilson CI)")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("success %")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.set_title(f"weight sweep, {sweep[0][1].episodes} episodes per weight")
    ax.legend(loc="best")
    save_figure(fig, path)


def save_figure(fig, path: Path) -> None:
    """Lay out, write whole (a crash leaves the previous plot) and close a report figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with whole_file(path) as partial:
        fig.savefig(partial, dpi=120)
    plt.close(fig)
