"""MaskDP on avatar-anonymized synthetic clips: only the real (background) pixels are private.

The avatar pixels, the labels and the location of the sensitive region are public
and not protected. Same ε, δ, q and steps as configs/video_dpsgd.py.

jaxpriv train --config configs/video_maskdp.py --config.dp.epsilon=4
"""

from jaxpriv.config import default_config


def get_config():
    config = default_config()
    config.name = "video_maskdp"
    config.dp.mode = "maskdp"
    config.dp.epsilon = 4.0
    config.dp.delta = 1e-5
    return config
