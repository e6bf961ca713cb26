"""What one audit run does (``AuditSpec``); light to import, for the command line."""

import dataclasses
import math

PLACEMENTS_OF_MODE = {
    "dpsgd": ("example",),
    "maskdp": ("sensitive", "public"),
    "maskdp-coupled": ("sensitive",),
}
# Where the claim does not cover the canaries, the audit must show ε̂ above this to pass.
LEAK_FOUND = 1.0
PATCH = 4  # the ViT's patch size


@dataclasses.dataclass(frozen=True)
class AuditSpec:
    """One audit run.

    ``mode``: "dpsgd" audits whole-example canaries ("example"); "maskdp" audits canaries in
    sensitive pixels ("sensitive") or, as a self-test, in public pixels ("public");
    "maskdp-coupled" (self-test) audits sensitive canaries under the flawed coupled design.
    ``epsilon``: σ is calibrated to it (PLD accountant, Poisson sampling, add/remove) for
    ``steps`` steps at ``sampling_rate``; ``math.inf`` turns the noise off (σ = 0).
    ``public_clip_norm``: MaskDP's C_pub, None = ∞ (jaxpriv's default).
    Defaults (measured on 2 CPU cores: 70–95 s per audit): a small sampling rate and many steps,
    where subsampling amplifies most — and where losing it (the coupled design) shows. The tiny
    ViT's per-example gradients have norm ≈ 50, so C = 0.1 clips every contribution and MaskDP's
    unclipped public gradients dwarf the noise σC; the small learning rate keeps them large (the
    model learns slowly), which lets the coupled design's public part show who was sampled.
    """

    mode: str = "dpsgd"
    placement: str = "example"
    epsilon: float = 2.0
    delta: float = 1e-5
    canaries: int = 200
    steps: int = 500
    sampling_rate: float = 0.02
    clip_norm: float = 0.1
    public_clip_norm: float | None = None
    learning_rate: float = 0.01
    image_size: int = 16
    num_classes: int = 4
    width: int = 16
    confidence: float = 0.95
    microbatch_size: int = 8
    seed: int = 0

    def __post_init__(self):
        if self.mode not in PLACEMENTS_OF_MODE:
            raise ValueError(f"mode must be one of {tuple(PLACEMENTS_OF_MODE)}, got {self.mode!r}")
        if self.placement not in PLACEMENTS_OF_MODE[self.mode]:
            raise ValueError(
                f"mode {self.mode!r} audits placements {PLACEMENTS_OF_MODE[self.mode]}, "
                f"got {self.placement!r}"
            )
        if self.image_size % (2 * PATCH):
            raise ValueError(
                f"image_size must be a multiple of {2 * PATCH} (the canary region, half the "
                f"image, is made of whole {PATCH}×{PATCH} patches), got {self.image_size}"
            )
        if not self.epsilon > 0:
            raise ValueError(f"epsilon must be > 0 (math.inf: noise off), got {self.epsilon}")

    @property
    def coupled(self) -> bool:
        return self.mode == "maskdp-coupled"

    @property
    def leak_expected(self) -> bool:
        """Whether the claim does not cover the canaries (the self-tests)."""
        return math.isinf(self.epsilon) or self.placement == "public" or self.coupled
