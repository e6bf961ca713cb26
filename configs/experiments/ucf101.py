"""Study 2 on UCF-101: real vs face-masked-out vs avatar video; non-private, DP-SGD, MaskDP × ε.

Not run in CI (needs the dataset). Layout under ROOT: `<Class>/v_<Class>_gXX_cYY.avi` (the full
tree: `jaxpriv/anonymize/layouts.py`, or the error of --dry-run on a wrong folder). What trains
on what: `studies.real_video_study`. Start from local pretrained weights with
`--config.base.model.init_from=PATH`.

jaxpriv experiment configs/experiments/ucf101.py --dry-run --config.anonymize.root=ROOT
jaxpriv experiment configs/experiments/ucf101.py --config.anonymize.root=ROOT
"""

from jaxpriv.experiments import studies


def get_config():
    return studies.real_video_study("ucf101", "~/data/UCF-101")
