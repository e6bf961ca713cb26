"""The report of a sweep: a table with mean ± std over seeds, and PNG plots (matplotlib Agg).

The result lines of cells that differ only in ``report.seed_key`` form one group, one row of
``results.md`` and ``results.csv``. Error bars are the sample standard deviation over seeds
(0 for one seed). The plots:

- ``accuracy_vs_epsilon.png``: test accuracy vs the ε spent, one line per DP mode and
  combination of the other grid values, non-private groups as dashed horizontal lines;
- ``accuracy_relative.png``, only with ``report.compare_key``: for each other value of that key,
  test accuracy minus that of ``report.reference`` in each group with the same other grid
  values (a value left out as irrelevant matches any), in percentage points; the error bars
  add both groups' standard deviations in quadrature.
"""

import csv
import itertools
import json
import math
import os

import ml_collections
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

STATS = (
    "seeds",
    "test_accuracy_mean",
    "test_accuracy_std",
    "epsilon",
    "delta",
    "noise_multiplier",
    "steps",
)
MODE_NAMES = {"none": "non-private", "dpsgd": "DP-SGD", "maskdp": "MaskDP"}
EPSILON_KEYS = ("dp.mode", "dp.epsilon", "dp.noise_multiplier")  # not series labels in plot 1
EPSILON_PLOT, RELATIVE_PLOT = "accuracy_vs_epsilon.png", "accuracy_relative.png"


def report_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed_key = "seed"  # grid key of repetitions: the report averages over its values
    c.compare_key = ""  # grid key of accuracy_relative.png, e.g. "data.name"; "" skips the plot
    c.reference = ""  # the value of compare_key that the others are compared to, as in cell ids
    return c


def summarize(rows: list[dict], seed_key: str) -> tuple[list[str], list[dict]]:
    """(grid keys but the seed, one summary per group of result lines), in order of rows."""
    keys = sorted({key for row in rows for key in row["values"]} - {seed_key})
    groups = {}
    for row in rows:
        values = {key: row["values"].get(key) for key in keys}  # None: left out as irrelevant
        groups.setdefault(json.dumps(values, sort_keys=True), (values, []))[1].append(row)
    return keys, [_summary(values, members) for values, members in groups.values()]


def _summary(values: dict, rows: list[dict]) -> dict:
    accuracy = [row["test_accuracy"] for row in rows]
    return {
        **values,
        "mode": rows[0]["mode"],
        "seeds": len(rows),
        "test_accuracy_mean": float(np.mean(accuracy)),
        "test_accuracy_std": float(np.std(accuracy, ddof=1)) if len(rows) > 1 else 0.0,
        "epsilon": _mean(rows, "epsilon"),
        "delta": _mean(rows, "delta"),
        "noise_multiplier": _mean(rows, "noise_multiplier"),
        "steps": _mean(rows, "step"),
    }


def _mean(rows: list[dict], field: str) -> float | None:
    values = [row[field] for row in rows]
    return None if None in values else float(np.mean(values))


