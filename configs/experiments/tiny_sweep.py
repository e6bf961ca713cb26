"""A tiny utility-vs-privacy sweep on the embedded synthetic videos: a few minutes on 2 CPU cores.

Non-private, DP-SGD and MaskDP at ε ∈ {2, 8}, two seeds each (the non-private cells run once
per seed, not once per ε). The report compares MaskDP with DP-SGD at the same ε, δ, q and steps.

jaxpriv experiment configs/experiments/tiny_sweep.py --dry-run
jaxpriv experiment configs/experiments/tiny_sweep.py --workdir runs/tiny_sweep
"""

from jaxpriv.config import default_config
from jaxpriv.experiments import sweep


def get_config():
    config = sweep.experiment_config()
    config.name = "tiny_sweep"
    base = default_config()
    base.data.num_train, base.data.num_test = 512, 256
    base.model.kwargs.update(width=32, depth=1, heads=2, mlp_dim=64)
    base.train.epochs, base.train.batch_size = 3.0, 64
    base.dp.delta = 1e-3  # < 1/N
    config.base = base
    config.grid = sweep.grid(
        {"dp.mode": ["none", "dpsgd", "maskdp"], "dp.epsilon": [2.0, 8.0], "seed": [0, 1]}
    )
    config.report.compare_key = "dp.mode"
    config.report.reference = "dpsgd"
    return config
