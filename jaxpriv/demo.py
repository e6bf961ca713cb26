"""The demo: non-private, DP-SGD and MaskDP on the embedded synthetic videos at the same ε."""

import os

import ml_collections

from jaxpriv import config as config_lib
from jaxpriv.dp.mechanism import MODES
from jaxpriv.report import card
from jaxpriv.train import loop

# Long enough for MaskDP to pull clearly ahead of DP-SGD, short enough for the three runs to
# take under 4 minutes on 2 CPU cores (the README's demo table).
EPOCHS = 7.0


def demo_configs(epsilon: float, overrides=()) -> list[ml_collections.ConfigDict]:
    """The three runs of the embedded default for ``EPOCHS`` epochs; the DP ones share ε, δ, q
    and the number of steps."""
    configs = []
    for mode in MODES:
        config = config_lib.default_config()
        config.name = f"demo_{mode}"
        config.dp.mode = mode
        config.dp.epsilon = epsilon
        config.train.epochs = EPOCHS
        for override in overrides:
            config_lib.apply_override(config, override)
        configs.append(config)
    return configs


def run(*, epsilon: float, workdir: str, overrides=(), progress: bool = True) -> list[dict]:
    """Trains the three runs in ``workdir/<name>``, each with its privacy report."""
    results = []
    for config in demo_configs(epsilon, overrides):
        run_dir = os.path.join(workdir, config.name)
        results.append(loop.train(config, run_dir, progress=progress))
        card.write_at_end(config, run_dir)
    return results
