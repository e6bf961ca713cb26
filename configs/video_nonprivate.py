"""Non-private video ViT on the synthetic action clips (the accuracy ceiling).

jaxpriv train --config configs/video_nonprivate.py
"""

from jaxpriv.config import default_config


def get_config():
    config = default_config()
    config.name = "video_nonprivate"
    config.dp.mode = "none"
    return config
