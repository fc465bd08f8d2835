"""`igm prepare nvgesture` on a tiny raw NVGesture in the real layout, then verify → train → eval (CLI)."""

import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from igm_cli.checkpoint import load_checkpoint
from igm_cli.cli import app
from igm_cli.data.flow import FlowSpec, clip_flow, dequantise
from igm_cli.data.prepared import PreparedDataset
from igm_cli.models.i3d import I3D
from tests.raw_factories import frame_value
from tests.raw_nvgesture import TRAIN_LIST, make_nvgesture

runner = CliRunner()
PREPARE = ["--frames", "8", "--frame-size", "32", "--flow", "farneback"]


def tiny_sets(window: int = 6, size: int = 28) -> list[str]:
    sets = ["--set", "stages.epochs=[1,1,1,1]", "--set", "data.batch_size=5"]
    for m in ("depth", "rgb", "flow"):
        for key, value in [
            ("encoder.weights", ""), ("encoder.width_divisor", 16), ("encoder.pool_frames", 1),
            ("input.size", size), ("input.window", window),
        ]:  # fmt: skip
            sets += ["--set", f"modalities.{m}.{key}={value}"]
    return sets


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    return make_nvgesture(tmp_path_factory.mktemp("raw") / "nvGesture")


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / "nvgesture"
    result = runner.invoke(
        app, ["prepare", "nvgesture", "--source", str(raw.root), "--out", str(out), *PREPARE, "--json"]
    )
    assert result.exit_code == 0, result.stderr
    return out, json.loads(result.stdout), result.stderr


def test_prepare_writes_the_contract_keyed_by_clip_path(raw, prepared):
    out, summary, stderr = prepared
    assert summary["splits"] == {"train": 13, "val": 2, "test": 6}  # 15 + 1 listed, 6 + 1 listed
    assert summary["skipped"] == {"missing video": 1, "window past end": 1}
    assert summary["bytes"] == {
        "depth": 21 * 8 * 32 * 32,
        "flow": 21 * 16 * 32 * 32,
        "rgb": 21 * 24 * 32 * 32,
    }
    assert "size depth 168.0 KB, flow 336.0 KB, rgb 504.0 KB" in summary["message"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["modalities"] == {
        "rgb": {"shape": [8, 3, 32, 32], "dtype": "uint8"},
        "depth": {"shape": [8, 1, 32, 32], "dtype": "uint8"},
        "flow": {"shape": [8, 2, 32, 32], "dtype": "uint8"},
    }
    assert manifest["skipped"] == {"missing video": [raw.missing], "window past end": [raw.past_end]}
    flow = manifest["preprocessing"]["flow"]
    assert flow["method"] == "farneback" and flow["parameters"]["winsize"] == 15 and flow["clip"] == [-20, 20]
    data = PreparedDataset.open(out)
    ids = {s: (out / s / "ids.txt").read_text().split() for s in ("train", "val", "test")}
    assert sorted(ids["train"] + ids["val"]) == sorted(raw.train) and sorted(ids["test"]) == sorted(raw.test)
    assert len({raw.labels[i] for i in ids["val"]}) == 2  # stratified: two different classes
    for split, names in ids.items():
        assert data.split(split).labels.tolist() == [raw.labels[n] for n in names]
    assert [p.name for p in out.parent.iterdir()] == ["nvgesture"]  # no partial directory or lock left


def test_the_list_window_of_each_sensor_is_read(prepared):
    out, _, _ = prepared
    split = PreparedDataset.open(out).split("test")
    rgb, depth = np.asarray(split.inputs["rgb"]), np.asarray(split.inputs["depth"])
    corner = rgb[:, :, :, :4, :4].astype(float).mean(axis=(0, 2, 3, 4))  # background, away from the square
    np.testing.assert_allclose(corner, [frame_value(i) for i in range(2, 10)], atol=4)  # window 2:10
    assert depth[:, :, 0, :4, :4].max() < 20 and depth.max() > 200  # black depth, bright square


def test_rerun_verify_strict_lists_and_bad_lines(raw, prepared, tmp_path):
    out, _, _ = prepared
    again = runner.invoke(
        app, ["prepare", "nvgesture", "--source", str(raw.root), "--out", str(out), "--json"]
    )
    assert again.exit_code == 0 and json.loads(again.stdout)["prepared"] is False
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    assert runner.invoke(app, ["prepare", "nvgesture", "--verify", str(copy)]).exit_code == 0
    with open(copy / "train" / "flow.npy", "r+b") as f:
        f.seek(-1, 2)
        f.write(b"\x00")
    bad = runner.invoke(app, ["prepare", "nvgesture", "--verify", str(copy)])
    assert bad.exit_code == 3 and "train/flow.npy: checksum mismatch" in bad.stderr
    strict = runner.invoke(
        app,
        [
            "prepare",
            "nvgesture",
            "--source",
            str(raw.root),
            "--out",
            str(tmp_path / "s"),
            *PREPARE,
            "--strict",
        ],
    )
    assert strict.exit_code == 3 and f"{raw.missing}: missing video" in strict.stderr
    assert len(strict.stderr.strip().splitlines()) == 1
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / TRAIN_LIST).write_text("path:./Video_data/class_01/subject1_r1 color:sk_color:oops label:1\n")
    (lists / "nvgesture_test_correct_cvpr2016_v2.lst").write_text("")
    broken = runner.invoke(
        app,
        [
            "prepare",
            "nvgesture",
            "--source",
            str(raw.root),
            "--out",
            str(tmp_path / "b"),
            "--lists",
            str(lists),
        ],
    )
    assert broken.exit_code == 3 and f"{TRAIN_LIST}:1: expected `path:" in broken.stderr


