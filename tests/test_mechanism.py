"""The guarantee of ``DpMechanism`` tested by trying to break it: the private batch cannot be read
off a released MaskDP update, fully public data makes the update independent of the private
batch, and the secret never leaves the run except in its (private) checkpoints."""

import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from dp_fixtures import C, flat, make_batch, setup
from scipy import stats

from jaxpriv.data.pipeline import public_view
from jaxpriv.dp import clipping, noise
from jaxpriv.dp.mechanism import DpMechanism
from jaxpriv.train import parallel
from jaxpriv.train.step import TrainState, make_train_step

N = 32  # examples; q = 1/2, so about half are sampled at each step
SIGMA = 1.0
MESH = parallel.data_mesh(jax.devices()[:1])
SGD_STATE = optax.sgd(1.0).init({})  # plain SGD keeps no state


def numpy_batch(n=N, seed=5):
    return jax.tree.map(np.array, make_batch(n=n, seed=seed))


def take(batch, indices, weights):
    return {k: v[indices] for k, v in batch.items()} | {"weight": weights}


@functools.cache
def train_step(mechanism):
    loss_fn, _ = setup("vit_split")
    return make_train_step(mechanism, loss_fn, optax.sgd(1.0), MESH, microbatch_size=8)


def released_update(mechanism, step_index, data, *, coupled=False):
    """(Δ = B·(θ_t − θ_{t+1}) of one SGD step at θ_0, the private indices and weights, the
    public ones). ``coupled``: the flawed design, S itself as the public batch."""
    _, params = setup("vit_split")
    step = train_step(mechanism)
    private = mechanism.private_indices(step_index)
    batches = {"private": take(data, *private)}
    public = None
    if mechanism.mode == "maskdp":
        public = private if coupled else mechanism.public_indices(step_index)
        batches["public"] = public_view(take(data, *public))
    key = jnp.asarray(mechanism.noise_key_data())
    state = TrainState(jnp.int32(step_index), jax.tree.map(jnp.copy, params), SGD_STATE, key)
    after, _ = step(state, jax.device_put(batches, parallel.batch_sharding(MESH)))
    return (flat(params) - flat(after.params)) * mechanism.batch_size, private, public


def contributions(data):
    """Each example's clip(g, C), clip(g − p, C) and (unclipped) p at θ_0: [N, d] each."""
    loss_fn, params = setup("vit_split")

    @jax.jit
    @jax.vmap
    def one(example):
        dpsgd, _ = clipping.private_contribution(
            loss_fn, params, example, clip_norm=C, maskdp=False
        )
        residual, _ = clipping.private_contribution(
            loss_fn, params, example, clip_norm=C, maskdp=True
        )
        _, public = clipping.example_grad(loss_fn, params, example, public=True)
        return flat(dpsgd), flat(residual), flat(public)

    return one(data)


def decoding_accuracy(mode, *, coupled=False, trials=8):
    """The least-squares membership decoder: from each released update (Δ, minus the known
    public-batch sum), â = argmin ‖Δ' − Σ_i a_i R_i‖ over the examples' contributions R_i, and
    Ŝ = {i : â_i > 1/2}. Returns the fraction of the N × trials membership guesses that are right.
    """
    data = numpy_batch()
    mechanism = DpMechanism(
        "dpsgd" if mode == "dpsgd" else "maskdp",
        clip_norm=C,
        noise_multiplier=SIGMA,
        dataset_size=N,
        batch_size=N // 2,
        capacity=N,
        public_capacity=N // 2,
        public_seed=3,
        secret=11,
    )
    dpsgd, residual, public = (np.asarray(x, np.float64) for x in contributions(data))
    rows = {"dpsgd": dpsgd, "maskdp": residual + public if coupled else residual}[mode]
    right = 0
    for t in range(trials):
        update, (indices, weights), public_batch = released_update(
            mechanism, t, data, coupled=coupled
        )
        update = np.asarray(update, np.float64)
        if mode == "maskdp" and not coupled:  # S' is public: its sum is known exactly
            public_indices, public_weights = public_batch
            update -= public_weights @ public[public_indices]
        guess = np.linalg.lstsq(rows.T, update, rcond=None)[0] > 0.5
        sampled = np.zeros(N, bool)
        sampled[indices[weights > 0]] = True
        right += np.sum(guess == sampled)
    return right / (N * trials)


