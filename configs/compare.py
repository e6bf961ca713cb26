"""`jaxpriv compare` settings (the same as running it without --config).

    jaxpriv compare --config configs/compare.py [--config.seeds=0,1] [--config.run.dp.epsilon=4]

``run`` is an ordinary `jaxpriv train` config (a small DP-SGD video ViT); ``seeds``,
``repeats`` and ``gradient_models`` set the training, speed and gradient comparisons. See
``jaxpriv.compare.harness.default_config``.
"""

from jaxpriv.compare.harness import default_config


def get_config():
    return default_config()
