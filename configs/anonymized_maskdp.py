"""MaskDP on a dataset written by `jaxpriv anonymize` (images, the `real` sensitivity policy).

jaxpriv train --config configs/anonymized_maskdp.py --config.data.name=OUT/tfds/anonymized/image/1.0.0

Only pixels whose content depends on no real pixel (mask-out, avatar bodies) are public; every pixel still
derived from the real image (blurred, pixelated, inpainted) is protected. Labels and the region
masks are public and not protected.
"""

from jaxpriv.config import default_config


def get_config():
    config = default_config()
    config.name = "anonymized_maskdp"
    config.data.name = "set --config.data.name to the TFDS folder printed by jaxpriv anonymize"
    config.model.name = "vit"
    config.model.kwargs = {
        "width": 64,
        "depth": 2,
        "heads": 4,
        "mlp_dim": 128,
        "split_streams": True,
        "patch": (4, 4),
    }
    config.train.batch_size = 64
    config.train.microbatch_size = 16
    config.dp.mode = "maskdp"
    config.dp.epsilon = 8.0
    config.dp.delta = 1e-5
    return config
