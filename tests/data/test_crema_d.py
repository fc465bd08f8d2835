"""`igm prepare crema-d` on a tiny raw CREMA-D in the real layout, through the CLI."""

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from igm_cli.cli import app
from igm_cli.data import clips as clips_module
from igm_cli.data.crema_d import CLASSES
from igm_cli.data.prepared import PreparedDataset
from tests.data.test_audio_video import numpy_log_stft
from tests.raw_factories import frame_value, make_crema_d

runner = CliRunner()


def prepare(*args: str):
    return runner.invoke(app, ["prepare", "crema-d", *args])


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    # 22,050 Hz wavs, so the spectrogram can be checked with no resampler involved
    return make_crema_d(tmp_path_factory.mktemp("raw") / "CREMA-D", sample_rate=22_050)


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / "crema-d"
    result = prepare("--source", str(raw.root), "--out", str(out), "--frame-size", "32", "--json")
    assert result.exit_code == 0, result.stderr
    return out, json.loads(result.stdout), result.stderr


def split_ids(out, split):
    return (out / split / "ids.txt").read_text().split()


def test_prepare_writes_the_contract(raw, prepared):
    out, summary, stderr = prepared
    assert summary["splits"] == {"train": 23, "val": 3, "test": 3}
    assert summary["skipped"] == {"corrupt video": 1, "bad id": 1}
    assert "30 clips planned, 0 already done" in stderr  # the corrupt clip is found only by decoding
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["classes"] == ["NEU", "HAP", "SAD", "FEA", "DIS", "ANG"]
    assert manifest["modalities"] == {
        "audio": {"shape": [257, 188], "dtype": "float32"},
        "video": {"shape": [1, 3, 32, 32], "dtype": "uint8"},
    }
    assert manifest["skipped"] == {"corrupt video": [raw.corrupt], "bad id": [raw.bad_id]}
    pre = manifest["preprocessing"]
    assert (pre["audio"]["stft"]["n_fft"], pre["audio"]["stft"]["hop_length"]) == (512, 353)
    assert (pre["audio"]["sample_rate"], pre["audio"]["pad_mode"], pre["audio"]["log_eps"]) == (
        22050,
        "constant",
        1e-7,
    )
    assert (pre["video"]["fps"], pre["video"]["frames"], pre["video"]["frame_size"]) == (1.0, 1, 32)
    assert pre["split"]["mode"] == "random" and pre["split"]["seed"] == 42
    assert {"librosa", "av", "soundfile", "ffmpeg"} <= set(manifest["versions"])
    assert [p.name for p in out.parent.iterdir()] == ["crema-d"]  # no partial directory or lock left


def test_splits_are_disjoint_stratified_and_labelled_from_the_ids(raw, prepared):
    out, _, _ = prepared
    data = PreparedDataset.open(out)
    ids = {s: split_ids(out, s) for s in ("train", "val", "test")}
    assert sorted(sum(ids.values(), [])) == sorted(set(raw.ids) - {raw.corrupt})
    for split, names in ids.items():
        labels = np.asarray(data.split(split).labels)
        assert labels.tolist() == [CLASSES.index(n.split("_")[2]) for n in names]
        if split != "train":  # 3 of 6 balanced classes: stratification makes them all different
            assert len(set(labels.tolist())) == len(labels) == 3
    assert isinstance(data.split("train").inputs["audio"], np.memmap)


def test_audio_matches_an_independent_stft(raw, prepared):
    out, _, _ = prepared
    data = PreparedDataset.open(out)
    names = split_ids(out, "train")
    for row in (0, len(names) - 1):
        samples = np.tile(raw.samples[names[row]], 3)[:66_150]
        np.testing.assert_allclose(
            data.split("train").inputs["audio"][row], numpy_log_stft(samples), atol=2e-3
        )


def test_the_centre_one_fps_frame_is_kept(prepared):
    out, _, _ = prepared
    video = PreparedDataset.open(out).split("test").inputs["video"]
    # 25 frames at 10 fps → 1-fps frames are source frames 0, 10, 20 → the centre one is 10
    np.testing.assert_allclose(video.reshape(len(video), -1).mean(1), frame_value(10), atol=3)