def test_clips_are_keyed_by_path_not_list_position(raw, prepared, tmp_path):
    """Reversed list files and --jobs 2 give the same clips under the same ids."""
    out, _, _ = prepared
    lists = tmp_path / "lists"
    lists.mkdir()
    for path in raw.root.glob("*.lst"):
        (lists / path.name).write_text("\n".join(reversed(path.read_text().splitlines())) + "\n")
    other = tmp_path / "other"
    result = runner.invoke(
        app,
        ["prepare", "nvgesture", "--source", str(raw.root), "--out", str(other), "--lists", str(lists),
         *PREPARE, "--jobs", "2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    a, b = PreparedDataset.open(out), PreparedDataset.open(other)
    for split in ("train", "val", "test"):
        ids_a = (out / split / "ids.txt").read_text().split()
        ids_b = (other / split / "ids.txt").read_text().split()
        assert sorted(ids_a) == sorted(ids_b)
        rows = [ids_b.index(i) for i in ids_a]
        for m in ("rgb", "depth", "flow"):
            np.testing.assert_array_equal(
                a.split(split).inputs[m], np.asarray(b.split(split).inputs[m])[rows]
            )


@pytest.mark.parametrize("method", ["farneback", "tvl1"])
def test_flow_of_a_translating_pattern_points_the_right_way(method):
    """A smooth texture moving 2 px right and 1 px down per frame: flow x ≈ +2, y ≈ +1."""
    rng = np.random.default_rng(0)
    big = rng.random((80, 80))
    for _ in range(3):  # smooth it so the motion is trackable
        big = (big + np.roll(big, 1, 0) + np.roll(big, 1, 1) + np.roll(big, -1, 0) + np.roll(big, -1, 1)) / 5
    big = ((big - big.min()) / np.ptp(big) * 255).astype(np.uint8)
    frames = np.stack(
        [np.repeat(big[20 - t : 60 - t, 20 - 2 * t : 60 - 2 * t][None], 3, 0) for t in range(4)]
    )
    flow = dequantise(clip_flow(frames, FlowSpec(method))) * 20  # (4, 2, 40, 40) in pixels
    inner = flow[:3, :, 8:-8, 8:-8]
    assert flow.shape == (4, 2, 40, 40)
    np.testing.assert_allclose(np.median(inner[:, 0]), 2.0, atol=0.35)
    np.testing.assert_allclose(np.median(inner[:, 1]), 1.0, atol=0.35)
    np.testing.assert_array_equal(flow[3], flow[2])  # the last flow is a copy


def test_prepare_verify_train_eval_and_the_three_modality_cycle(prepared, tmp_path):
    out, _, _ = prepared
    assert runner.invoke(app, ["prepare", "nvgesture", "--verify", str(out)]).exit_code == 0
    # converted "public" weights (tiny width, pytorch-i3d layout): RGB for rgb and depth, flow for flow
    sets = tiny_sets()
    for name, channels, modalities in (("rgb", 3, ("rgb", "depth")), ("flow", 2, ("flow",))):
        torch.save(dict(I3D(channels, width_divisor=16).state_dict()), tmp_path / f"{name}.pt")
        converted = tmp_path / "weights" / f"i3d-{name}.safetensors"
        assert (
            runner.invoke(app, ["convert", "i3d", str(tmp_path / f"{name}.pt"), str(converted)]).exit_code
            == 0
        )
        sets += [arg for m in modalities for arg in ("--set", f"modalities.{m}.encoder.weights={converted}")]
    result = runner.invoke(
        app, ["train", "--preset", "nvgesture", "--data", str(out), *sets, "--runs-dir", "runs", "--json"]
    )
    assert result.exit_code == 0, result.stderr
    results = json.loads(result.stdout)
    stages = results["stages"]
    # stage order depth → rgb → flow → depth; T from the previous modality of the cycle
    assert [(s["active"], s["source"]) for s in stages] == [
        (["depth"], "flow"), (["rgb"], "depth"), (["flow"], "rgb"), (["depth"], "flow")
    ]  # fmt: skip
    assert not stages[0]["gm_removed_share"]  # no T of flow before flow has trained
    for s in stages[1:]:  # T of the source acted on all three head Linears of the trained branch
        assert set(s["gm_removed_share"]) == {"head.0", "head.2", "head.3"}
        assert all(v > 0 for v in s["gm_removed_share"].values())
    assert "stage 3: train depth for 1 epochs; T from flow on head.0, head.2, head.3" in result.stderr
    last = load_checkpoint(results["run_dir"] + "/last.safetensors")
    assert {k.split(".")[2] for k in last.tensors if k.startswith("gm.T.")} == {"depth", "rgb", "flow"}
    shutil.rmtree(tmp_path / "weights")  # the checkpoint alone rebuilds the model
    evaluated = runner.invoke(app, ["eval", results["checkpoint"], "--data", str(out), "--json"])
    assert evaluated.exit_code == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["metrics"]["fused"] == pytest.approx(results["test"]["fused"])
    entropy = runner.invoke(
        app, ["eval", results["checkpoint"], "--data", str(out), "--fusion", "entropy", "--json"]
    )
    assert entropy.exit_code == 0 and set(json.loads(entropy.stdout)["metrics"]) == {
        "depth",
        "rgb",
        "flow",
        "fused",
    }


def test_too_few_frames_for_the_encoder_is_one_line_naming_the_minimum(prepared):
    out, _, _ = prepared
    sets = tiny_sets() + [f"--set=modalities.{m}.encoder.pool_frames=2" for m in ("depth", "rgb", "flow")]
    result = runner.invoke(app, ["train", "--preset", "nvgesture", "--data", str(out), *sets])
    assert result.exit_code == 2
    assert "modalities.depth: the encoder needs at least 9 frames per clip, it would get 6" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