def markdown(keys: list[str], summaries: list[dict]) -> str:
    lines = [
        "| " + " | ".join([*keys, "seeds", "test accuracy", "ε", "δ", "σ", "steps"]) + " |",
        "|---" * (len(keys) + 6) + "|",
    ]
    for s in summaries:
        private = s["epsilon"] is not None  # non-private rows: ε = ∞, no δ or σ
        cells = ["–" if s[key] is None else str(s[key]) for key in keys]
        cells += [
            str(s["seeds"]),
            f"{s['test_accuracy_mean']:.3f} ± {s['test_accuracy_std']:.3f}",
            f"{s['epsilon']:.4f}" if private else "∞",
            f"{s['delta']:g}" if private else "–",
            f"{s['noise_multiplier']:.4f}" if private else "–",
            f"{s['steps']:g}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write(experiment: ml_collections.ConfigDict, rows: list[dict], workdir: str) -> str:
    """Writes results.md, results.csv and the plots to ``workdir``; returns the table."""
    options = experiment.report
    keys, summaries = summarize(rows, options.seed_key)
    with open(os.path.join(workdir, "results.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, [*keys, *STATS], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(summaries)
    plots = []
    if plot_epsilon(summaries, keys, experiment.name, os.path.join(workdir, EPSILON_PLOT)):
        plots.append(EPSILON_PLOT)
    if options.compare_key and plot_relative(
        summaries, keys, options, experiment.name, os.path.join(workdir, RELATIVE_PLOT)
    ):
        plots.append(RELATIVE_PLOT)
    table = markdown(keys, summaries)
    with open(os.path.join(workdir, "results.md"), "w") as f:
        f.write(
            f"# {experiment.name}\n\nTest accuracy: mean ± std over the values of "
            f"`{options.seed_key}`; ε spent at δ; σ the noise multiplier. Each cell's privacy "
            f"report: `cells/<cell>/report.md`; its curves: `tensorboard --logdir "
            f"{os.path.join(workdir, 'cells')}`.\n\n{table}\n"
        )
        f.writelines(f"\n![{plot}]({plot})\n" for plot in plots)
    return table


def plot_epsilon(summaries: list[dict], keys: list[str], name: str, path: str) -> bool:
    """Accuracy vs ε per DP mode, non-private as horizontal lines; False if nothing is DP."""
    private = [s for s in summaries if s["epsilon"] is not None]
    if not private:
        return False
    others = [key for key in keys if key not in EPSILON_KEYS]
    series = {}
    for s in private:
        series.setdefault(_label(MODE_NAMES.get(s["mode"], s["mode"]), s, others), []).append(s)
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for label, points in series.items():
        points.sort(key=lambda s: s["epsilon"])
        x = [s["epsilon"] for s in points]
        ax.errorbar(x, *_percent(points), marker="o", capsize=3, label=label)
    baselines = [s for s in summaries if s["epsilon"] is None]
    for i, s in enumerate(baselines, start=len(series)):
        (mean,), (std,) = _percent([s])
        ax.axhline(mean, color=f"C{i}", linestyle="--", label=_label(MODE_NAMES["none"], s, others))
        ax.axhspan(mean - std, mean + std, color=f"C{i}", alpha=0.15)
    ticks = sorted({float(f"{s['epsilon']:.2g}") for s in private})
    ax.set_xscale("log")
    ax.set_xticks(ticks, labels=[f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    deltas = {s["delta"] for s in private}
    at = f" (δ = {deltas.pop():g})" if len(deltas) == 1 else ""
    ax.set(title=f"{name}: test accuracy vs privacy budget", ylabel="test accuracy (%)")
    ax.set_xlabel(f"privacy budget ε{at}, log scale")
    ax.grid(alpha=0.3)
    ax.legend(title="mean ± std over seeds", fontsize="small")
    fig.savefig(path, dpi=150)
    return True


def plot_relative(
    summaries: list[dict], keys: list[str], options: ml_collections.ConfigDict, name: str, path: str
) -> bool:
    """Bars of accuracy minus the reference's per compared value; False if none matches."""
    key, reference = options.compare_key, options.reference
    context = [k for k in keys if k != key]
    references = [s for s in summaries if str(s[key]) == reference]
    others = [s for s in summaries if str(s[key]) != reference]
    bars = {}  # legend label → {compared value → (difference, error)}
    for s, r in itertools.product(others, references):
        if _matches(s, r, context):
            (mean, ref), (std, ref_std) = _percent([s, r])
            merged = {k: r[k] if s[k] is None else s[k] for k in context}
            label = _label("", merged, context)
            bars.setdefault(label, {})[str(s[key])] = (mean - ref, math.hypot(std, ref_std))
    if not bars:
        return False
    categories = list(dict.fromkeys(value for group in bars.values() for value in group))
    width = 0.8 / len(bars)
    fig = Figure(figsize=(max(5, 1.2 * len(categories) + 3), 4.5), layout="constrained")
    ax = fig.add_subplot()
    for i, (label, group) in enumerate(bars.items()):
        offset = (i - (len(bars) - 1) / 2) * width
        x = [categories.index(value) + offset for value in group]
        heights, errors = zip(*group.values())
        ax.bar(x, heights, width, yerr=errors, capsize=3, label=label or None)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(categories)), labels=categories)
    ax.set(title=f"{name}: test accuracy relative to {key}={reference}", xlabel=key)
    ax.set_ylabel(f"test accuracy − {reference} (percentage points)")
    ax.grid(axis="y", alpha=0.3)
    if any(bars):
        ax.legend(title="mean ± std over seeds", fontsize="small")
    fig.savefig(path, dpi=150)
    return True


def _percent(summaries: list[dict]) -> tuple[list[float], list[float]]:
    """(mean, std) test accuracies in percent."""
    means = [100 * s["test_accuracy_mean"] for s in summaries]
    return means, [100 * s["test_accuracy_std"] for s in summaries]


def _label(head: str, summary: dict, keys: list[str]) -> str:
    parts = [f"{key}={summary[key]}" for key in keys if summary[key] is not None]
    return ", ".join([head, *parts] if head else parts)


def _matches(summary: dict, reference: dict, keys: list[str]) -> bool:
    return all(
        summary[k] is None or reference[k] is None or summary[k] == reference[k] for k in keys
    )
