"""Figures for the report, drawn with matplotlib (Agg) and returned as base64 PNG strings."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

COLORS = {"synthetic": "#1f6fb2", "reference": "#d1495b"}


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _color(label: str, i: int) -> str:
    return COLORS.get(label, plt.rcParams["axes.prop_cycle"].by_key()["color"][i % 10])


def step_curves(
    panels: dict[str, dict[str, pl.DataFrame]],
    value: str,
    ylabel: str,
    *,
    ylim: tuple[float, float] = (0.0, 1.0),
) -> str:
    """Small multiples of step curves with confidence bands: panel -> label -> curve frame.

    A curve frame has ``time`` (days) and ``value``, and optionally ``lower``/``upper``.
    """
    count = len(panels)
    columns = min(count, 3)
    rows = -(-count // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.4 * rows),
                                squeeze=False)
    for axis, (title, curves) in zip(axes.flat, panels.items(), strict=False):
        for i, (label, curve) in enumerate(curves.items()):
            years = curve["time"].to_numpy() / 365.25
            color = _color(label, i)
            axis.step(years, curve[value].to_numpy(), where="post", color=color, label=label)
            if {"lower", "upper"} <= set(curve.columns):
                axis.fill_between(years, curve["lower"].to_numpy(), curve["upper"].to_numpy(),
                                  step="post", color=color, alpha=0.18, linewidth=0)
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("years since origin")
        axis.set_ylabel(ylabel)
        axis.set_ylim(*ylim)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    for axis in axes.flat[count:]:
        axis.set_visible(False)
    figure.tight_layout()
    return _png(figure)


def transition_heatmaps(matrices: dict[str, pl.DataFrame], states: list[str]) -> str:
    """Side-by-side jump-chain matrices (from_state x to_state probability), one per label."""
    figure, axes = plt.subplots(1, len(matrices), figsize=(6.0 * len(matrices), 5.0),
                                squeeze=False, constrained_layout=True)
    for axis, (label, frame) in zip(axes.flat, matrices.items(), strict=True):
        grid = np.zeros((len(states), len(states)))
        index = {s: i for i, s in enumerate(states)}
        for origin, target, p in frame.select("from_state", "to_state", "probability").rows():
            if origin in index and target in index:
                grid[index[origin], index[target]] = p
        image = axis.imshow(grid, vmin=0, vmax=1, cmap="Blues")
        axis.set_xticks(range(len(states)), states, rotation=45, ha="right", fontsize=8)
        axis.set_yticks(range(len(states)), states, fontsize=8)
        for (i, j), p in np.ndenumerate(grid):
            if p > 0:
                axis.text(j, i, f"{p:.2f}", ha="center", va="center", fontsize=8,
                          color="white" if p > 0.6 else "black")
        axis.set_title(f"{label}: next state given current", fontsize=10)
        axis.set_xlabel("to")
        axis.set_ylabel("from")
    figure.colorbar(image, ax=list(axes.flat), shrink=0.8)
    return _png(figure)


def sojourn_histograms(samples: dict[str, pl.DataFrame], states: list[str]) -> str:
    """Histograms of completed sojourn times per state: label -> frame(state, duration)."""
    count = max(len(states), 1)
    columns = min(count, 3)
    rows = -(-count // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.2 * rows),
                                squeeze=False)
    for axis, state in zip(axes.flat, states, strict=False):
        pooled = [f.filter(pl.col("state") == state)["duration"].to_numpy() / 365.25
                  for f in samples.values()]
        upper = max((np.quantile(p, 0.99) for p in pooled if p.size), default=1.0)
        bins = np.linspace(0, upper, 40)
        for i, (label, durations) in enumerate(zip(samples, pooled, strict=True)):
            if durations.size:
                axis.hist(durations, bins=bins, density=True, histtype="step", linewidth=1.5,
                          color=_color(label, i), label=f"{label} (n={durations.size:,})")
        axis.set_title(f"time in {state}", fontsize=10)
        axis.set_xlabel("years")
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
    for axis in axes.flat[count:]:
        axis.set_visible(False)
    figure.tight_layout()
    return _png(figure)


def occupation_curves(occupations: dict[str, pl.DataFrame], states: list[str]) -> str:
    """State occupation probability over time, one panel per state: label -> frame."""
    panels = {
        state: {
            label: frame.filter(pl.col("state") == state).select(
                "time", pl.col("probability").alias("value")
            )
            for label, frame in occupations.items()
        }
        for state in states
    }
    return step_curves(panels, "value", "probability in state")