def test_rerun_is_a_no_op_and_verify_catches_tampering(raw, prepared, tmp_path):
    out, _, _ = prepared
    again = prepare("--source", str(raw.root), "--out", str(out), "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["prepared"] is False
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    assert prepare("--verify", str(copy)).exit_code == 0
    wrong = runner.invoke(app, ["prepare", "kinetics-sounds", "--verify", str(copy)])
    assert wrong.exit_code == 3 and "holds crema-d, not kinetics-sounds" in wrong.stderr
    with open(copy / "val" / "video.npy", "r+b") as f:
        f.seek(-1, 2)
        f.write(b"\x01" if f.read(1) != b"\x01" else b"\x02")
    (copy / "test" / "ids.txt").unlink()
    bad = prepare("--verify", str(copy))
    assert bad.exit_code == 3
    assert "val/video.npy: checksum mismatch" in bad.stderr and "test/ids.txt: missing" in bad.stderr


def test_frames_option_and_too_few_frames(raw, tmp_path):
    result = prepare(
        "--source", str(raw.root), "--out", str(tmp_path / "f3"), "--frames", "3", "--frame-size", "8"
    )
    assert result.exit_code == 0, result.stderr
    video = PreparedDataset.open(tmp_path / "f3").split("val").inputs["video"]
    assert video.shape[1:] == (3, 3, 8, 8)
    np.testing.assert_allclose(
        video.mean(axis=(2, 3, 4)), [[frame_value(i) for i in (0, 10, 20)]] * 3, atol=3
    )
    four = prepare(
        "--source", str(raw.root), "--out", str(tmp_path / "f4"), "--frames", "4", "--frame-size", "8"
    )
    assert four.exit_code == 3 and "was skipped" in four.stderr and "too few frames 29" in four.stderr
    assert not (tmp_path / "f4").exists()


def test_strict_names_the_bad_clip(tmp_path):
    raw = make_crema_d(tmp_path / "raw", actors=(1001, 1002, 1003), bad_id=False)
    result = prepare("--source", str(raw.root), "--out", str(tmp_path / "out"), "--strict")
    assert result.exit_code == 3
    assert f"{raw.corrupt}: corrupt video" in result.stderr and "(--strict)" in result.stderr
    assert not (tmp_path / "out").exists()
    lenient = prepare("--source", str(raw.root), "--out", str(tmp_path / "out"), "--json")  # resumes
    assert lenient.exit_code == 0 and json.loads(lenient.stdout)["skipped"] == {"corrupt video": 1}


def test_interrupted_prepare_resumes_to_identical_arrays(raw, prepared, tmp_path, monkeypatch):
    calls = []
    decode = clips_module.decode_clip

    def interrupt_at_12(*args):
        calls.append(1)
        if len(calls) == 12:
            raise KeyboardInterrupt
        return decode(*args)

    monkeypatch.setattr(clips_module, "decode_clip", interrupt_at_12)
    out = tmp_path / "crema-d"
    first = prepare("--source", str(raw.root), "--out", str(out), "--frame-size", "32")
    assert first.exit_code == 130 and "run the same command again to resume" in first.stderr
    assert not out.exists() and (tmp_path / ".crema-d.partial").is_dir()
    monkeypatch.setattr(clips_module, "decode_clip", decode)
    second = prepare("--source", str(raw.root), "--out", str(out), "--frame-size", "32")
    assert second.exit_code == 0 and "11 already done, 19 to decode" in second.stderr
    reference = PreparedDataset.open(prepared[0])
    for split, arrays in PreparedDataset.open(out).splits.items():
        for name, array in arrays.inputs.items():
            assert np.array_equal(array, reference.split(split).inputs[name]), (split, name)


def test_two_jobs_give_the_same_arrays(raw, prepared, tmp_path):
    out = tmp_path / "jobs2"
    result = prepare("--source", str(raw.root), "--out", str(out), "--frame-size", "32", "--jobs", "2")
    assert result.exit_code == 0, result.stderr
    assert (
        json.loads((out / "manifest.json").read_text())["checksums"]
        == json.loads((prepared[0] / "manifest.json").read_text())["checksums"]
    )


def test_split_file_imports_a_published_test_list(raw, tmp_path):
    listed = [raw.ids[0], raw.ids[7], raw.ids[14], "1091_TIE_NEU_XX"]
    split_file = tmp_path / "test.csv"
    split_file.write_text("".join(f"{i},{i.split('_')[2]}\n" for i in listed))
    out = tmp_path / "out"
    result = prepare(
        "--source", str(raw.root), "--out", str(out), "--split-file", str(split_file), "--frame-size", "8"
    )
    assert result.exit_code == 0, result.stderr
    assert split_ids(out, "test") == sorted(listed[:3])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["skipped"]["not in source"] == ["1091_TIE_NEU_XX"]
    assert manifest["preprocessing"]["split"]["mode"] == "file"
    split_file.write_text(f"{raw.ids[0]},HAP\n")  # 1001_DFA_NEU_XX is not HAP
    bad = prepare("--source", str(raw.root), "--out", str(tmp_path / "bad"), "--split-file", str(split_file))
    assert bad.exit_code == 3 and "test.csv:1: expected `<clip id>,<its emotion>`" in bad.stderr


def test_speaker_independent_holds_out_whole_actors(raw, tmp_path):
    out = tmp_path / "out"
    result = prepare(
        "--source", str(raw.root), "--out", str(out), "--speaker-independent", "--frame-size", "8"
    )
    assert result.exit_code == 0, result.stderr
    actors = {s: {i[:4] for i in split_ids(out, s)} for s in ("train", "val", "test")}
    assert all(actors.values())
    assert not actors["train"] & actors["test"] and not actors["train"] & actors["val"]
    split = json.loads((out / "manifest.json").read_text())["preprocessing"]["split"]
    assert split["mode"] == "speaker-independent" and split["test_actors"] == sorted(actors["test"])


def test_bad_sources_and_options(raw, tmp_path):
    assert prepare("--out", str(tmp_path / "o")).exit_code == 2  # no --source
    missing = prepare("--source", str(tmp_path / "nowhere"))
    assert missing.exit_code == 3 and "is not a directory" in missing.stderr
    (tmp_path / "empty").mkdir()
    layout = prepare("--source", str(tmp_path / "empty"))
    assert layout.exit_code == 3 and "not a CREMA-D download" in layout.stderr
    wrong = prepare("--source", str(raw.root), "--annotations", str(tmp_path))
    assert wrong.exit_code == 2 and "--annotations does not apply to crema-d" in wrong.stderr
    assert runner.invoke(app, ["prepare", "mfeat", "--frames", "2"]).exit_code == 2
    assert prepare("--source", str(raw.root), "--jobs", "0").exit_code == 2


def test_a_partial_of_another_plan_or_damaged_is_started_afresh(raw, tmp_path, monkeypatch):
    decode = clips_module.decode_clip
    calls = []

    def interrupt_at_5(*args):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return decode(*args)

    monkeypatch.setattr(clips_module, "decode_clip", interrupt_at_5)
    out, common = tmp_path / "out", ["--source", str(raw.root), "--frame-size", "8"]
    assert prepare(*common, "--out", str(out)).exit_code == 130
    monkeypatch.setattr(clips_module, "decode_clip", decode)
    other = prepare(*common, "--out", str(out), "--seed", "7")  # another split → another plan
    assert other.exit_code == 0 and "0 already done, 30 to decode" in other.stderr
    calls.clear()
    monkeypatch.setattr(clips_module, "decode_clip", interrupt_at_5)
    assert prepare(*common, "--out", str(tmp_path / "again")).exit_code == 130
    (tmp_path / ".again.partial" / "plan.json").write_text("{damaged")
    monkeypatch.setattr(clips_module, "decode_clip", decode)
    fresh = prepare(*common, "--out", str(tmp_path / "again"))
    assert fresh.exit_code == 0 and "0 already done" in fresh.stderr


def test_two_prepares_never_share_a_partial_directory(tmp_path):
    from igm_cli.data.staging import Staging
    from igm_cli.errors import DataError

    shapes = {"audio": ((2,), "float32")}
    with Staging.open(tmp_path / ".x.partial", {"train": []}, shapes, "plan"):
        with pytest.raises(DataError, match="another `igm prepare` is writing"):
            Staging.open(tmp_path / ".x.partial", {"train": []}, shapes, "plan")
    Staging.open(tmp_path / ".x.partial", {"train": []}, shapes, "plan").close()  # released
