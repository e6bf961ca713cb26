"""Study 2, utility vs privacy, on the embedded synthetic videos: about 30 min on 2 CPU cores.

Non-private, DP-SGD and MaskDP at ε ∈ {0.5, 1, 2, 4, 8} with δ = 1e-5 < 1/N, two seeds. σ is
calibrated per ε for the schedule (N, q = B/N, steps), which is the same for both DP modes, so
MaskDP and DP-SGD are compared at exactly the same ε, δ, q and steps.

The embedded clips stand for avatar-anonymized video: the person is a synthetic figure (public,
``data.sensitivity="real"``) and the scene is real (sensitive). DP-SGD protects every
pixel and ignores the mask, so its rows are also those of training on the real video; MaskDP
spends the noise only on the real pixels and learns the figure's action noise-free. On real
video, the same grid runs on real vs anonymized copies (configs/experiments/ucf101.py, ntu60.py,
toyota_smarthome.py).

jaxpriv experiment configs/experiments/study2_privacy.py --dry-run
jaxpriv experiment configs/experiments/study2_privacy.py
"""

from jaxpriv.config import default_config
from jaxpriv.experiments import studies


def get_config():
    base = default_config()
    base.data.frames, base.data.num_train, base.data.num_test = 2, 4096, 1024
    base.model.kwargs.update(width=48, mlp_dim=96)
    base.train.epochs, base.train.batch_size = 8.0, 64
    base.dp.delta = 1e-5
    return studies.privacy_study("study2_privacy", base)
