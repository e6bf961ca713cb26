"""Tests of the example schema, the TFDS ArrayRecord dataset and the Grain loaders."""

import sys

import numpy as np
import pytest

from jaxpriv.data import pipeline, schema, tfds_builder
from jaxpriv.dp import sampling
from jaxpriv.dp.mechanism import DpMechanism

VERSION = str(tfds_builder.SyntheticActions.VERSION)

SIZES = dict(num_train=40, num_test=10, seed=5)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="module")
def videos(data_dir):
    return tfds_builder.prepare_synthetic(data_dir, kind="video", **SIZES)


@pytest.fixture(scope="module")
def train(videos):
    return pipeline.load_source(videos, "train")


def _example(**overrides):
    example = {
        "video": np.zeros((8, 32, 32, 3), np.uint8),
        "sensitive": np.ones((8, 32, 32), np.uint8),
        "label": np.int64(3),
    }
    return {name: value for name, value in (example | overrides).items() if value is not None}


# --- schema -----------------------------------------------------------------


def test_valid_examples_pass():
    schema.validate_example(_example())
    schema.validate_example(_example(sensitive=np.zeros((8, 32, 32), bool), label=0))
    image = dict(
        image=np.zeros((32, 32, 3), np.uint8), sensitive=np.ones((32, 32), np.uint8), label=7
    )
    schema.validate_example(image)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            dict(sensitive=np.ones((8, 32, 30), np.uint8)),
            r"sensitive mask has shape \(8, 32, 30\) but video is \(8, 32, 32, 3\): expected \(8, 32, 32\)",
        ),
        (
            dict(video=np.zeros((8, 32, 32, 3), np.float32)),
            "video has dtype float32: expected uint8",
        ),
        (
            dict(video=np.zeros((8, 32, 32, 4), np.uint8)),
            r"video has shape \(8, 32, 32, 4\): expected TxHxWx3",
        ),
        (
            dict(video=None, image=np.zeros((8, 32, 32, 3), np.uint8)),
            r"image has shape \(8, 32, 32, 3\): expected HxWx3",
        ),
        (
            dict(sensitive=np.full((8, 32, 32), 2, np.uint8)),
            "sensitive mask has value 2: expected only 0 and 1",
        ),
        (
            dict(sensitive=np.ones((8, 32, 32), np.float32)),
            "sensitive mask has dtype float32: expected bool or uint8",
        ),
        (dict(label=-1), r"label is -1 \(int64, shape \(\)\): expected a non-negative integer"),
        (dict(label=2.0), r"label is 2.0 \(float64, shape \(\)\): expected a non-negative integer"),
        (dict(label=True), r"label is True \(bool, shape \(\)\)"),
        (dict(label=np.array([1, 2])), r"label is \[1 2\] \(int64, shape \(2,\)\)"),
        (dict(sensitive=None), "example has no 'sensitive' feature"),
        (dict(video=None), "exactly one of"),
        (dict(image=np.zeros((32, 32, 3), np.uint8)), "exactly one of"),
    ],
)
def test_invalid_examples_name_the_problem(overrides, message):
    with pytest.raises(ValueError, match=message):
        schema.validate_example(_example(**overrides))


# --- TFDS dataset -------------------------------------------------------------


def _assert_split_matches_generator(builder, split):
    source = pipeline.load_source(builder, split)
    expected = tfds_builder.generate_split(builder.builder_config, split)
    assert len(source) == len(expected["label"])
    for i in range(len(source)):
        record = source[i]
        assert set(record) == set(expected)
        for name, values in expected.items():
            np.testing.assert_array_equal(record[name], values[i])
            assert np.asarray(record[name]).dtype == values.dtype


@pytest.mark.parametrize("split", tfds_builder.SPLITS)
def test_video_records_equal_the_generator(videos, split):
    _assert_split_matches_generator(videos, split)


def test_image_records_equal_the_generator(data_dir):
    images = tfds_builder.prepare_synthetic(data_dir, kind="image", sensitivity="all", **SIZES)
    assert (
        images.data_path
        != tfds_builder.prepare_synthetic(data_dir, kind="image", **SIZES).data_path
    )
    for split in tfds_builder.SPLITS:
        _assert_split_matches_generator(images, split)
    assert (pipeline.load_source(images, "test")[0]["sensitive"] == 1).all()