def test_the_private_batch_cannot_be_decoded_from_a_maskdp_update():
    """Statistic: the fraction of right IN/OUT-of-S guesses of the least-squares decoder.

    Bound: telling whether one example of contribution c (‖c‖ ≤ C) is in the sum, from the sum
    plus N(0, σ²C²I), with the other terms known and prior 1/2, is right with probability at most
    Φ(‖c‖ / (2σC)) ≤ Φ(1/(2σ)) (Neyman–Pearson); 256 guesses have a standard error ≤ 0.031, so
    the slack is three of them. The coupled design decodes S almost perfectly: its public
    gradients p_i (17–500 C here), un-noised, show who was sampled.
    """
    bound = stats.norm.cdf(1 / (2 * SIGMA)) + 0.09
    dpsgd = decoding_accuracy("dpsgd")
    maskdp = decoding_accuracy("maskdp")
    coupled = decoding_accuracy("maskdp", coupled=True)
    assert dpsgd <= bound and maskdp <= bound, (dpsgd, maskdp)
    assert maskdp <= dpsgd + 0.09  # no better for MaskDP than for DP-SGD on the same examples
    assert coupled >= 0.95, coupled


def test_fully_public_data_gives_the_same_update_whatever_the_private_batch():
    """No sensitive pixel anywhere: the private sum is exactly 0 for every private batch S, so two
    steps with the same public batch and noise key give bit-identical parameters."""
    data = numpy_batch()
    data["sensitive"][:] = False
    mechanism = DpMechanism(
        "maskdp", C, SIGMA, dataset_size=N, batch_size=N // 2, capacity=N, public_capacity=N // 2
    )
    first, _, _ = released_update(mechanism, 0, data)
    other = DpMechanism(**{**mechanism.__dict__, "secret": 99})  # another S, same S' and key…
    assert not np.array_equal(other.private_indices(0)[0], mechanism.private_indices(0)[0])
    assert np.array_equal(other.public_indices(0)[0], mechanism.public_indices(0)[0])
    loss_fn, params = setup("vit_split")
    step = make_train_step(other, loss_fn, optax.sgd(1.0), MESH, microbatch_size=8)
    batches = {
        "private": take(data, *other.private_indices(0)),
        "public": public_view(take(data, *other.public_indices(0))),
    }
    key = jnp.asarray(mechanism.noise_key_data())  # …and the first run's noise key
    state = TrainState(jnp.int32(0), jax.tree.map(jnp.copy, params), SGD_STATE, key)
    after, _ = step(state, jax.device_put(batches, parallel.batch_sharding(MESH)))
    second = (flat(params) - flat(after.params)) * mechanism.batch_size
    np.testing.assert_array_equal(np.asarray(first), np.asarray(second))


def test_epsilon_is_derived_from_the_step_count():
    mechanism = DpMechanism("dpsgd", 1.0, 1.1, dataset_size=60_000, batch_size=256, capacity=320)
    from jaxpriv.dp import accounting

    assert mechanism.epsilon(0) == 0.0
    assert mechanism.epsilon(1000) == accounting.epsilon(
        noise_multiplier=1.1, sampling_rate=256 / 60_000, steps=1000, delta=1e-5
    )
    none = DpMechanism("none", 1.0, 0.0, dataset_size=100, batch_size=10, capacity=10)
    assert none.epsilon(10) == np.inf


