"""Study 1 on Cityscapes: anonymization method × region → non-private training → accuracy
on the original test split.

Not run in CI (needs the dataset). Layout under ROOT: `leftImg8bit/train/<city>/*_leftImg8bit.png`
and `gtFine/train/<city>/*_gtFine_instanceIds.png` (the full tree:
`jaxpriv/anonymize/layouts.py`, or the error of --dry-run on a wrong folder). Bodies: person and
rider instances; faces: the face detector. What trains on what: `studies.real_image_study`. Start
from local pretrained weights with `--config.base.model.init_from=PATH`.

jaxpriv experiment configs/experiments/cityscapes.py --dry-run --config.anonymize.root=ROOT
jaxpriv experiment configs/experiments/cityscapes.py --config.anonymize.root=ROOT
"""

from jaxpriv.experiments import studies


def get_config():
    return studies.real_image_study("cityscapes", "~/data/cityscapes")