def test_works_without_tensorflow(videos, train):
    assert train[0]["video"].shape == (8, 32, 32, 3)
    assert "tensorflow" not in sys.modules


def test_dataset_is_stored_as_array_record(videos):
    files = sorted(path.name for path in videos.data_path.iterdir())
    assert "dataset_info.json" in files and "features.json" in files
    assert any(".array_record-" in name and "train" in name for name in files)
    assert any(".array_record-" in name and "test" in name for name in files)


def test_config_name_encodes_every_parameter(videos):
    assert videos.builder_config.name == "video8_train40_test10_seed5_real"
    assert videos.data_path.parts[-3:] == ("synthetic_actions", videos.builder_config.name, VERSION)


def test_load_source_from_a_directory(videos):
    from_dir = pipeline.load_source(videos.data_path, "test")
    np.testing.assert_array_equal(
        from_dir[3]["video"], pipeline.load_source(videos, "test")[3]["video"]
    )


def test_a_small_split_is_held_in_memory_with_the_same_batches(videos, train):
    assert not isinstance(train, pipeline.InMemorySource)  # cache_mb = 0: read from disk
    cached = pipeline.load_source(videos, "train", cache_mb=2.0)
    assert isinstance(cached, pipeline.InMemorySource) and len(cached) == len(train) == 40
    assert cached.dataset_info is train.dataset_info
    assert not isinstance(
        pipeline.load_source(videos, "train", cache_mb=0.01), pipeline.InMemorySource
    )
    indices, weights = np.array([7, 0, 39, 7]), np.array([1, 1, 1, 0], np.float32)
    from_memory = pipeline.read_batch(cached, indices, weights)
    from_disk = pipeline.read_batch(train, indices, weights)
    assert from_memory.keys() == from_disk.keys()
    for name in from_disk:
        assert from_memory[name].dtype == from_disk[name].dtype, name
        np.testing.assert_array_equal(from_memory[name], from_disk[name])
    _assert_batch_holds(from_memory, train, indices, weights)


