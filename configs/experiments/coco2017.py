"""Study 1 on COCO 2017: anonymization method × region → non-private training → accuracy
on the original test split.

Not run in CI (needs the dataset). Expected layout under ROOT (`--config.anonymize.root=ROOT`):

    ROOT/
      annotations/
        person_keypoints_train2017.json  from annotations_trainval2017.zip (faces: keypoints)
      train2017/
        <image id>.jpg                   from train2017.zip, e.g. 000000000009.jpg

Task: a classification head on the number of persons in the image, "0", "1", "2" or "3+" (a
person-centric label that anonymization can hurt; the study's detection and keypoint heads are not
implemented). A GroupNorm ResNet trains on 128×128 crops; start it from pretrained weights with
`--config.base.model.init_from=PATH`. Faces come from the annotated face keypoints, bodies from the
instance masks.

jaxpriv experiment configs/experiments/coco2017.py --dry-run --config.anonymize.root=ROOT
jaxpriv experiment configs/experiments/coco2017.py --config.anonymize.root=ROOT
"""

from jaxpriv.config import default_config
from jaxpriv.experiments import studies


def get_config():
    base = default_config()
    base.model.name = "resnet"
    base.model.kwargs = dict(stage_features=(32, 64, 128, 256))
    base.train.epochs, base.train.batch_size, base.train.microbatch_size = 20.0, 256, 0
    stage = dict(layout="coco2017", root="~/data/coco", size=128, test_fraction=0.1, workers=8)
    return studies.anonymization_study("coco2017", base, stage)
