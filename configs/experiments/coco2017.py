"""Study 1 on COCO 2017: anonymization method × region → non-private training → accuracy
on the original test split.

Not run in CI (needs the dataset). Layout under ROOT: `annotations/person_keypoints_train2017.json`
and `train2017/*.jpg` (the full tree: `jaxpriv/anonymize/layouts.py`, or the error of --dry-run
on a wrong folder). Faces come from the face keypoints, bodies from the instance masks. What trains
on what: `studies.real_image_study`. Start from local pretrained weights with
`--config.base.model.init_from=PATH`.

jaxpriv experiment configs/experiments/coco2017.py --dry-run --config.anonymize.root=ROOT
jaxpriv experiment configs/experiments/coco2017.py --config.anonymize.root=ROOT
"""

from jaxpriv.experiments import studies


def get_config():
    return studies.real_image_study("coco2017", "~/data/coco")
