"""Study 1 on BDD100K: anonymization method × region → non-private training → accuracy
on the original test split.

Not run in CI (needs the dataset). Layout under ROOT: `images/10k/train/*.jpg` and
`labels/ins_seg/coco/ins_seg_train_coco.json` (the full tree: `jaxpriv/anonymize/layouts.py`, or
the error of --dry-run on a wrong folder). Bodies: pedestrian and rider masks; faces: the face
detector. What trains on what: `studies.real_image_study`. Start from local pretrained weights with
`--config.base.model.init_from=PATH`.

jaxpriv experiment configs/experiments/bdd100k.py --dry-run --config.anonymize.root=ROOT
jaxpriv experiment configs/experiments/bdd100k.py --config.anonymize.root=ROOT
"""

from jaxpriv.experiments import studies


def get_config():
    return studies.real_image_study("bdd100k", "~/data/bdd100k")
