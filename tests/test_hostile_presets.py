"""Fuzz: invalid presets, overrides and options exit 2 with one line naming the field, fast."""

from __future__ import annotations

import time

import pytest
from typer.testing import CliRunner

from igm_cli.cli import app

runner = CliRunner()

# (preset file content, what the one line must contain)
FILES: dict[str, tuple[str | bytes, str]] = {
    "syntax-mapping": ("name: x\n  bad: : 1\n", "line 2, column"),
    "syntax-bracket": ("stages: {epochs: [1, 2}\n", "line 1, column"),
    "syntax-tab": ("gm:\n\ttau: 1\n", "line 2, column"),
    "unknown-top": ("bogus: 1\nmodalities: [{name: fou}, {name: kar}]\n", "bogus"),
    "unknown-gm": ("gm: {taux: 1}\nmodalities: [{name: fou}, {name: kar}]\n", "did you mean gm.tau"),
    "unknown-sam": ("sam: {rhoo: 1}\nmodalities: [{name: fou}, {name: kar}]\n", "sam.rhoo"),
    "unknown-optimizer": ("optimizer: {lrr: 1}\nmodalities: [{name: fou}, {name: kar}]\n", "optimizer.lrr"),
    "unknown-schedule": ("schedule: {gama: 1}\nmodalities: [{name: fou}, {name: kar}]\n", "schedule.gama"),
    "unknown-data": ("data: {batch: 1}\nmodalities: [{name: fou}, {name: kar}]\n", "data.batch"),
    "unknown-baseline": ("baseline: {epoch: 1}\nmodalities: [{name: fou}, {name: kar}]\n", "baseline.epoch"),
    "unknown-head": ("head: {width: [1]}\nmodalities: [{name: fou}, {name: kar}]\n", "head.width"),
    "unknown-stages": ("stages: {epoch: [1]}\nmodalities: [{name: fou}, {name: kar}]\n", "stages.epoch"),
    "unknown-modality-key": ("modalities: [{name: fou, bogus: 1}, {name: kar}]\n", "modalities.0.bogus"),
    "unknown-encoder-key": ("modalities: [{name: fou, encoder: {hiden: [1]}}, {name: kar}]\n", "hiden"),
    "unknown-input-key": ("modalities: [{name: fou, input: {sise: 3}}, {name: kar}]\n", "input.sise"),
    "unknown-encoder-name": ("modalities: [{name: fou, encoder: {name: vit}}, {name: kar}]\n", "encoder"),
    "type-tau": ("gm: {tau: abc}\nmodalities: [{name: fou}, {name: kar}]\n", "gm.tau"),
    "type-epochs": ("stages: {epochs: 5}\nmodalities: [{name: fou}, {name: kar}]\n", "stages.epochs"),
    "type-modalities": ("modalities: fou\n", "modalities"),
    "type-widths": ("head: {widths: [a]}\nmodalities: [{name: fou}, {name: kar}]\n", "head.widths"),
    "type-enabled": ("gm: {enabled: [1]}\nmodalities: [{name: fou}, {name: kar}]\n", "gm.enabled"),
    "range-tau": ("gm: {tau: -1}\nmodalities: [{name: fou}, {name: kar}]\n", "gm.tau"),
    "range-rho": ("sam: {rho: -0.1}\nmodalities: [{name: fou}, {name: kar}]\n", "sam.rho"),
    "range-lr": ("optimizer: {lr: 0}\nmodalities: [{name: fou}, {name: kar}]\n", "optimizer.lr"),
    "range-momentum": ("optimizer: {momentum: 1.5}\nmodalities: [{name: fou}, {name: kar}]\n", "momentum"),
    "range-batch": ("data: {batch_size: 0}\nmodalities: [{name: fou}, {name: kar}]\n", "data.batch_size"),
    "range-classes": ("num_classes: 1\nmodalities: [{name: fou}, {name: kar}]\n", "num_classes"),
    "inf-lr": ("optimizer: {lr: .inf}\nmodalities: [{name: fou}, {name: kar}]\n", "optimizer.lr"),
    "inf-rho": ("sam: {rho: .inf}\nmodalities: [{name: fou}, {name: kar}]\n", "sam.rho"),
    "nan-tau": ("gm: {tau: .nan}\nmodalities: [{name: fou}, {name: kar}]\n", "gm.tau"),
    "seed-huge": ("seed: 1180591620717411303424\nmodalities: [{name: fou}, {name: kar}]\n", "seed"),
    "seed-negative": ("seed: -1\nmodalities: [{name: fou}, {name: kar}]\n", "seed"),
    "name-escapes": ("name: ../escaped\nmodalities: [{name: fou}, {name: kar}]\n", "[A-Za-z0-9]"),
    "name-two-parts": ("name: a/b\nmodalities: [{name: fou}, {name: kar}]\n", "name"),
    "name-hidden": ("name: .hidden\nmodalities: [{name: fou}, {name: kar}]\n", "name"),
    "device": ("device: gpu0\nmodalities: [{name: fou}, {name: kar}]\n", "device"),
    "dataset": ("dataset: imagenet\nmodalities: [{name: fou}, {name: kar}]\n", "dataset"),
    "method": ("method: bogus\nmodalities: [{name: fou}, {name: kar}]\n", "method"),
    "layer-bomb": (
        "modalities: [{name: fou, encoder: {hidden: [" + "4," * 5000 + "4]}}, {name: kar}]\n",
        "hidden",
    ),
    "alias-bomb": (
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
        + "".join(
            f"{c}: &{c} [{','.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
        )
        + "modalities: *i\n",
        "line 1, column 4: YAML anchors are not allowed",
    ),
    "python-tag": ("!!python/object/apply:os.system ['echo pwned']\n", "line 1, column"),
    "binary": (bytes(range(256)) * 8, "not UTF-8"),
    "top-level-list": ("- a\n- b\n", "mapping"),
    "empty": ("", "mapping"),
    "deep-nesting": ("a: " + "[" * 3000 + "]" * 3000 + "\n", "nested too deeply"),
}

