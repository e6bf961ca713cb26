"""Study 1 on BDD100K: anonymization method × region → non-private training → accuracy
on the original test split.

Not run in CI (needs the dataset). Expected layout under ROOT (`--config.anonymize.root=ROOT`):

    ROOT/                                the extracted bdd100k/ folder
      images/
        10k/
          train/
            <name>.jpg                   from bdd100k_images_10k.zip
      labels/
        ins_seg/
          coco/
            ins_seg_train_coco.json      the instance segmentation in COCO format, made with
                                         python -m bdd100k.label.to_coco -m ins_seg
                                           -i ROOT/labels/ins_seg/rles/ins_seg_train.json
                                           -o ROOT/labels/ins_seg/coco/ins_seg_train_coco.json

Task: a classification head on the number of persons in the image, "0", "1", "2" or "3+" (a
person-centric label that anonymization can hurt; the study's detection and keypoint heads are not
implemented). A GroupNorm ResNet trains on 128×128 crops; start it from pretrained weights with
`--config.base.model.init_from=PATH`. Bodies are the pedestrian and rider masks; faces come from
the face detector (no keypoints).

jaxpriv experiment configs/experiments/bdd100k.py --dry-run --config.anonymize.root=ROOT
jaxpriv experiment configs/experiments/bdd100k.py --config.anonymize.root=ROOT
"""

from jaxpriv.config import default_config
from jaxpriv.experiments import studies


def get_config():
    base = default_config()
    base.model.name = "resnet"
    base.model.kwargs = dict(stage_features=(32, 64, 128, 256))
    base.train.epochs, base.train.batch_size, base.train.microbatch_size = 20.0, 256, 0
    stage = dict(layout="bdd100k", root="~/data/bdd100k", size=128, test_fraction=0.1, workers=8)
    return studies.anonymization_study("bdd100k", base, stage)
