"""Raw Twitter2015 / Sarcasm (real formats, generated) → prepare → verify → train → eval, through the CLI."""

import json

import pytest
from typer.testing import CliRunner

from igm_cli.analysis.runner import evaluate_many
from igm_cli.cli import app
from tests.helpers import set_args
from tests.text_image_factories import make_sarcasm, make_tokenizer, make_twitter2015
from tests.text_image_helpers import tiny_text_image

runner = CliRunner()
IMAGE_PAIRS = {"head.0": None, "head.1": "text.head.0", "head.3": "text.head.2", "head.4": "text.head.3"}
TEXT_PAIRS = {"head.0": "image.head.1", "head.2": "image.head.3", "head.3": "image.head.4"}


def run_json(*args):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("dataset", ["twitter2015", "sarcasm"])
def test_raw_to_trained_and_evaluated_model(tmp_path, dataset):
    make_tokenizer(tmp_path / "tok")
    source = (
        make_twitter2015(tmp_path / "raw").root
        if dataset == "twitter2015"
        else make_sarcasm(tmp_path / "raw").root
    )
    prepared = run_json(
        "prepare",
        dataset,
        "--source",
        str(source),
        "--tokenizer",
        "tok",
        "--max-tokens",
        "12",
        "--image-size",
        "32",
        "--json",
    )
    assert prepared["out"] == f"data/{dataset}"
    assert runner.invoke(app, ["prepare", dataset, "--verify", f"data/{dataset}"]).exit_code == 0
    sets = [*tiny_text_image(12), "stages.epochs=[1,1,1]"]
    results = run_json("train", "--preset", dataset, "--json", *set_args(sets))
    assert set(results["test"]) == {"text", "image", "fused"}
    stages = results["stages"]
    assert [s["active"] for s in stages] == [["text"], ["image"], ["text"]]
    # item 5: which layer received which modality's T, by name; the image head's extra first layer none
    assert stages[0]["gm_pairs"] is None  # no T of image before its first stage
    assert stages[1]["gm_pairs"] == IMAGE_PAIRS and stages[2]["gm_pairs"] == TEXT_PAIRS
    assert set(stages[1]["gm_removed_share"]) == {"head.1", "head.3", "head.4"}
    assert set(stages[2]["gm_removed_share"]) == {"head.0", "head.2", "head.3"}
    evaluated = run_json("eval", results["checkpoint"], "--json")
    assert evaluated["metrics"] == results["test"]
    # robustness: token replacement for the text, Gaussian noise on the normalised image
    robust = evaluate_many([results["checkpoint"]], with_robustness=True, write=False)["checkpoints"][0]
    curves = robust["robustness"]["modalities"]
    assert curves["text"]["noise"]["corruption"]["kind"].startswith("token replacement")
    assert curves["image"]["noise"]["corruption"]["std"] == "one over all values"
    for kind in ("missing", "noise"):
        assert curves["text"][kind]["accuracy"][0] == evaluated["metrics"]["fused"]["accuracy"]


def test_the_stage_table_lists_which_layer_got_which_T():
    from igm_cli.console import _pairs_cell

    cell = _pairs_cell(IMAGE_PAIRS)
    assert cell == "head.1 ← text.head.0, head.3 ← text.head.2, head.4 ← text.head.3; none: head.0"
    assert _pairs_cell(None) == "—"
    assert _pairs_cell({"head.0": "fou.head.0", "head.2": "fou.head.2"}) == "same layers"
    assert _pairs_cell({"head.0": "fou.head.2"}) == "head.0 ← fou.head.2"


def test_a_checkpoint_of_pretrained_encoders_is_evaluated_without_their_folders(tmp_path):
    import shutil

    from tests.text_image_helpers import save_tiny_weights

    make_tokenizer(tmp_path / "tok")
    source = make_sarcasm(tmp_path / "raw").root
    run_json(
        "prepare", "sarcasm", "--source", str(source), "--tokenizer", "tok", "--max-tokens", "12", "--json"
    )
    save_tiny_weights(tmp_path / "bert", tmp_path / "resnet")
    sets = [*tiny_text_image(12, weights=True), "modalities.text.encoder.weights=bert",
            "modalities.image.encoder.weights=resnet"]  # fmt: skip
    results = run_json("train", "--preset", "sarcasm", "--json", *set_args(sets))
    shutil.rmtree(tmp_path / "bert")
    shutil.rmtree(
        tmp_path / "resnet"
    )  # the checkpoint alone: configs in its metadata, weights in its tensors
    assert run_json("eval", results["checkpoint"], "--json")["metrics"] == results["test"]
