"""CLI contract: exit codes, one JSON document on stdout, one-line errors on stderr."""

import json

import pytest
from typer.testing import CliRunner

from igm_cli.cli import app
from tests.helpers import set_args

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, list(args))


def test_help_lists_commands():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("train", "eval", "prepare", "presets"):
        assert command in result.stdout


def test_presets_list_json_is_one_document():
    result = invoke("presets", "list", "--json")
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert "mfeat" in [r["name"] for r in rows]


def test_presets_show_prints_resolved_yaml_with_overrides():
    result = invoke("presets", "show", "mfeat", "--set", "gm.tau=3")
    assert result.exit_code == 0
    assert "tau: 3" in result.stdout
    assert "eval_batch_size" in result.stdout  # defaults are filled in


def test_invalid_preset_exits_2_naming_the_field():
    result = invoke("train", "--set", "gm.tau=-1", "--set", "gm.bogus=1")
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "gm.tau" in lines[0] and "gm.bogus" in lines[0]
    assert "Traceback" not in result.stderr


def test_unknown_preset_exits_2():
    result = invoke("train", "--preset", "no-such-preset")
    assert result.exit_code == 2
    assert "unknown preset" in result.stderr


@pytest.mark.parametrize(
    "content", [None, b"", b"not a safetensors file at all", b"\x10\x00\x00\x00\x00\x00\x00\x00{}"]
)
def test_missing_or_corrupt_checkpoint_exits_3(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    if content is not None:
        path.write_bytes(content)
    result = invoke("eval", str(path))
    assert result.exit_code == 3
    assert "checkpoint" in result.stderr
    assert "Traceback" not in result.stderr


def test_truncated_checkpoint_exits_3(tmp_path, tiny_sets):
    assert invoke("train", "--quiet", "--runs-dir", "r", *set_args(tiny_sets)).exit_code == 0
    best = next((tmp_path / "r").glob("*/best.safetensors"))
    data = best.read_bytes()
    best.write_bytes(data[: len(data) // 2])
    result = invoke("eval", str(best))
    assert result.exit_code == 3
    assert "corrupt checkpoint" in result.stderr


def test_diverged_training_exits_4(tiny_sets):
    result = invoke(
        "train", "--quiet", *set_args(tiny_sets), "--set", "optimizer.lr=1e38", "--set", "sam.rho=0"
    )
    assert result.exit_code == 4, result.stderr
    assert "diverged" in result.stderr


def test_missing_prepared_data_exits_3(tmp_path, tiny_sets):
    result = invoke("train", "--data", str(tmp_path / "nowhere"), *set_args(tiny_sets))
    assert result.exit_code == 3
    assert "no prepared data" in result.stderr


def test_cuda_without_gpu_is_a_usage_error(tiny_sets):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = invoke("train", "--device", "cuda", *set_args(tiny_sets))
    assert result.exit_code == 2
    assert "CUDA is not available" in result.stderr


def test_eval_rejects_bad_split(tmp_path):
    result = invoke("eval", str(tmp_path / "x.safetensors"), "--split", "bogus")
    assert result.exit_code == 2


def test_resume_with_overrides_is_a_usage_error():
    # (with --resume auto, --set picks which runs of the preset count: tests/test_reliability.py)
    result = invoke("train", "--resume", "runs/some-run", "--set", "gm.tau=1")
    assert result.exit_code == 2
    assert "--resume" in result.stderr


def test_prepare_embedded_then_verify_then_train_from_it(tmp_path, tiny_sets):
    out = tmp_path / "prepared"
    result = invoke("prepare", "mfeat", "--out", str(out), "--json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["splits"] == {"train": 1200, "val": 400, "test": 400}
    again = invoke("prepare", "mfeat", "--out", str(out), "--json")
    assert json.loads(again.stdout)["prepared"] is False
    assert invoke("prepare", "mfeat", "--verify", str(out)).exit_code == 0
    assert invoke("train", "--quiet", "--data", str(out), *set_args(tiny_sets)).exit_code == 0
    (out / "test" / "kar.npy").write_bytes(b"garbage")
    verify = invoke("prepare", "mfeat", "--verify", str(out))
    assert verify.exit_code == 3
    assert "test/kar.npy: checksum mismatch" in verify.stderr


def test_prepare_unknown_dataset_exits_2():
    result = invoke("prepare", "imagenet")
    assert result.exit_code == 2
    assert "unknown dataset" in result.stderr


def test_unknown_embedded_view_exits_2_naming_it(tiny_sets):
    result = invoke("train", *set_args([*tiny_sets, "modalities.kar.name=nosuchview"]))
    assert result.exit_code == 2
    assert "modalities: nosuchview not in dataset mfeat" in result.stderr


def test_unwritable_runs_directory_is_one_line_exit_1(tmp_path, tiny_sets):
    blocker = tmp_path / "runs-file"
    blocker.write_text("a file where the runs directory should be")
    result = invoke("train", "--runs-dir", str(blocker / "sub"), *set_args(tiny_sets))
    assert result.exit_code == 1
    assert "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1
