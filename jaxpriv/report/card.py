"""``jaxpriv report WORKDIR``: one privacy report per training run.

Writes ``WORKDIR/report.md`` and its pictures in ``WORKDIR/report/``, from what the run left
there (``run.json``: config and plan; ``metrics.jsonl``; ``audit.json`` of ``jaxpriv audit
--workdir``) and, when the run trained on a dataset made by ``jaxpriv anonymize``, from that
run's ``summary.json``, ``inputs.jsonl``, preview and files. Sections: what is protected (mode,
privacy unit, adjacency, ε, δ, σ, q, steps, accountant), what is not, the ε-per-epoch curve,
a sample of the records the model trained on, the anonymization of the dataset, a leak check
of its output (`jaxpriv.report.leaks`) and the latest audit. The secret seed never appears.
"""

from __future__ import annotations

import collections
import datetime
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from jaxpriv import files
from jaxpriv.report import figures, leaks
from jaxpriv.train.metrics import read_jsonl

MODE_NAMES = {"none": "non-private", "dpsgd": "DP-SGD", "maskdp": "MaskDP"}
RECORDS_SHOWN = 8
LEAK_SAMPLE = 16  # inputs of an anonymized dataset the leak check looks at


def _load(workdir: Path) -> tuple[dict, list[dict]]:
    """(run.json, metrics records) of a training workdir, or a clear error."""
    if not (workdir / "run.json").is_file():
        raise FileNotFoundError(
            f"{workdir} holds no run.json: not the workdir of a `jaxpriv train` run (a run "
            "started before reports existed writes it when its `jaxpriv train` command is run "
            "again)"
        )
    run = json.loads((workdir / "run.json").read_text())
    metrics = workdir / "metrics.jsonl"
    return run, read_jsonl(str(metrics)) if metrics.is_file() else []


def _number(value) -> str:
    return "∞" if value is None else f"{value:.4g}"


POLICIES = {
    "real": "every pixel that is not removed or synthetic",
    "all": "every pixel (MaskDP is then DP-SGD on the pixels)",
    "none": "**no pixel: MaskDP protects nothing**",
}


def sensitivity_policy(run: dict, anonymization: dict | None) -> tuple[str, str] | None:
    """(policy, the setting it comes from) of the training data's ``sensitive`` masks, when
    known: the anonymization run's ``--sensitivity`` or the synthetic data's."""
    if anonymization:
        return anonymization["options"]["sensitivity"], "jaxpriv anonymize --sensitivity"
    if run["config"]["data"]["name"] == "synthetic":
        return run["config"]["data"]["sensitivity"], "data.sensitivity"
    return None


def _settings_table(run: dict, last: dict, policy: tuple[str, str] | None) -> list[str]:
    """The guarantee's parameters, each with the config key it comes from."""
    dp, train, plan = run["config"]["dp"], run["config"]["train"], run["plan"]
    unit = "the sensitive pixels of one record" if dp["mode"] == "maskdp" else "one record"
    adjacency = {
        "add_remove": "add or remove"
        if dp["mode"] == "dpsgd"
        else "remove the sensitive content of",
        "replace_one": "replace" if dp["mode"] == "dpsgd" else "replace the sensitive content of",
    }[dp["neighboring"]]
    sigma_source = "set" if dp["noise_multiplier"] > 0 else f"calibrated to ε = {dp['epsilon']:g}"
    rows = [
        ("mode", f"{MODE_NAMES[dp['mode']]} (`dp.mode = {dp['mode']}`)"),
        ("privacy unit", f"{unit} (an image or a video clip) of {plan['dataset_size']} records"),
        ("adjacency", f"{adjacency} one record (`dp.neighboring = {dp['neighboring']}`)"),
        (
            "ε spent",
            f"{_number(last.get('epsilon'))} of the budget `dp.epsilon = {dp['epsilon']:g}`",
        ),
        ("δ", f"`dp.delta = {dp['delta']:g}`"),
        ("σ (noise multiplier)", f"{plan['noise_multiplier']:.6g} ({sigma_source})"),
        ("C (clipping norm)", f"`dp.clip_norm = {dp['clip_norm']:g}`"),
        (
            "q (sampling rate)",
            f"{plan['sampling_rate']:.6g} = {plan['batch_size']} / {plan['dataset_size']}, "
            f"`dp.sampling = {dp['sampling']}`",
        ),
        ("steps", f"{last.get('step', 0)} of {plan['steps']} planned ({train['epochs']:g} epochs)"),
        ("accountant", f"`dp.accountant = {dp['accountant']}` (dp-accounting)"),
    ]
    if dp["mode"] == "maskdp":
        sensitive = "as the dataset's `sensitive` masks say (policy not recorded)"
        if policy:
            sensitive = f"{POLICIES[policy[0]]} (`{policy[1]} = {policy[0]}`)"
        rows.insert(1, ("sensitive pixels", sensitive))
    lines = ["| setting | value |", "|---|---|"]
    return lines + [f"| {name} | {value} |" for name, value in rows]


