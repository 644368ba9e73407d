"""The report's figures, drawn by matplotlib and returned as inline SVG text.

matplotlib is an optional extra (``nantrap[report]``); without it the renderers leave the
figures out and say why. No pyplot: each figure is a ``matplotlib.figure.Figure`` of its own,
so rendering touches no global state.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
from collections.abc import Sequence

from nantrap.report.run_log import RunLog, number

__all__ = ["HAVE_MATPLOTLIB", "ranges_heatmap", "timeline"]

try:  # an optional extra; the report renders without figures when it is absent
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
    from matplotlib.transforms import blended_transform_factory

    HAVE_MATPLOTLIB = True
except ImportError:  # pragma: no cover - exercised in environments without the extra
    HAVE_MATPLOTLIB = False

PANELS = (
    ("loss", "loss"),
    ("grad_norm", "gradient norm"),
    ("update_ratio", "update / weight"),
    ("lr", "learning rate"),
)
_COLORS = {"incident": "#c62828", "rollback": "#ef6c00", "skip": "#757575", "stop": "#000000"}
_MAX_MODULES = 40


def timeline(log: RunLog) -> str | None:
    """Loss, gradient norm, update ratio and LR over steps, incidents and actions marked."""
    ranks = _ranks(log)
    panels = [(k, lab) for k, lab in PANELS if any(log.series(k, r) for r in ranks)]
    if not HAVE_MATPLOTLIB or not panels:
        return None
    fig = Figure(figsize=(9.5, 1.9 * len(panels) + 0.6), layout="constrained")
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (key, label) in zip(axes, panels, strict=True):
        finite_all: list[float] = []
        for n, rank in enumerate(ranks):
            segments = log.series(key, rank)
            for i, (xs, ys) in enumerate(segments):
                kept = i == len(segments) - 1
                finite_all += _plot_segment(
                    ax,
                    xs,
                    ys,
                    color=f"C{n}",
                    kept=kept,
                    label=f"rank {rank}" if len(ranks) > 1 else None,
                )
        ax.set_ylabel(label)
        if _log_scale(key, finite_all):
            ax.set_yscale("log")
        ax.grid(alpha=0.25)
    _mark_events(log, axes)
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[-1].set_xlabel("step")
    handles, labels = _unique_legend(axes)
    if handles:
        fig.legend(
            handles,
            labels,
            loc="outside upper center",
            ncols=min(len(labels), 6),
            frameon=False,
            fontsize="small",
        )
    return _svg(fig)


def ranges_heatmap(log: RunLog) -> str | None:
    """Per-module output magnitude (log10 max |value|) and saturated fraction over steps."""
    if not HAVE_MATPLOTLIB:
        return None
    rank = _ranks(log)[0]
    sampled = [s for s in log.steps if s.get("ranges") and s.get("rank", rank) == rank]
    if not sampled:
        return None
    import numpy as np

    modules: list[str] = []
    for rec in sampled:
        modules += [m for m in rec["ranges"] if m not in modules]
    steps = [rec["step"] for rec in sampled]
    mag = np.full((len(modules), len(steps)), np.nan)
    sat = np.full_like(mag, np.nan)
    bad = []
    for j, rec in enumerate(sampled):
        for name, rng in rec["ranges"].items():
            i = modules.index(name)
            lo, hi = number(rng.get("min")), number(rng.get("max"))
            ends = [v for v in (lo, hi) if v is not None]
            if any(not math.isfinite(v) for v in ends):
                bad.append((j, i))
            finite = [abs(v) for v in ends if math.isfinite(v)]
            if finite:
                mag[i, j] = math.log10(max(max(finite), 1e-30))
            s = number(rng.get("saturated"))
            if s is not None and math.isfinite(s):
                sat[i, j] = s
    keep = _busiest(mag, sat, _MAX_MODULES)
    modules = [modules[i] for i in keep]
    mag, sat = mag[keep], sat[keep]
    bad = [(j, keep.index(i)) for j, i in bad if i in keep]

    height = 1.2 + 0.42 * len(modules)
    fig = Figure(figsize=(9.5, 2 * height), layout="constrained")
    ax_mag, ax_sat = fig.subplots(2, 1, sharex=True)
    for ax, data, cmap, title, lims in (
        (ax_mag, mag, "viridis", "log10 max |output|", None),
        (ax_sat, sat, "Reds", "saturated fraction (outputs at exactly 0 or 1)", (0, 1)),
    ):
        cm = matplotlib.colormaps[cmap].with_extremes(bad="#eeeeee")
        extent = (-0.5, len(steps) - 0.5, len(modules) - 0.5, -0.5)
        image = ax.imshow(
            np.ma.masked_invalid(data),
            aspect="auto",
            cmap=cm,
            extent=extent,
            interpolation="nearest",
            vmin=lims[0] if lims else None,
            vmax=lims[1] if lims else None,
        )
        fig.colorbar(image, ax=ax, shrink=0.9, pad=0.01)
        ax.set_title(title, fontsize="medium", loc="left")
        ax.set_yticks(range(len(modules)), modules, fontsize="small")
        for j, i in bad:
            ax.plot(j, i, "x", color=_COLORS["incident"], ms=8, mew=2)
    ticks = _tick_positions(len(steps))
    ax_sat.set_xticks(ticks, [str(steps[t]) for t in ticks])
    ax_sat.set_xlabel("sampled step")
    return _svg(fig)


def _plot_segment(ax, xs, ys, *, color: str, kept: bool, label: str | None) -> list[float]:
    """One run of steps; undone ones (replaced after a rollback) drawn faint and dashed."""
    fx = [x for x, y in zip(xs, ys, strict=True) if math.isfinite(y)]
    fy = [y for y in ys if math.isfinite(y)]
    style = {"lw": 1.4} if kept else {"lw": 1.0, "ls": "--", "alpha": 0.45}
    ax.plot(fx, fy, color=color, label=label if kept else "undone by rollback", **style)
    bad = [x for x, y in zip(xs, ys, strict=True) if not math.isfinite(y)]
    if bad:
        top = blended_transform_factory(ax.transData, ax.transAxes)
        ax.plot(
            bad,
            [0.93] * len(bad),
            "x",
            color=_COLORS["incident"],
            ms=7,
            mew=2,
            transform=top,
            label="non-finite",
        )
    return fy


def _ranks(log: RunLog) -> list[int | None]:
    return list(log.ranks) or [None]


def _log_scale(key: str, values: Sequence[float]) -> bool:
    positive = [v for v in values if v > 0]
    if not values or len(positive) != len(values):
        return False
    return key != "loss" or max(positive) / min(positive) > 100


def _mark_events(log: RunLog, axes) -> None:
    top = axes[0]
    steps = [s.get("step") for s in log.steps if isinstance(s.get("step"), int)]
    gap = max((max(steps) - min(steps)) / 12, 1) if steps else 1
    labelled: list[int] = []
    for incident in log.incidents():
        step = incident.first_step  # where it was first seen (a folded, unlocalized one)
        if step is None:
            continue
        for at in {step, *(i.step for i in (*incident.earlier, incident))} - {None}:
            for ax in axes:
                ax.axvline(at, color=_COLORS["incident"], lw=1.4, alpha=0.85, label="incident")
        if any(abs(step - s) <= gap for s in labelled):
            continue  # one label per cluster of incidents
        labelled.append(step)
        trans = blended_transform_factory(top.transData, top.transAxes)
        top.text(
            step,
            1.02,
            incident.diagnosis.code,
            transform=trans,
            ha="center",
            va="bottom",
            fontsize="x-small",
            color=_COLORS["incident"],
        )
    for action in log.actions:
        step, kind = action.get("step"), action.get("action")
        if not isinstance(step, int):
            continue
        for ax in axes:
            if kind == "rollback" and isinstance(action.get("to_step"), int):
                ax.axvspan(
                    action["to_step"],
                    step,
                    color=_COLORS["rollback"],
                    alpha=0.15,
                    lw=0,
                    label="rolled back",
                )
            elif kind in ("skip", "stop"):
                ax.axvline(
                    step,
                    color=_COLORS[kind],
                    lw=1,
                    ls="--",
                    label="skipped" if kind == "skip" else "stopped",
                )
    warned = sorted({d.step for d in log.warnings if d.step is not None})
    if warned:
        trans = blended_transform_factory(top.transData, top.transAxes)
        top.plot(
            warned,
            [0.04] * len(warned),
            "^",
            color="#f9a825",
            ms=6,
            transform=trans,
            label="early warning",
        )


def _unique_legend(axes):
    seen: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    return list(seen.values()), list(seen)


def _busiest(mag, sat, limit: int) -> list[int]:
    """Row indices to show: all if few, else the largest magnitudes and saturations."""
    import numpy as np

    n = mag.shape[0]
    if n <= limit:
        return list(range(n))
    score = np.nan_to_num(np.nanmax(np.where(np.isnan(mag), -np.inf, mag), axis=1), nan=-1e9)
    score = score + 100 * np.nan_to_num(np.nanmax(np.where(np.isnan(sat), 0, sat), axis=1))
    return sorted(int(i) for i in np.argsort(-score)[:limit])


def _tick_positions(n: int, most: int = 12) -> list[int]:
    stride = max(1, math.ceil(n / most))
    return list(range(0, n, stride))


_ID = re.compile(r'(id="|url\(#|href="#)([A-Za-z_][\w.-]*)')


def _svg(fig) -> str:
    """The figure as an ``<svg>`` element: text kept as text, ids unique in the page."""
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    prefix = "f" + hashlib.sha1(text.encode()).hexdigest()[:8] + "-"
    return _ID.sub(lambda m: f"{m.group(1)}{prefix}{m.group(2)}", text)