def test_complete_dataset_is_reused(data_dir, videos, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("a complete dataset must not be generated again")

    monkeypatch.setattr(tfds_builder, "generate_split", fail)
    again = tfds_builder.prepare_synthetic(data_dir, kind="video", **SIZES)
    assert again.data_path == videos.data_path


def test_failed_build_leaves_no_dataset_and_is_rebuilt(tmp_path, monkeypatch):
    real_generate_split = tfds_builder.generate_split

    def corrupt_example_7(config, split):
        arrays = real_generate_split(config, split)
        arrays["label"][7] = -1  # the builder validates every example it writes
        return arrays

    monkeypatch.setattr(tfds_builder, "generate_split", corrupt_example_7)
    with pytest.raises(ValueError, match="label is -1"):
        tfds_builder.prepare_synthetic(tmp_path, **SIZES)
    config_dir = tmp_path / "synthetic_actions" / "video8_train40_test10_seed5_real"
    assert list(config_dir.iterdir()) == []  # neither a version folder nor incomplete.*

    monkeypatch.undo()
    builder = tfds_builder.prepare_synthetic(tmp_path, **SIZES)
    assert builder.is_prepared()
    _assert_split_matches_generator(builder, "train")


def test_incomplete_folder_of_a_killed_run_is_not_a_dataset(tmp_path):
    config_dir = tmp_path / "synthetic_actions" / "video8_train40_test10_seed5_real"
    stale = config_dir / f"incomplete.AB12CD_{VERSION}"
    stale.mkdir(parents=True)
    (stale / "dataset_info.json").write_text("{}")
    (stale / "synthetic_actions-train.array_record-00000-of-00001").write_bytes(b"truncated")
    builder = tfds_builder.prepare_synthetic(tmp_path, **SIZES)
    assert builder.data_path == config_dir / VERSION
    _assert_split_matches_generator(builder, "train")


# --- Grain loaders --------------------------------------------------------------


def _assert_batch_holds(batch, source, indices, weights):
    np.testing.assert_array_equal(batch["weight"], weights)
    for slot, index in enumerate(indices):
        record = source[int(index)]
        np.testing.assert_array_equal(batch["video"][slot], record["video"])
        np.testing.assert_array_equal(batch["sensitive"][slot], record["sensitive"].astype(bool))
        assert batch["label"][slot] == record["label"]


def mechanism(mode="maskdp", **changes):
    """A mechanism over the 40 training clips: B = 10, private capacity 24, public 16."""
    settings = dict(
        mode=mode,
        clip_norm=1.0,
        noise_multiplier=0.0 if mode == "none" else 1.0,
        dataset_size=40,
        batch_size=10,
        capacity=24,
        public_capacity=16,
        public_seed=5,
        secret=3,
    )
    return DpMechanism(**settings | changes)


def test_poisson_batches(train):
    mech = mechanism("dpsgd")
    batches = list(pipeline.train_batches(train, mech, num_steps=4))
    assert len(batches) == 4
    for step, batches_of_step in enumerate(batches):
        assert list(batches_of_step) == ["private"]
        batch = batches_of_step["private"]
        assert batch["video"].shape == (24, 8, 32, 32, 3) and batch["video"].dtype == np.uint8
        assert batch["sensitive"].shape == (24, 8, 32, 32) and batch["sensitive"].dtype == bool
        assert batch["label"].shape == (24,) and batch["label"].dtype == np.int32
        assert batch["weight"].dtype == np.float32
        _assert_batch_holds(batch, train, *sampling.poisson_batch_indices(3, step, 40, 0.25, 24))


def test_maskdp_public_batches_are_public_views_drawn_independently_of_the_secret(train):
    first = list(pipeline.train_batches(train, mechanism(), num_steps=3))
    other_secret = list(pipeline.train_batches(train, mechanism(secret=4), num_steps=3))
    for step, (batches, other) in enumerate(zip(first, other_secret)):
        indices, weights = sampling.shuffled_batch_indices(5, step, 40, 10, 16)
        public = batches["public"]
        np.testing.assert_array_equal(public["weight"], weights)
        assert weights.sum() == 10
        for slot, index in enumerate(indices):
            record = train[int(index)]
            sensitive = record["sensitive"].astype(bool)
            np.testing.assert_array_equal(public["sensitive"][slot], sensitive)
            expected = np.where(sensitive[..., None], schema.PUBLIC_FILL, record["video"])
            np.testing.assert_array_equal(public["video"][slot], expected)
        assert sensitive.any()  # the fill really replaced something
        for name in public:  # the secret moves the private batch only
            np.testing.assert_array_equal(public[name], other["public"][name])
        assert not np.array_equal(batches["private"]["weight"], other["private"]["weight"]) or (
            not np.array_equal(batches["private"]["label"], other["private"]["label"])
        )


def test_batches_are_deterministic_and_resumable(train):
    def batches(**kwargs):
        return list(pipeline.train_batches(train, mechanism(), **kwargs))

    run, rerun, resumed = (
        batches(num_steps=6),
        batches(num_steps=6),
        batches(num_steps=3, start_step=3),
    )
    for a, b in zip(run + run[3:], rerun + resumed, strict=True):
        for kind in a:
            for name in a[kind]:
                np.testing.assert_array_equal(a[kind][name], b[kind][name])


def test_shuffled_batches(train):
    mech = mechanism("none", sampling="shuffle", batch_size=8, capacity=8)
    batches = list(pipeline.train_batches(train, mech, num_steps=5))
    for step, batch in enumerate(batches):
        assert batch["private"]["video"].shape == (8, 8, 32, 32, 3)
        _assert_batch_holds(
            batch["private"], train, *sampling.shuffled_batch_indices(3, step, 40, 8)
        )


def test_poisson_overflow_surfaces_while_iterating(train):
    batches = pipeline.train_batches(train, mechanism("dpsgd", capacity=5), num_steps=2)
    with pytest.raises(RuntimeError, match="holds only 5"):
        next(batches)


def test_eval_batches_cover_the_split_in_order(videos):
    test = pipeline.load_source(videos, "test")
    batches = list(pipeline.eval_batches(test, 4))
    assert [len(b["weight"]) for b in batches] == [4, 4, 4]
    weights = np.concatenate([b["weight"] for b in batches])
    np.testing.assert_array_equal(weights, np.r_[np.ones(10), np.zeros(2)])
    labels = np.concatenate([b["label"] for b in batches])[:10]
    np.testing.assert_array_equal(labels, [test[i]["label"] for i in range(10)])
    _assert_batch_holds(batches[-1], test, [8, 9, 0, 0], [1, 1, 0, 0])