def _protected(run: dict, last: dict, policy: tuple[str, str] | None) -> list[str]:
    dp = run["config"]["dp"]
    lines = ["## What is protected", ""]
    if dp["mode"] == "none":
        return lines + [
            "**Nothing, formally.** This run trained without differential privacy: the model "
            "may memorize any training example. Anonymization alone gives no formal guarantee.",
            "",
        ]
    what = {
        "dpsgd": "Each whole record — its pixels, label and mask — is protected",
        "maskdp": "The sensitive pixels of each record are protected",
    }[dp["mode"]]
    eps = _number(last.get("epsilon"))
    lines += [f"{what}: the released parameters are ({eps}, {dp['delta']:g})-DP.", ""]
    return lines + _settings_table(run, last, policy) + [""]


def _not_protected(run: dict, anonymization: dict | None) -> list[str]:
    config = run["config"]
    dp = config["dp"]
    items = [
        "The test data: evaluations run on it without noise, and the accuracy is released.",
        "A person who appears in several records (several photos, several clips of one video) "
        "is protected only by group privacy: k records cost up to k·ε.",
        "The secret seed in `checkpoints/`: anyone who has it can replay the noise. Keep the "
        "workdir private; release with `jaxpriv export`.",
    ]
    if dp["mode"] == "maskdp":
        items[:0] = [
            "Labels, the sensitivity masks (where the sensitive region is) and the public "
            "pixels (removed or synthetic content): the model trains on them without noise.",
        ]
        if anonymization:
            source = anonymization["options"]["region"]
            items.insert(
                1,
                f"The anonymized {source} regions were found by annotations or by a detector on "
                "the real pixels: the guarantee holds given that output. A person the detector "
                "missed keeps real, sensitive pixels (protected), but where regions were found "
                "is not protected.",
            )
    if config["train"]["log_private_loss"]:
        items.append("The private-batch loss in metrics.jsonl (`train.log_private_loss`).")
    if dp["mode"] == "none":
        items = ["Everything in the training data."]
    return ["## What is not protected", ""] + [f"- {item}" for item in items] + [""]


def _curve(run: dict, records: list[dict], pictures: Path) -> list[str]:
    lines = ["## Privacy spent over training", ""]
    if not records:
        return lines + ["No epoch finished yet: nothing to plot.", ""]
    dp = run["config"]["dp"]
    target = None if dp["mode"] == "none" else dp["epsilon"]
    figures.privacy_curve(records, target, pictures / "epsilon.png")
    rows = ["| epoch | step | ε | test accuracy | step time (s) |", "|---|---|---|---|---|"]
    for r in records:
        step_time = "–" if r.get("step_time") is None else f"{r['step_time']:.3f}"
        rows.append(
            f"| {r['epoch']:.2f} | {r['step']} | {_number(r['epsilon'])} | "
            f"{r['test_accuracy']:.3f} | {step_time} |"
        )
    return lines + ["![ε and test accuracy per epoch](report/epsilon.png)", ""] + rows + [""]


def _records(run: dict, pictures: Path) -> list[str]:
    """A sample of training records with their sensitivity, and the sensitive share."""
    from jaxpriv.data import pipeline, schema

    lines = ["## What the model trained on", ""]
    if not os.path.isfile(os.path.join(run["dataset"], "dataset_info.json")):
        return lines + [f"The dataset `{run['dataset']}` is not there any more.", ""]
    source = pipeline.load_source(run["dataset"], "train")
    names = source.dataset_info.features[schema.LABEL].names
    picked = np.random.default_rng(0).choice(len(source), min(RECORDS_SHOWN, len(source)), False)
    records = [source[int(i)] for i in sorted(picked)]
    figures.records_grid(records, names, pictures / "records.png")
    share = np.mean([r[schema.SENSITIVE].mean() for r in records])
    return lines + [
        f"Dataset `{run['dataset']}`: {len(source)} training records, {len(names)} classes. "
        f"In these {len(records)} records, {share:.0%} of the pixels are sensitive.",
        "",
        "![sample of training records and their sensitivity](report/records.png)",
        "",
    ]