# (--set arguments, what the one line must contain)
SETS: dict[str, tuple[list[str], str]] = {
    "misspelled-key": (["gm.taux=1"], "did you mean gm.tau?"),
    "no-equals": (["noequals"], "--set"),
    "no-key": (["=5"], "--set"),
    "not-a-section": (["gm.tau.x=1"], "gm.tau"),
    "unknown-item": (["modalities.nosuch.encoder.dim=3"], "modalities.nosuch"),
    "index-out-of-range": (["modalities.7.name=x"], "modalities.7"),
    "seed-string": (["seed=abc"], "seed"),
    "inf-override": (["optimizer.lr=.inf"], "optimizer.lr"),
    "negative-epoch": (["stages.epochs=[1,-1]"], "stages.epochs"),
    "alias-in-set": (["modalities=&a [*a]"], "modalities"),
}

# (command line, what the one line must contain)
OPTIONS: dict[str, tuple[list[str], str]] = {
    "seed-abc": (["train", "--seed", "abc"], "--seed"),
    "unknown-option": (["train", "--bogus"], "--bogus"),
    "bad-method": (["train", "--method", "bogus"], "--method"),
    "bad-split": (["eval", "x.safetensors", "--split", "bogus"], "--split"),
    "bad-device": (["train", "--device", "gpu0"], "--device"),
    "misspelled-preset": (["presets", "show", "mfet"], "did you mean 'mfeat'?"),
}


def assert_one_line_exit_2(result, expected: str, name: str) -> None:
    assert result.exit_code == 2, (name, result.exit_code, result.stderr[-300:], result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, (name, result.stderr[:600])
    assert expected in lines[0], (name, lines[0][:600])
    assert len(lines[0]) < 2000, (name, "the message grew with the input")


def test_invalid_preset_files(tmp_path):
    started = time.perf_counter()
    for name, (content, expected) in FILES.items():
        path = tmp_path / f"{name}.yaml"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        t = time.perf_counter()
        assert_one_line_exit_2(runner.invoke(app, ["presets", "show", str(path)]), expected, name)
        assert time.perf_counter() - t < 5.0, name  # generous: a shared, loaded CI box
    big = tmp_path / "big.yaml"
    big.write_bytes(b"# padding\n" * 5_000_000)  # 50 MB
    assert_one_line_exit_2(runner.invoke(app, ["presets", "show", str(big)]), "larger than", "50 MB")
    assert len(FILES) + len(SETS) + len(OPTIONS) + 1 >= 40
    assert time.perf_counter() - started < 20


@pytest.mark.parametrize("name", list(SETS))
def test_invalid_overrides(name):
    sets, expected = SETS[name]
    args = [a for item in sets for a in ("--set", item)]
    assert_one_line_exit_2(runner.invoke(app, ["presets", "show", "mfeat", *args]), expected, name)


@pytest.mark.parametrize("name", list(OPTIONS))
def test_invalid_options_are_one_line(name):
    args, expected = OPTIONS[name]
    assert_one_line_exit_2(runner.invoke(app, args), expected, name)


def test_error_text_is_printed_literally_not_as_markup(tmp_path):
    folder = tmp_path / "[exp]"
    folder.mkdir()
    (folder / "p.yaml").write_text("gm: {tau: -1}\nmodalities: [{name: fou}, {name: kar}]\n")
    result = runner.invoke(app, ["presets", "show", str(folder / "p.yaml")])
    assert result.exit_code == 2
    assert "/[exp]/p.yaml" in result.stderr


def test_errors_under_json_are_one_document_on_stdout(tmp_path):
    import json

    for args, kind in (
        (["train", "--preset", "mfet", "--json"], "preset"),
        (["train", "--bogus", "--json"], "usage"),
        (["eval", str(tmp_path / "none.safetensors"), "--json"], "checkpoint"),
    ):
        result = runner.invoke(app, args)
        document = json.loads(result.stdout)
        assert document["error"]["kind"] == kind and document["error"]["exit_code"] == result.exit_code
        assert document["error"]["message"] and len(result.stderr.strip().splitlines()) == 1
