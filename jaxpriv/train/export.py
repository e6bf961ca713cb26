"""``jaxpriv export``: what a finished run may release — its parameters and public summary.

A workdir's checkpoints hold the run's secret (the seed of the private sampler and of the
noise: anyone who has it can replay the noise), so they stay private. ``export`` writes only
``params.npz`` (the latest checkpoint's parameters, readable by ``model.init_from``) and
``summary.json`` (mode, ε, δ, σ, steps, test accuracy: what the accountant and the public test
split say), into a new folder that appears whole or not at all.
"""

import json
import os
import shutil

from jaxpriv.models import pretrained
from jaxpriv.train.metrics import read_jsonl

SUMMARY_KEYS = ("mode", "epsilon", "delta", "noise_multiplier", "step", "test_accuracy")


def export(workdir: str, out: str) -> dict:
    """Writes ``out/params.npz`` and ``out/summary.json`` for the run in ``workdir``; returns the
    summary. ``out`` must not exist yet."""
    workdir, out = os.path.expanduser(workdir), os.path.expanduser(out)
    if os.path.exists(out):
        raise FileExistsError(f"{out} exists; export writes a new folder")
    metrics = os.path.join(workdir, "metrics.jsonl")
    if not os.path.isfile(metrics):
        raise FileNotFoundError(f"{workdir} holds no metrics.jsonl: not a jaxpriv train workdir")
    last = read_jsonl(metrics)[-1]
    summary = {key: last[key] for key in SUMMARY_KEYS}
    params = pretrained.load_params(workdir)
    partial = f"{out}.incomplete"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    pretrained.save_params(os.path.join(partial, "params.npz"), params)
    with open(os.path.join(partial, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1, sort_keys=True)
    os.replace(partial, out)
    return summary
