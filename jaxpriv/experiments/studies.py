"""The two studies jaxpriv reproduces, as experiment builders for the files in configs/experiments.

- ``anonymization_study``: anonymization method × region (face, full body) → non-private
  training → test accuracy on the original test split, relative to training on the original.
- ``privacy_study``: non-private, DP-SGD and MaskDP at ε ∈ ``EPSILONS``, σ calibrated per ε for
  one schedule (N, q, steps) shared by both DP modes, so they are compared at the same ε, δ, q
  and steps; optionally on real (method "none") vs anonymized copies of a video dataset.
"""

import ml_collections

from jaxpriv.experiments import sweep

METHODS = ["none", "blur", "pixelate", "maskout", "inpaint"]  # "none": the original data
REGIONS = ["face", "body"]
EPSILONS = [0.5, 1.0, 2.0, 4.0, 8.0]
SEEDS = [0, 1]


def anonymization_study(
    name: str, base: ml_collections.ConfigDict, stage: dict, regions=REGIONS
) -> ml_collections.ConfigDict:
    """Method × region × seed on the anonymization stage ``stage`` (``anonymize.*`` values)."""
    experiment = sweep.experiment_config()
    experiment.name = name
    experiment.base = base
    experiment.anonymize.update(stage)
    experiment.grid = sweep.grid(
        {"anonymize.method": METHODS, "anonymize.region": regions, "seed": SEEDS}
    )
    experiment.report.compare_key, experiment.report.reference = "anonymize.method", "none"
    return experiment


def privacy_study(
    name: str, base: ml_collections.ConfigDict, stage: dict | None = None, methods=("none",)
) -> ml_collections.ConfigDict:
    """DP mode × ε × seed, on ``base.data`` or, with ``stage``, on its copies by ``methods``."""
    experiment = sweep.experiment_config()
    experiment.name = name
    experiment.base = base
    axes = {"dp.mode": ["none", "dpsgd", "maskdp"], "dp.epsilon": EPSILONS, "seed": SEEDS}
    if stage:
        experiment.anonymize.update(stage)
        axes = {"anonymize.method": list(methods), **axes}
    experiment.grid = sweep.grid(axes)
    experiment.report.compare_key, experiment.report.reference = "dp.mode", "dpsgd"
    return experiment
