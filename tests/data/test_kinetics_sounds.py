"""`igm prepare kinetics-sounds` on tiny K400-style clips and annotation CSVs, through the CLI."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from igm_cli.cli import app
from igm_cli.data.kinetics_sounds import CLASSES
from igm_cli.data.prepared import PreparedDataset
from tests.raw_factories import frame_value, make_kinetics_sounds

runner = CliRunner()


def prepare(*args: str):
    return runner.invoke(app, ["prepare", "kinetics-sounds", *args])


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    return make_kinetics_sounds(tmp_path_factory.mktemp("raw") / "kinetics400")


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / "ks"
    result = prepare("--source", str(raw.root), "--out", str(out), "--frame-size", "16", "--json")
    assert result.exit_code == 0, result.stderr
    return out, json.loads(result.stdout)


def test_classes_are_the_31_sorted_names():
    assert len(CLASSES) == 31 == len(set(CLASSES)) and CLASSES == sorted(CLASSES)
    assert {"playing bagpipes", "tapping pen", "shoveling snow", "blowing nose"} <= set(CLASSES)


def test_prepare_uses_the_csv_splits_and_counts_what_it_drops(raw, prepared):
    out, summary = prepared
    assert summary["splits"] == {"train": 6, "val": 6, "test": 3}
    assert summary["skipped"] == {"missing video": 1, "corrupt video": 1, "too few frames": 1}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["classes"] == CLASSES
    assert manifest["skipped"]["too few frames"] == [raw.short]
    assert manifest["modalities"] == {
        "audio": {"shape": [257, 1003], "dtype": "float32"},
        "video": {"shape": [3, 3, 16, 16], "dtype": "uint8"},
    }
    video = manifest["preprocessing"]["video"]
    assert (video["frames"], video["min_frames"], video["fps"]) == (3, 4, 1.0)
    assert manifest["preprocessing"]["audio"]["sample_rate"] == 35_400
    data = PreparedDataset.open(out)
    for split, names in raw.clips.items():
        ids = (out / split / "ids.txt").read_text().split()
        assert ids == sorted(names)  # abseiling (not a Kinetics-Sounds class) is filtered out
        labels = np.asarray(data.split(split).labels).tolist()
        assert labels == [CLASSES.index(raw.labels[name]) for name in ids]


def test_three_frames_at_the_segment_centres(prepared):
    out, _ = prepared
    video = PreparedDataset.open(out).split("train").inputs["video"]
    # 45 frames at 10 fps → 5 one-fps frames (sources 0, 10, ..., 40) → indices 0, 2, 4
    expected = [frame_value(i) for i in (0, 20, 40)]
    np.testing.assert_allclose(video.mean(axis=(2, 3, 4)), [expected] * len(video), atol=3)


def test_audio_holds_the_clip_tone(prepared):
    out, _ = prepared
    audio = PreparedDataset.open(out).split("val").inputs["audio"]
    peak = np.argmax(audio[:, :, 100:110].mean(axis=2), axis=1)
    assert np.all(np.abs(peak - 1000 / 35_400 * 512) <= 1)


def test_verify_and_rerun(raw, prepared):
    out, _ = prepared
    assert prepare("--verify", str(out)).exit_code == 0
    again = prepare("--source", str(raw.root), "--out", str(out), "--json")
    assert json.loads(again.stdout)["prepared"] is False


def test_unlabelled_test_csv_carves_test_from_val(tmp_path):
    raw = make_kinetics_sounds(
        tmp_path / "k400", per_split=(("train", 1), ("val", 2), ("test", 1)), test_labels=False
    )
    out = tmp_path / "out"
    result = prepare("--source", str(raw.root), "--annotations", str(raw.annotations), "--out", str(out),
                     "--frame-size", "8", "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["splits"] == {"train": 3, "val": 3, "test": 3}
    val, test = ((out / s / "ids.txt").read_text().split() for s in ("val", "test"))
    assert sorted(val + test) == sorted(raw.clips["val"])
    split = json.loads((out / "manifest.json").read_text())["preprocessing"]["split"]
    assert (
        "half of the CSV's val" in split["test"] and "4 test rows had no label" in split["test"]
    )  # abseiling too


def test_bad_annotations_and_options(raw, tmp_path):
    none = prepare("--source", str(raw.root), "--annotations", str(tmp_path / "nowhere"))
    assert none.exit_code == 3 and "is not a directory of Kinetics-400 annotation CSVs" in none.stderr
    (tmp_path / "csvs").mkdir()
    (tmp_path / "csvs" / "other.csv").write_text("a,b\n1,2\n")
    empty = prepare("--source", str(raw.root), "--annotations", str(tmp_path / "csvs"))
    assert empty.exit_code == 3 and "no CSV with columns" in empty.stderr
    wrong = prepare("--source", str(raw.root), "--split-file", "x.csv", "--speaker-independent")
    assert wrong.exit_code == 2 and "--speaker-independent, --split-file do not apply" in wrong.stderr
    strict = prepare("--source", str(raw.root), "--out", str(tmp_path / "s"), "--strict")
    assert strict.exit_code == 3 and f"{raw.missing}: missing video" in strict.stderr
