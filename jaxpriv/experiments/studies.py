"""The two studies jaxpriv reproduces, as experiment builders for the files in configs/experiments.

- ``anonymization_study``: anonymization method × region (face, full body) → non-private
  training → test accuracy on the original test split, relative to training on the original.
- ``privacy_study``: non-private, DP-SGD and MaskDP at ε ∈ ``EPSILONS``, σ calibrated per ε for
  one schedule (N, q, steps) shared by both DP modes, so they are compared at the same ε, δ, q
  and steps; optionally on real (method "none") vs anonymized copies of a video dataset.
"""

import ml_collections

from jaxpriv import config as config_lib
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


def real_video_study(layout: str, root: str) -> ml_collections.ConfigDict:
    """Study 2 on a real video layout: real (method "none") vs face-masked-out video vs avatars.

    Faces come from the face detector and bodies from the offline person model (videos carry no
    annotations); mask-out content and the fully covered avatar pixels depend on no real pixel,
    so they are public under MaskDP. A video ViT (ViT-Ti width, 2×8×8 tubelets)
    trains on one 8-frame clip (16 frames, stride 2) per video, so N is exact before decoding.
    """
    base = config_lib.default_config()
    base.model.kwargs.update(
        patch=(2, 8, 8), width=192, depth=6, heads=3, mlp_dim=768, max_kept_tokens=64
    )
    base.train.epochs, base.train.batch_size, base.train.microbatch_size = 10.0, 256, 0
    base.dp.delta = 1e-5  # < 1/N for these datasets
    stage = dict(layout=layout, root=root, region="face", test_fraction=0.1, workers=8)
    stage.update(size=64, clip_frames=8, frame_stride=2, max_clips=1)
    return privacy_study(layout, base, stage, methods=("none", "maskout", "avatar"))


def real_image_study(layout: str, root: str) -> ml_collections.ConfigDict:
    """Study 1 on a real image layout: a GroupNorm ResNet on 128×128 crops classifies the number
    of persons in the image ("0", "1", "2", "3+"; the study's detection and keypoint heads are not
    implemented), trained on each anonymized copy, tested on the original."""
    base = config_lib.default_config()
    base.model.name = "resnet"
    base.model.kwargs = dict(stage_features=(32, 64, 128, 256))
    base.train.epochs, base.train.batch_size, base.train.microbatch_size = 20.0, 256, 0
    stage = dict(layout=layout, root=root, size=128, test_fraction=0.1, workers=8)
    return anonymization_study(layout, base, stage)
