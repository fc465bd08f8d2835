"""Raw audio–video downloads (real formats, generated) → igm prepare → igm train → igm eval."""

import json

import pytest
from typer.testing import CliRunner

from igm_cli.cli import app
from tests.helpers import set_args
from tests.models.test_inputs_encoders import TINY_AV
from tests.raw_factories import make_crema_d, make_kinetics_sounds

runner = CliRunner()


def run_json(*args):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("dataset", ["crema-d", "kinetics-sounds"])
def test_raw_to_trained_and_evaluated_model(tmp_path, dataset):
    if dataset == "crema-d":
        make_crema_d(tmp_path / "raw")
        prepare = ["prepare", "crema-d", "--source", "raw"]
    else:
        raw = make_kinetics_sounds(tmp_path / "raw")
        prepare = ["prepare", "kinetics-sounds", "--source", "raw", "--annotations", str(raw.annotations)]
    prepared = run_json(*prepare, "--frame-size", "40", "--json")
    assert prepared["out"] == f"data/{dataset}"
    # the default data directory: `igm train --preset DATASET` needs no --data
    results = run_json("train", "--preset", dataset, "--json", *set_args(TINY_AV))
    assert set(results["test"]) == {"audio", "video", "fused"}
    assert [s["active"] for s in results["stages"]] == [["audio"], ["video"]]
    assert set(results["stages"][1]["gm_removed_share"]) == {"head.0", "head.2", "head.3"}
    evaluated = run_json("eval", results["checkpoint"], "--json")
    assert evaluated["metrics"] == results["test"]
