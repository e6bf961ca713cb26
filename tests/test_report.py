"""`jaxpriv report`: the settings of the run exactly, what is not protected, the curve, the
anonymization of its dataset, a leak check that finds a face left in the output, the audit."""

import json
import re
import shutil

import cv2
import numpy as np
import pytest
import skimage.data
from test_train import tiny_config

from jaxpriv import cli
from jaxpriv.anonymize import readers, runner
from jaxpriv.anonymize.settings import Options
from jaxpriv.report import card, leaks
from jaxpriv.train import loop


def table(report: str) -> dict[str, str]:
    """The report's settings table as {setting: value}."""
    rows = re.findall(r"^\| ([^|]+) \| ([^|]+) \|$", report, re.MULTILINE)
    return {name.strip(): value.strip() for name, value in rows}


@pytest.fixture(scope="module")
def maskdp_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("maskdp")
    config = tiny_config(tmp_path)
    config.dp.epsilon, config.dp.delta, config.dp.clip_norm = 6.5, 2e-3, 0.7
    config.dp.accountant, config.dp.neighboring = "rdp", "replace_one"
    workdir = tmp_path / "run"
    record = loop.train(config, str(workdir), progress=False)
    return config, workdir, record


def test_the_report_names_exactly_the_settings_of_the_run(maskdp_run):
    config, workdir, record = maskdp_run
    assert cli.main(["report", str(workdir)]) == 0
    report = (workdir / "report.md").read_text()
    plan = loop.plan_run(config, config.data.num_train)
    settings = table(report)
    assert settings["mode"] == "MaskDP (`dp.mode = maskdp`)"
    assert settings["adjacency"] == (
        "replace the sensitive content of one record (`dp.neighboring = replace_one`)"
    )
    assert settings["privacy unit"].startswith("the sensitive pixels of one record")
    assert settings["ε spent"] == f"{record['epsilon']:.4g} of the budget `dp.epsilon = 6.5`"
    assert settings["δ"] == "`dp.delta = 0.002`"
    assert (
        settings["σ (noise multiplier)"] == f"{plan.noise_multiplier:.6g} (calibrated to ε = 6.5)"
    )
    assert settings["C (clipping norm)"] == "`dp.clip_norm = 0.7`"
    assert settings["q (sampling rate)"] == "0.25 = 16 / 64, `dp.sampling = poisson`"
    assert settings["steps"] == "8 of 8 planned (2 epochs)"
    assert settings["accountant"] == "`dp.accountant = rdp` (dp-accounting)"
    assert settings["sensitive pixels"] == (
        "every pixel that is not removed or synthetic (`data.sensitivity = real`)"
    )
    assert "Labels, the sensitivity masks" in report  # what MaskDP does not protect
    for picture in ("epsilon.png", "records.png"):
        assert (workdir / "report" / picture).stat().st_size > 10_000
        assert f"(report/{picture})" in report
    assert "No audit in this workdir" in report


def test_a_non_private_run_says_nothing_is_protected(tmp_path):
    config = tiny_config(tmp_path, "none")
    config.train.epochs = 1.0
    loop.train(config, str(tmp_path / "run"), progress=False)
    report = card.write(tmp_path / "run").read_text()
    assert "**Nothing, formally.**" in report and "| mode |" not in report


def test_the_report_shows_the_latest_audit(maskdp_run, tmp_path):
    _, workdir, _ = maskdp_run
    run = tmp_path / "run"
    shutil.copytree(workdir, run)
    audit = {
        "mode": "maskdp", "placement": "sensitive", "seed": 0, "sampling_rate": 0.5,
        "steps": 10, "noise_multiplier": 1.1, "epsilon": 2.0, "epsilon_lower_bound": 2.6,
        "confidence": 0.95, "score": 90, "r": 100, "v": 100, "precision": 0.9,
        "seconds": 1.0, "leak_expected": False,
    }  # fmt: skip
    (run / "audit.json").write_text(json.dumps([audit]))
    report = card.write(run).read_text()
    assert "**1 of 1 audits failed.**" in report and "| maskdp | sensitive | 0 |" in report


def test_a_dataset_moved_away_is_said_and_the_rest_still_reported(maskdp_run, tmp_path):
    _, workdir, _ = maskdp_run
    run = tmp_path / "run"
    shutil.copytree(workdir, run)
    description = json.loads((run / "run.json").read_text())
    description["dataset"] = str(tmp_path / "gone")
    (run / "run.json").write_text(json.dumps(description))
    report = card.write(run).read_text()
    assert f"The dataset `{tmp_path / 'gone'}` is not there any more." in report
    assert table(report)["accountant"] == "`dp.accountant = rdp` (dp-accounting)"


