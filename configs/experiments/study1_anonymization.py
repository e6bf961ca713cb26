"""Study 1, anonymization vs utility, on the embedded synthetic videos: about 20 min on 2 CPU cores.

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
from jaxpriv.experiments import studies


def get_config():
    base = default_config()
    base.model.kwargs.update(width=48, mlp_dim=96)
    base.train.epochs, base.train.batch_size = 10.0, 64
    stage = dict(layout="synthetic", num_clips=4000, frames=2, test_fraction=0.2)
    stage.update(size=32, clip_frames=2, frame_stride=1)  # the generated clips as they are
    return studies.anonymization_study("study1_anonymization", base, stage)
