"""DP-SGD on the synthetic action clips: every example (label included) is private.

jaxpriv train --config configs/video_dpsgd.py --config.dp.epsilon=4
"""

from jaxpriv.config import default_config


def get_config():
    config = default_config()
    config.name = "video_dpsgd"
    config.dp.mode = "dpsgd"
    config.dp.epsilon = 4.0
    config.dp.delta = 1e-5
    return config