def test_a_workdir_without_a_run_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path)]) == 2
    assert "not the workdir of a `jaxpriv train` run" in capsys.readouterr().err


def write_photos(root):
    """Two photographs with a face each, one label folder each."""
    faces = {
        "astronaut/a.png": skimage.data.astronaut(),
        "mirrored/b.png": skimage.data.astronaut(),
    }
    faces["mirrored/b.png"] = np.ascontiguousarray(faces["mirrored/b.png"][:, ::-1])  # mirrored
    for key, image in faces.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / key), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return faces


@pytest.fixture(scope="module")
def anonymized(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("photos")
    write_photos(tmp_path / "in")
    options = Options(method="maskout", region="face", size=32, test_fraction=0.0)
    samples = readers.read_folder(tmp_path / "in")
    summary = runner.run(
        samples, tmp_path / "out", options, workers=1, progress=False, input_root=tmp_path / "in"
    )
    return tmp_path / "in", tmp_path / "out", summary


def test_the_leak_check_finds_a_face_left_in_the_output_and_only_that(anonymized, tmp_path):
    originals, out, summary = anonymized
    reports = [json.loads(line) for line in (out / "inputs.jsonl").read_text().splitlines()]
    clean = leaks.check(out, summary, reports, sample=16)
    assert sorted(clean["checked"]) == ["astronaut/a.png", "mirrored/b.png"]
    assert not [d for d in clean["detections"] if d.leak]
    planted = tmp_path / "planted"
    shutil.copytree(out, planted)
    shutil.copyfile(originals / "mirrored/b.png", planted / "images/mirrored/b.png")
    found = leaks.check(planted, summary, reports, sample=16)["detections"]
    assert {d.key for d in found if d.leak} == {"mirrored/b.png"}
    assert max(d.correlation for d in found) == pytest.approx(1.0)


def test_the_report_of_a_run_on_an_anonymized_dataset_flags_the_planted_leak(
    maskdp_run, anonymized, tmp_path
):
    _, workdir, _ = maskdp_run
    _, out, summary = anonymized
    planted = tmp_path / "out"
    shutil.copytree(out, planted)
    original = skimage.data.astronaut()
    cv2.imwrite(str(planted / "images/astronaut/a.png"), cv2.cvtColor(original, cv2.COLOR_RGB2BGR))
    # the planted copy's summary points at its own dataset
    planted_summary = json.loads((planted / "summary.json").read_text())
    planted_summary["dataset"] = summary["dataset"].replace(str(out), str(planted))
    (planted / "summary.json").write_text(json.dumps(planted_summary))
    run = tmp_path / "run"
    shutil.copytree(workdir, run)
    description = json.loads((run / "run.json").read_text())
    description["dataset"] = planted_summary["dataset"]
    (run / "run.json").write_text(json.dumps(description))
    report = card.write(run).read_text()
    assert "How the dataset was anonymized" in report and "method `maskout`" in report
    assert "| 2 | 2 | 0 | 0 | 2 |" in report  # inputs, anonymized, nothing found, skipped, faces
    assert "**1 possible leak(s)**" in report
    assert re.search(
        r"\| `astronaut/a.png` \| – \| \([\d, ]+\) \| 1.000 \| \*\*LEAK\*\* \|", report
    )
    assert "(report/anonymization_preview.png)" in report
    assert (run / "report" / "anonymization_preview.png").is_file()


def test_the_leak_check_of_videos_looks_at_the_first_clips_frames(tmp_path, monkeypatch):
    from test_anonymize_pipeline import write_video
    from test_preview import square_options

    frames = np.full((9, 48, 48, 3), 60, np.uint8)
    for t in range(9):
        frames[t, 8:24, 4 + 2 * t : 20 + 2 * t] = 220  # a "face" moving right
    write_video(tmp_path / "in" / "walk" / "clip.mp4", list(frames))
    options = square_options(monkeypatch, method="maskout", frame_stride=2)
    videos = readers.read_videos(tmp_path / "in")
    summary = runner.run(
        videos, tmp_path / "out", options, workers=1, progress=False, input_root=tmp_path / "in"
    )
    reports = [
        json.loads(line) for line in (tmp_path / "out/inputs.jsonl").read_text().splitlines()
    ]
    clean = leaks.check(tmp_path / "out", summary, reports, sample=4)["detections"]
    assert not [d for d in clean if d.leak]  # the masked-out face left coding noise at most
    shutil.copyfile(tmp_path / "in/walk/clip.mp4", tmp_path / "out/images/walk/clip.mp4")
    found = leaks.check(tmp_path / "out", summary, reports, sample=4)["detections"]
    assert sorted({d.frame for d in found if d.leak}) == [0, 2, 4, 6]  # the clip's frames shown
