"""Study 2 on NTU RGB+D 60: real vs anonymized video, non-private / DP-SGD / MaskDP × ε.

Not run in CI (needs the dataset). Expected layout under ROOT (`--config.anonymize.root=ROOT`):

    ROOT/
      nturgb+d_rgb/                      the RGB videos of NTU RGB+D 60, all in this one folder
        SsssCcccPpppRrrrAaaa_rgb.avi     setup S001-S017, camera, performer, replication,
                                         action A001-A060, e.g. S001C002P003R002A013_rgb.avi

Faces are found by the face detector (videos carry no annotations) and masked out; mask-out content
depends on no real pixel, so it is public under MaskDP ("none": the real video, all sensitive). The
label is the action. A video ViT (ViT-Ti width, 8×8 tubelets) trains on one 8-frame clip (16
frames, stride 2) per video; start it from pretrained weights with
`--config.base.model.init_from=PATH` (an .npz in jaxpriv's parameter names or a `jaxpriv train`
checkpoint; see jaxpriv/models/pretrained.py).

jaxpriv experiment configs/experiments/ntu60.py --dry-run --config.anonymize.root=ROOT
jaxpriv experiment configs/experiments/ntu60.py --config.anonymize.root=ROOT
"""

from jaxpriv.config import default_config
from jaxpriv.experiments import studies


def get_config():
    base = default_config()
    base.model.kwargs.update(
        patch=(2, 8, 8), width=192, depth=6, heads=3, mlp_dim=768, max_kept_tokens=64
    )
    base.train.epochs, base.train.batch_size, base.train.microbatch_size = 10.0, 256, 0
    base.dp.delta = 1e-5  # < 1/N
    stage = dict(layout="ntu60", root="~/data/ntu60", region="face", test_fraction=0.1, workers=8)
    stage.update(size=64, clip_frames=8, frame_stride=2, max_clips=1)
    return studies.privacy_study("ntu60", base, stage, methods=("none", "maskout"))