def find_anonymization(dataset: str) -> Path | None:
    """The ``jaxpriv anonymize`` output folder whose TFDS dataset is ``dataset`` (it lies in
    that folder's ``tfds/``, beside its summary.json, wherever the folder was moved), if any."""
    folder = Path(dataset).resolve()
    for parent in list(folder.parents)[:4]:
        if (parent / "summary.json").is_file() and folder.is_relative_to(parent / "tfds"):
            return parent
    return None


def _anonymization(out_dir: Path, summary: dict, reports: list[dict], pictures: Path) -> list[str]:
    options = summary["options"]
    found = sum(r.get("regions", 0) for r in reports)
    what = "persons" if options["region"] == "body" else "faces"
    counts = collections.Counter(
        "nothing found" if r.get("nothing_found") else r["status"] for r in reports
    )
    lines = [
        "## How the dataset was anonymized",
        "",
        f"`jaxpriv anonymize` into `{out_dir}`: method `{options['method']}`, region "
        f"`{options['region']}`, detector `{options['detector']}`.",
        "",
        f"| inputs | anonymized | nothing found | skipped (errors) | {what} found |",
        "|---|---|---|---|---|",
        f"| {len(reports)} | {counts['anonymized']} | {counts['nothing found']} | "
        f"{counts['skipped']} | {found} |",
        "",
    ]
    for title, keys in (
        ("Nothing found (kept unchanged or skipped, `--if-none`)", summary["nothing_found"]),
        (
            "Skipped (errors)",
            [f"{r['key']}: {r['error']}" for r in reports if counts_as_error(r)],
        ),
    ):
        if keys:
            lines += [f"{title}:", ""] + [f"- `{key}`" for key in keys[:20]]
            lines += [f"- … and {len(keys) - 20} more (inputs.jsonl)"] if len(keys) > 20 else []
            lines.append("")
    preview = out_dir / "preview.png"
    if preview.is_file():
        shutil.copyfile(preview, pictures / "anonymization_preview.png")
        lines += ["![anonymization preview](report/anonymization_preview.png)", ""]
    return lines


def _not_anonymized(run: dict) -> list[str]:
    data = run["config"]["data"]
    if data["name"] == "synthetic":
        text = (
            "The embedded synthetic clips (`data.name = synthetic`): generated, no real person. "
            "Each figure stands for an avatar that replaced a person: with `data.sensitivity = "
            "real` its pixels are public and the background's real (see the sensitive pixels "
            "above). No leak check: there are no originals."
        )
    else:
        text = (
            "Not made by `jaxpriv anonymize` (no summary.json beside the dataset): no "
            "anonymization record and no leak check."
        )
    return ["## How the dataset was anonymized", "", text, ""]


def counts_as_error(report: dict) -> bool:
    """A skipped input that was not skipped for having no one found in it."""
    return report["status"] == "skipped" and not report.get("nothing_found")


def _leak_check(out_dir: Path, summary: dict, reports: list[dict]) -> list[str]:
    lines = ["## Leak check", ""]
    if not summary.get("input_root"):
        return lines + ["Not run: the anonymization run has no input folder to compare with.", ""]
    try:
        result = leaks.check(out_dir, summary, reports, LEAK_SAMPLE)
    except (ValueError, OSError) as error:  # e.g. a detector's weights or an original gone
        return lines + [f"Not run: {type(error).__name__}: {error}", ""]
    found = result["detections"]
    leaked = [d for d in found if d.leak]
    verdict = (
        f"**{len(leaked)} possible leak(s)**: faces in the output that still look like the "
        "original."
        if leaked
        else "No leak found."
    )
    lines += [
        f"The `{result['detector']}` face detector ran on {len(result['checked'])} written "
        f"outputs (a seeded sample) and found {len(found)} face(s). A face whose grey pixels "
        f"correlate with the original's by ≥ {leaks.LEAK_CORRELATION} is listed as a leak. "
        + verdict,
        "",
    ]
    if result["unmatched"]:
        lines += [f"Not compared (original gone or resized): {', '.join(result['unmatched'])}", ""]
    if found:
        lines += [
            "| input | frame | box (x0, y0, x1, y1) | correlation | leak |",
            "|---|---|---|---|---|",
        ]
        for d in sorted(found, key=lambda d: -d.correlation):
            frame = "–" if d.frame is None else d.frame
            mark = "**LEAK**" if d.leak else "no"
            lines.append(f"| `{d.key}` | {frame} | {d.box} | {d.correlation:.3f} | {mark} |")
        lines.append("")
    return lines


