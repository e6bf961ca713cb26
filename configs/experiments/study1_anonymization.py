"""Study 1, anonymization vs utility, on the embedded synthetic videos: about N min on 2 CPU cores.

Each method ∈ {none (the original), blur, pixelate, mask-out, inpaint} anonymizes the figure's
face (its head, from the nose keypoint) or its full body (its mask) in the training clips; a
video ViT trains on them without DP and is tested on the ORIGINAL test clips, as in the study.
The label is the action (the figure's pose and motion) and the scene (the background), so
hiding the body should cost more than hiding the face. Two seeds each; the report shows each
method's accuracy minus the original's.

jaxpriv experiment configs/experiments/study1_anonymization.py --dry-run
jaxpriv experiment configs/experiments/study1_anonymization.py
"""

from jaxpriv.config import default_config
from jaxpriv.experiments import sweep


def get_config():
    config = sweep.experiment_config()
    config.name = "study1_anonymization"
    stage = config.anonymize
    stage.layout = "synthetic"
    stage.num_clips, stage.frames = 4000, 2
    stage.size, stage.clip_frames, stage.frame_stride = 32, 2, 1
    stage.test_fraction = 0.2
    base = default_config()
    base.model.kwargs.update(width=48, depth=2, heads=4, mlp_dim=96)
    base.train.epochs, base.train.batch_size = 6.0, 64
    config.base = base
    config.grid = sweep.grid(
        {
            "anonymize.method": ["none", "blur", "pixelate", "maskout", "inpaint"],
            "anonymize.region": ["face", "body"],
            "seed": [0, 1],
        }
    )
    config.report.compare_key = "anonymize.method"
    config.report.reference = "none"
    return config
