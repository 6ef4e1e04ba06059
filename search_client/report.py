"""Run report: :class:`RunReport` written as ``report.json`` (at least ``target_ms``,
``predicted_ms``, ``measured_ms``, ``device_class``, ``runtime``, ``gmacs``, ``params_m``, ``miou``,
``supernet_gmacs``, ``supernet_miou``), ``report.md`` and matplotlib plots.

Pure functions of already-computed numbers; the pipeline and the demo call them at the end.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: plots are files, never windows
import matplotlib.pyplot as plt  # noqa: E402
from pydantic import BaseModel, ConfigDict, model_validator  # noqa: E402

log = logging.getLogger(__name__)


def relative_error(value: float | None, reference: float | None) -> float | None:
    """(value - reference) / reference, or None when either is missing."""
    if value is None or not reference:
        return None
    return (value - reference) / reference


class RunReport(BaseModel):
    """What a search run found, as ``report.json`` holds it. The required figures are typed (a
    missing one is a ValueError naming it; ``measured_ms`` is None for a run that measured
    nothing); whatever else the run records (chosen paths, widths, the measurement) is kept as is.
    The ratios and ``missed_target`` are derived here, once."""

    model_config = ConfigDict(extra="allow")
    target_ms: float
    predicted_ms: float | None
    measured_ms: float | None
    device_class: str
    runtime: str
    gmacs: float
    params_m: float
    miou: float
    supernet_gmacs: float
    supernet_miou: float
    statistic: str = "median_ms"  # the per-job statistic every latency figure is
    tolerance: float = 0.1  # measured vs target within this share is on target
    measured_vs_target: float | None = None
    predicted_vs_measured: float | None = None
    missed_target: bool = False

    @model_validator(mode="after")
    def _derive(self) -> RunReport:
        self.measured_vs_target = relative_error(self.measured_ms, self.target_ms)
        self.predicted_vs_measured = relative_error(self.predicted_ms, self.measured_ms)
        self.missed_target = self.measured_vs_target is not None and abs(self.measured_vs_target) > self.tolerance
        return self

    def get(self, key: str, default: object = None) -> object:
        """A field the run recorded beyond the typed ones (None or ``default`` when absent)."""
        value = getattr(self, key, None)
        return default if value is None else value


def verdict(report: RunReport) -> str:
    """One line: target, measured, the miss and whether it is within the tolerance."""
    stat = report.statistic.removesuffix("_ms")
    if report.measured_ms is None:
        predicted = "—" if report.predicted_ms is None else f"{report.predicted_ms:.2f}"
        return f"target {report.target_ms:.2f} ms; not measured (predicted {predicted} ms)"
    tol = 100 * report.tolerance
    state = f"MISSED the target by more than ±{tol:.0f} %" if report.missed_target else f"within ±{tol:.0f} %"
    return (f"target {report.target_ms:.2f} ms, measured {report.measured_ms:.2f} ms ({stat}), "
            f"{100 * report.measured_vs_target:+.1f} %: {state}")


def write_report(run_dir: Path, report: RunReport | dict) -> RunReport:
    """Write ``report.json`` and ``report.md`` into the run folder; returns the report."""
    full = report if isinstance(report, RunReport) else RunReport.model_validate(report)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "report.json").write_text(json.dumps(full.model_dump(), indent=2, default=str) + "\n")
    (run_dir / "report.md").write_text(report_markdown(full))
    return full


def _fmt(x: object, digits: int = 3) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:.{digits}f}" if math.isfinite(x) else str(x)
    return str(x)


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x * 100:+.1f} %"


def report_markdown(r: RunReport) -> str:
    """Human summary of a report: the comparison table, the chosen architecture, the plots."""
    stat = r.statistic
    budget = r.get("training_budget") or {}
    lines = [
        f"# Search run `{r.get('name', '?')}`",
        "",
        f"**{verdict(r)}**; predicted {_fmt(r.predicted_ms, 2)} ms ({_pct(r.get('predicted_vs_measured'))} "
        "vs measured).",
        "",
        f"Every latency figure is the per-job `{stat}` (the statistic the predictor learned; a network measured in "
        "several jobs gets the median of theirs); job medians are beside it.",
        "",
        f"Target device class `{r.device_class}`, runtime `{r.runtime}`, "
        f"predictor version {r.get('predictor_version', '—')}.",
        "",
        "| | supernet | searched network |",
        "|---|---|---|",
        f"| predicted latency (ms) | {_fmt(r.get('supernet_predicted_ms'))} | {_fmt(r.predicted_ms)} |",
        f"| measured latency (ms, {stat}) | {_fmt(r.get('supernet_measured_ms'))} | {_fmt(r.measured_ms)} |",
        f"| measured latency (ms, job median) | {_fmt(r.get('supernet_measured_median_ms'))} | "
        f"{_fmt(r.get('measured_median_ms'))} |",
        f"| GMACs | {_fmt(r.supernet_gmacs)} | {_fmt(r.gmacs)} |",
        f"| params (M) | {_fmt(r.get('supernet_params_m'))} | {_fmt(r.params_m)} |",
        f"| mIoU | {_fmt(r.supernet_miou, 4)} | {_fmt(r.miou, 4)} |",
        f"| training iterations behind the mIoU | {_fmt(budget.get('supernet'))} | {_fmt(budget.get('searched'))} |",
        "",
        f"- target latency: {_fmt(r.target_ms)} ms; measured vs target: {_pct(r.get('measured_vs_target'))}",
        f"- predicted vs measured: {_pct(r.get('predicted_vs_measured'))}",
    ]
    if r.get("paths"):
        lines += ["", "## Chosen paths", "", ", ".join(f"`{p}`" for p in r.paths)]
    if r.get("widths"):
        lines += ["", "## Kept widths", "", "| layer | kept / total |", "|---|---|"]
        total = r.get("channels") or {}
        lines += [f"| {k} | {v} / {total[k]} |" if k in total else f"| {k} | {v} |" for k, v in r.widths.items()]
    if r.get("plots"):
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in r.plots]
    if r.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in r.notes]
    return "\n".join(lines) + "\n"


# --- plots ------------------------------------------------------------------------------------


def plot_predicted_vs_measured(predicted: Sequence[float], measured: Sequence[float], path: Path, title: str) -> Path:
    """Scatter of predicted vs measured block latency on log axes, with the ±10 % band."""
    pairs = [(p, m) for p, m in zip(predicted, measured, strict=True) if 0 < p < 1e9 and 0 < m < 1e9]
    if not pairs:
        raise ValueError("no finite positive predicted/measured pairs to plot")
    predicted, measured = [p for p, _ in pairs], [m for _, m in pairs]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(measured, predicted, s=10, alpha=0.7)
    lo = min(min(measured), min(predicted)) * 0.8
    hi = max(max(measured), max(predicted)) * 1.25
    ax.plot([lo, hi], [lo, hi], "k-", lw=1, label="y = x")
    ax.plot([lo, hi], [lo * 1.1, hi * 1.1], "k:", lw=0.8, label="±10 %")
    ax.plot([lo, hi], [lo * 0.9, hi * 0.9], "k:", lw=0.8)
    ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi), xlabel="measured (ms)", ylabel="predicted (ms)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def plot_supernet_vs_searched(r: RunReport, path: Path) -> Path:
    """Two bar panels: latency (predicted / measured / target) and mIoU, supernet vs searched."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 4))
    names = ["supernet", "searched"]
    pred = [r.get("supernet_predicted_ms") or 0.0, r.predicted_ms or 0.0]
    meas = [r.get("supernet_measured_ms") or 0.0, r.measured_ms or 0.0]
    xs = range(len(names))
    ax1.bar([x - 0.2 for x in xs], pred, width=0.4, label="predicted")
    ax1.bar([x + 0.2 for x in xs], meas, width=0.4, label="measured")
    ax1.axhline(r.target_ms, color="r", ls="--", lw=1, label="target")
    ax1.set(xticks=list(xs), xticklabels=names, ylabel="latency (ms)", title=f"{r.device_class} {r.runtime}")
    ax1.legend(fontsize=8)
    ax2.bar(names, [r.supernet_miou or 0.0, r.miou or 0.0], color=["gray", "tab:green"])
    budget = r.get("training_budget") or {}
    ax2.set(ylabel="mIoU", title=f"accuracy (training iterations: supernet {budget.get('supernet', '?')}, "
                                 f"searched {budget.get('searched', '?')})")
    for i, g in enumerate([r.supernet_gmacs, r.gmacs]):
        ax2.annotate(f"{g:.2f} GMACs", (i, 0), textcoords="offset points", xytext=(0, 5), ha="center", fontsize=8)
    return _save(fig, path)


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("skipping malformed metrics line in %s", path)
    return rows


def _step_of(row: dict, i: int) -> float:
    for key in ("step", "iter", "iteration", "global_step"):
        if isinstance(row.get(key), int | float):
            return float(row[key])
    return float(i)


def plot_training_curves(curves: dict[str, Iterable[dict]], path: Path, keys: Sequence[str] | None = None) -> Path:
    """One panel per phase (pretrain, search, finetune): every numeric loss term against the step."""
    curves = {k: list(v) for k, v in curves.items() if v}
    if not curves:
        raise ValueError("no training metrics to plot")
    fig, axes = plt.subplots(1, len(curves), figsize=(4.5 * len(curves), 3.6), squeeze=False)
    wanted = keys or ("loss", "task", "aux", "distill", "latency", "latency_ms", "miou")
    for ax, (phase, rows) in zip(axes[0], curves.items(), strict=True):
        for key in wanted:
            pts = [(_step_of(r, i), r[key]) for i, r in enumerate(rows) if isinstance(r.get(key), int | float)]
            if pts:
                ax.plot(*zip(*pts, strict=True), label=key, lw=1)
        ax.set(title=phase, xlabel="step")
        ax.legend(fontsize=7)
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