def _audit(workdir: Path) -> list[str]:
    from jaxpriv.audit import run as audit

    lines = ["## Empirical audit", ""]
    path = workdir / "audit.json"
    if not path.is_file():
        return lines + [
            f"No audit in this workdir: `jaxpriv audit --workdir {workdir}` adds one.",
            "",
        ]
    results = json.loads(path.read_text())
    when = datetime.datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
    failed = [r for r in results if not audit.passed(r)]
    verdict = (
        f"**{len(failed)} of {len(results)} audits failed.**" if failed else "Every audit passed."
    )
    return lines + [
        f"`jaxpriv audit` of {when}: {verdict} It tests jaxpriv's mechanisms (this code, its own "
        "small ViT and canaries at the ε in its table), not this run's model: a correct "
        "mechanism gives ε̂ ≤ ε, and each self-test (noise off, canaries in public pixels, the "
        "coupled MaskDP design) must find its leak.",
        "",
        audit.format_table(results),
        "",
    ]


def _header(workdir: Path, run: dict, last: dict) -> list[str]:
    config = run["config"]
    mode = MODE_NAMES[config["dp"]["mode"]]
    accuracy = "–" if "test_accuracy" not in last else f"{last['test_accuracy']:.3f}"
    return [
        f"# Privacy report: {config['name']}",
        "",
        f"{mode} run in `{workdir}`, {last.get('step', 0)} of {run['plan']['steps']} steps, "
        f"test accuracy {accuracy}, ε = {_number(last.get('epsilon'))}. Written "
        f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} by `jaxpriv report`.",
        "",
        "> Its pictures show training records (real, sensitive pixels) and, for an anonymized "
        "dataset, original photos in the preview: share this report only with those who may "
        "see the training data.",
        "",
    ]


def write(workdir: str | os.PathLike) -> Path:
    """Writes ``workdir/report.md`` and ``workdir/report/*.png``; returns the report's path."""
    workdir = Path(workdir)
    run, records = _load(workdir)
    last = records[-1] if records else {}
    pictures = workdir / "report"
    pictures.mkdir(exist_ok=True)
    out_dir = find_anonymization(run["dataset"])
    summary = reports = None
    if out_dir is not None:
        summary = json.loads((out_dir / "summary.json").read_text())
        reports = read_jsonl(str(out_dir / "inputs.jsonl"))
    lines = _header(workdir, run, last)
    lines += _protected(run, last, sensitivity_policy(run, summary))
    lines += _not_protected(run, summary)
    lines += _curve(run, records, pictures) + _records(run, pictures)
    if out_dir is None:
        lines += _not_anonymized(run)
    else:
        lines += _anonymization(out_dir, summary, reports, pictures)
        lines += _leak_check(out_dir, summary, reports)
    lines += _audit(workdir)
    path = workdir / "report.md"
    with files.atomic_path(path) as temporary:
        temporary.write_text("\n".join(lines))
    return path


def write_at_end(config, workdir: str | os.PathLike) -> Path | None:
    """The report of a finished run when ``config.log.report`` asks for it (process 0 only).

    The run succeeded whatever happens here: a report that cannot be written is a warning
    (``jaxpriv report`` retries it), never a failed run.
    """
    import jax

    if not config.log.report or jax.process_index() > 0:
        return None
    try:
        return write(workdir)
    except Exception as error:  # noqa: BLE001 - the run itself is done and saved
        print(
            f"warning: the privacy report of {workdir} could not be written "
            f"({type(error).__name__}: {error}); the run is complete, `jaxpriv report "
            f"{workdir}` retries it",
            file=sys.stderr,
        )
        return None
