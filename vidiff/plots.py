"""Figures for reports, drawn with matplotlib's Agg canvas (no pyplot, no display): training curves read from
Lightning's CSV logs, grouped bar charts and a timing chart. Each function returns a `Figure`;
`vidiff.report.Report.figure` saves it as a PNG."""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Mapping
from pathlib import Path

Series = list[tuple[int, float]]  # (step, value), sorted by step

PALETTE = ("#3366cc", "#e8710a", "#1a9850", "#c51b7d", "#6a51a3", "#8c6d31")
_NOT_METRICS = {"step", "epoch"}


def read_metrics(logs_dir: str | Path) -> dict[str, Series]:
    """Every numeric column of `logs_dir/version_*/metrics.csv` (Lightning's CSVLogger) as (step, value) pairs.

    A resumed run logs into a new `version_N` folder; the folders are read in version order and joined by step,
    a later folder's value replacing an earlier one's at the same step. Columns keep their first-seen order;
    empty cells (metrics logged on other rows) and non-finite values are skipped.
    """
    paths = sorted(Path(logs_dir).glob("version_*/metrics.csv"), key=lambda p: _version(p.parent.name))
    columns: dict[str, dict[int, float]] = {}
    for path in paths:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                try:
                    step = int(float(row.get("step") or ""))
                except ValueError:
                    continue
                for name, cell in row.items():
                    if name is None or name in _NOT_METRICS or not cell:
                        continue
                    try:
                        value = float(cell)
                    except ValueError:
                        continue
                    if math.isfinite(value):
                        columns.setdefault(name, {})[step] = value
    return {name: sorted(values.items()) for name, values in columns.items() if values}


def _version(name: str) -> tuple[int, str]:
    m = re.fullmatch(r"version_(\d+)", name)
    return (int(m.group(1)), "") if m else (1 << 30, name)


def distinct_series(series: Mapping[str, Series]) -> dict[str, Series]:
    """`series` without the columns that repeat an earlier one exactly (Lightning logs `psnr` and `train/psnr`)."""
    out: dict[str, Series] = {}
    for name, values in series.items():
        if not any(values == kept for kept in out.values()):
            out[name] = values
    return out


def curves_figure(runs: Mapping[str, Mapping[str, Series]], ncols: int = 4):
    """One panel per (run, metric): the logged values, plus a smoothed line when there are many.

    `runs` maps a run's title (e.g. "VAE") to `read_metrics`'s result. Panels of metrics whose positive values
    span more than 30x use a log scale.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    panels = [(run, name, values) for run, series in runs.items() for name, values in distinct_series(series).items()]
    if not panels:
        raise ValueError("curves_figure: no metrics to plot")
    ncols = min(ncols, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = _figure(Figure, (2.6 * ncols, 2.2 * nrows))
    colours = {run: PALETTE[i % len(PALETTE)] for i, run in enumerate(runs)}
    for i, (run, name, values) in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        steps = [s for s, _ in values]
        ys = [v for _, v in values]
        colour = colours[run]
        if len(ys) > 30:
            ax.plot(steps, ys, color=colour, alpha=0.3, lw=0.8)
            ax.plot(steps, _ema(ys, 0.9), color=colour, lw=1.8)
        else:
            ax.plot(steps, ys, color=colour, lw=1.6, marker="o", ms=3.5)
        if min(ys) > 0 and max(ys) / min(ys) > 30:
            ax.set_yscale("log")
        ax.set_title(f"{run}: {name}", fontsize=10)
        ax.set_xlabel("step", fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True, min_n_ticks=1))
        _style(ax)
    return fig


def bars_figure(
    groups: Mapping[str, Mapping[str, float | None]],
    reference: Mapping[str, float] | None = None,
    reference_label: str = "",
    ylabel: str = "",
    ylim: tuple[float, float] | None = (0.0, 1.0),
):
    """Grouped bars: one group per key of the inner mappings, one bar per outer key, each labelled with its value.

    `reference` draws a dashed mark over the groups it names (e.g. chance level). Missing or None values leave
    a gap.
    """
    from matplotlib.figure import Figure

    categories = list(dict.fromkeys(k for values in groups.values() for k in values))
    fig = _figure(Figure, (2.4 + (0.6 + 0.3 * len(groups)) * len(categories), 3.2))
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(groups))
    for i, (label, values) in enumerate(groups.items()):
        xs = [j + (i - (len(groups) - 1) / 2) * width for j, c in enumerate(categories) if values.get(c) is not None]
        ys = [float(values[c]) for c in categories if values.get(c) is not None]
        bars = ax.bar(xs, ys, width * 0.92, label=label, color=PALETTE[i % len(PALETTE)])
        ax.bar_label(bars, fmt="%.2f", fontsize=8, padding=2)
    if reference:
        marked = [(j, reference[c]) for j, c in enumerate(categories) if c in reference]
        for k, (j, y) in enumerate(marked):
            ax.hlines(y, j - 0.45, j + 0.45, colors="#222", linestyles="dashed", lw=1.2,
                      label=reference_label if k == 0 else None)
    ax.set_xticks(range(len(categories)), categories)
    if ylim is not None:
        ax.set_ylim(ylim[0], ylim[1] * 1.12)  # room for the value labels
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _style(ax, grid_axis="y")
    return fig


def timings_figure(timings: Mapping[str, float]):
    """Horizontal bars of seconds per step, labelled in seconds or minutes, the first step on top."""
    from matplotlib.figure import Figure

    names = list(timings)
    seconds = [float(timings[n]) for n in names]
    fig = _figure(Figure, (6.0, 0.34 * len(names) + 1.0))
    ax = fig.add_subplot()
    bars = ax.barh(range(len(names)), seconds, color=PALETTE[0])
    ax.bar_label(bars, labels=[_duration(s) for s in seconds], fontsize=8, padding=3)
    ax.set_yticks(range(len(names)), names, fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel("seconds")
    ax.set_xlim(0, max([*seconds, 1e-9]) * 1.18)
    ax.set_title(f"total {_duration(sum(seconds))}", fontsize=10)
    _style(ax, grid_axis="x")
    return fig


def _figure(cls, size):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = cls(figsize=size, dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _style(ax, grid_axis: str = "both") -> None:
    ax.grid(axis=grid_axis, alpha=0.3)
    ax.tick_params(labelsize=8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _ema(values: list[float], beta: float) -> list[float]:
    """Bias-corrected exponential moving average (as TensorBoard's smoothing)."""
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta**i))
    return out


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
