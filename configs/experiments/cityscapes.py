"""Study 1 on Cityscapes: anonymization method × region → non-private training → accuracy
on the original test split.

Not run in CI (needs the dataset). Expected layout under ROOT (`--config.anonymize.root=ROOT`):

    ROOT/
      leftImg8bit/
        train/
          <city>/                        e.g. aachen/ (leftImg8bit_trainvaltest.zip)
            <city>_XXXXXX_YYYYYY_leftImg8bit.png
      gtFine/
        train/
          <city>/                        (gtFine_trainvaltest.zip)
            <city>_XXXXXX_YYYYYY_gtFine_instanceIds.png

Task: a classification head on the number of persons in the image, "0", "1", "2" or "3+" (a
person-centric label that anonymization can hurt; the study's detection and keypoint heads are not
implemented). A GroupNorm ResNet trains on 128×128 crops; start it from pretrained weights with
`--config.base.model.init_from=PATH`. Bodies are the person and rider instances; faces come from
the face detector (no keypoints).

jaxpriv experiment configs/experiments/cityscapes.py --dry-run --config.anonymize.root=ROOT
jaxpriv experiment configs/experiments/cityscapes.py --config.anonymize.root=ROOT
"""

from jaxpriv.config import default_config
from jaxpriv.experiments import studies


def get_config():
    base = default_config()
    base.model.name = "resnet"
    base.model.kwargs = dict(stage_features=(32, 64, 128, 256))
    base.train.epochs, base.train.batch_size, base.train.microbatch_size = 20.0, 256, 0
    stage = dict(
        layout="cityscapes", root="~/data/cityscapes", size=128, test_fraction=0.1, workers=8
    )
    return studies.anonymization_study("cityscapes", base, stage)