SECRET = (1 << 127) + 0x1234_5678_9ABC_DEF0_1122_3344  # 128 bits
TRAIN = """
import sys, pathlib
import jax
jax.config.update("jax_compilation_cache_dir", {cache!r})
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
sys.path.insert(0, {tests!r})
from test_train import tiny_config
from jaxpriv.train import loop
from jaxpriv.train.export import export
config = tiny_config(pathlib.Path({tmp!r}), "maskdp")
config.train.epochs = 1.0
config.dp.secret_seed = {secret}
loop.train(config, {workdir!r}, progress=False)
export({workdir!r}, {out!r})
# A program with the key as a constant: the positive control of the cache search below.
import jax.numpy as jnp, numpy as np
key = np.asarray({key!r}, np.uint32)
jax.jit(lambda x: x ^ jnp.asarray(key))(np.zeros(4, np.uint32)).block_until_ready()
"""


def varints(words) -> bytes:
    """``words`` as a packed repeated protobuf field (how XLA stores integer constants)."""
    out = bytearray()
    for word in map(int, words):
        while word > 0x7F:
            out.append(word & 0x7F | 0x80)
            word >>= 7
        out.append(word)
    return bytes(out)


def secret_patterns(secret):
    """The byte patterns of the secret and of its noise key, in every encoding we know of."""
    secret_words = np.frombuffer(secret.to_bytes(16, "little"), np.uint32)
    key_words = noise.noise_key_data(secret)
    return [
        str(secret).encode(),
        secret.to_bytes(16, "big"),
        *(words.tobytes() for words in (secret_words, key_words)),
        *(varints(words) for words in (secret_words, key_words)),
    ]


def files_holding(folder, patterns, read=lambda data: data):
    found = []
    for root, _, names in os.walk(folder):
        for name in names:
            with open(os.path.join(root, name), "rb") as f:
                data = read(f.read())
            if any(pattern in data for pattern in patterns):
                found.append(os.path.relpath(os.path.join(root, name), folder))
    return found


@pytest.fixture(scope="module")
def run_with_cache(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("secret")
    paths = {name: str(tmp / name) for name in ("cache", "run", "export")}
    key = noise.noise_key_data(SECRET).tolist()
    code = TRAIN.format(
        tests=os.path.dirname(__file__),
        tmp=str(tmp),
        secret=SECRET,
        key=key,
        cache=paths["cache"],
        workdir=paths["run"],
        out=paths["export"],
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=600)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    return paths


def test_the_secret_never_reaches_the_compilation_cache(run_with_cache):
    from jax._src.compilation_cache import decompress_executable

    cache = run_with_cache["cache"]
    entries = [name for name in os.listdir(cache) if not name.endswith("-atime")]
    assert len(entries) > 3  # the run's programs were cached
    holding = files_holding(cache, secret_patterns(SECRET), decompress_executable)
    # Only the control program, which has the key as a constant: the search would see a leak.
    assert len(holding) == 1, holding
    assert holding == files_holding(
        cache, [varints(noise.noise_key_data(SECRET))], decompress_executable
    )
    # The checkpoints do hold the secret: they stay private.
    assert files_holding(run_with_cache["run"], [str(SECRET).encode()])


def test_export_writes_the_parameters_and_summary_without_the_secret(run_with_cache):
    import json

    from jaxpriv.models import pretrained
    from jaxpriv.train.metrics import read_jsonl

    out = run_with_cache["export"]
    assert sorted(os.listdir(out)) == ["params.npz", "summary.json"]
    assert not files_holding(out, secret_patterns(SECRET))
    record = read_jsonl(os.path.join(run_with_cache["run"], "metrics.jsonl"))[-1]
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert summary == {k: record[k] for k in summary} and summary["mode"] == "maskdp"
    exported = pretrained.load_params(os.path.join(out, "params.npz"))
    assert exported.keys() == pretrained.load_params(run_with_cache["run"]).keys()
    with pytest.raises(FileExistsError, match="export writes a new folder"):
        from jaxpriv.train.export import export

        export(run_with_cache["run"], out)
