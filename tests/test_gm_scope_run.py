"""`--set gm.scope=fraction`: a tiny audio–video run keeps every conv T in its checkpoints,
reports every layer GM touched, resumes exactly mid-stage, and refuses hostile gm tensors.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from igm_cli.checkpoint import load_checkpoint
from igm_cli.cli import app
from igm_cli.data.manifest import write_prepared
from igm_cli.pipeline import train
from igm_cli.presets import resolve_preset
from tests.helpers import set_args
from tests.models.test_inputs_encoders import TINY_AV
from tests.test_end_to_end import ctrl_c_at, model_tensors, only_run
from tests.test_hostile_checkpoints import tensors_and_meta

runner = CliRunner()
SETS = [*TINY_AV, "stages.epochs=[1,1,1]", "gm.scope=fraction", "gm.fraction=0.3"]
CONV = "encoder.net.encoder.stages.1.layers.0.layer.1.convolution"  # 8 → 8 channels, 3×3: T is 72²
OUTSIDE = "encoder.net.encoder.stages.1.layers.0.layer.0.convolution"  # a conv 0.3 does not reach


@pytest.fixture(scope="module")
def av_data(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 24), ("val", 12), ("test", 12)):
        labels = np.arange(n) % 6
        audio = rng.normal(size=(n, 32, 20)).astype(np.float32) + labels[:, None, None]
        video = rng.integers(0, 255, size=(n, 1, 3, 36, 36), dtype=np.uint8)
        arrays[split] = {"labels": labels, "audio": audio, "video": video}
    out = tmp_path_factory.mktemp("av") / "av"
    write_prepared(out, dataset="crema-d", classes=["NEU", "HAP", "SAD", "FEA", "DIS", "ANG"], arrays=arrays,
                   preprocessing={})  # fmt: skip
    return out


@pytest.fixture(scope="module")
def whole(av_data, tmp_path_factory):
    """The uninterrupted run through the CLI (human output): (results.json, stderr)."""
    runs = tmp_path_factory.mktemp("runs")
    args = ["train", "--preset", "crema-d", "--data", str(av_data), "--runs-dir", str(runs)]
    result = runner.invoke(app, [*args, *set_args(SETS)])
    assert result.exit_code == 0, result.stderr
    return json.loads((only_run(runs) / "results.json").read_text()), result.stderr


def test_results_and_stage_table_list_every_layer_gm_touched(whole):
    results, stderr = whole
    stages = results["stages"]
    assert stages[0]["gm_layers"] == [] and stages[0]["gm_pairs"] is None  # T = I before video's stage
    for stage, source in ((1, "audio"), (2, "video")):
        rows = {r["layer"]: r for r in stages[stage]["gm_layers"]}
        assert list(rows) == [CONV, "head.0", "head.2", "head.3"]
        assert rows[CONV]["T_of"] == f"{source}.{CONV}" and rows[CONV]["T_size"] == 72
        assert 0 < rows[CONV]["removed_share"] < 1
        assert np.exp(-0.4) <= rows[CONV]["T_trace_ratio"] <= 1
        assert set(stages[stage]["gm_removed_share"]) == set(rows)
        assert f"{stages[stage]['active'][0]}.{CONV}" in stages[stage]["grad_cos_hist"]["counts"]
        scope = stages[stage]["gm_scope"]
        assert scope["scope"] == "fraction" and scope["fraction"] == 0.3 and scope["share"] >= 0.3
    assert "GM per layer (gm.scope=fraction)" in stderr
    assert "encoder.stages.1.layers.0.layer.1" in stderr  # the conv, named without the wrapper
    assert "audio: gm.fraction 0.3 → 45.9% of 1,590 parameters, 4 layers with T" in stderr


def test_checkpoints_keep_T_and_covariance_of_every_scoped_layer(whole):
    results, _ = whole
    gm = load_checkpoint(Path(results["run_dir"]) / "last.safetensors").group("gm")
    for m in ("audio", "video"):
        for kind in ("T", "cov"):
            assert gm[f"{kind}.{m}.{CONV}"].shape == (72, 72)
            assert gm[f"{kind}.{m}.{CONV}"].dtype == torch.float64
        assert not any(OUTSIDE in key for key in gm)
    evaluated = runner.invoke(app, ["eval", results["checkpoint"], "--json"])
    assert evaluated.exit_code == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["metrics"] == results["test"]


def test_resume_mid_stage_restores_the_conv_T_and_equals_the_whole_run(whole, av_data, tmp_path):
    results, _ = whole
    preset = resolve_preset("crema-d", SETS)
    with pytest.raises(KeyboardInterrupt):  # stage 2 trains audio under video's conv and head T
        train(preset, data_dir=av_data, runs_dir=tmp_path, on_event=ctrl_c_at("step", stage=2, batch=1))
    run = only_run(tmp_path)
    assert load_checkpoint(run / "last.safetensors").state["stage"] == 2
    resumed = train(None, resume=str(run), runs_dir=tmp_path)
    a, b = (
        model_tensors(Path(results["run_dir"]) / "last.safetensors"),
        model_tensors(run / "last.safetensors"),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["stages"][2]["gm_layers"] == results["stages"][2]["gm_layers"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda t: t.update({f"gm.T.audio.{CONV}": torch.eye(71, dtype=torch.float64)}),
            "F64 of shape [72, 72]",
        ),
        (
            lambda t: t.update({f"gm.T.audio.{OUTSIDE}": torch.eye(36, dtype=torch.float64)}),
            "no such modality",
        ),
        (lambda t: t.pop(f"gm.cov.audio.{CONV}"), f"lacks gm.cov.audio.{CONV}"),
    ],
)
def test_hostile_gm_tensors_of_scoped_layers_exit_3(whole, tmp_path, edit, message):
    results, _ = whole
    tensors, meta = tensors_and_meta(Path(results["run_dir"]) / "last.safetensors")
    edit(tensors)
    run = tmp_path / "run"
    run.mkdir()
    save_file(tensors, str(run / "last.safetensors"), metadata=meta)
    (run / "config.yaml").write_text((Path(results["run_dir"]) / "config.yaml").read_text())
    command = (
        ["train", "--resume", str(run)] if "lacks" in message else ["eval", str(run / "last.safetensors")]
    )
    result = runner.invoke(app, command)
    assert result.exit_code == 3, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
