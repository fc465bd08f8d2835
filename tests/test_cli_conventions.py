"""CLI conventions: --version, completion, choices in --help, fast failures, umask, paths."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

import igm_cli.checkpoint as checkpoint_module
from igm_cli import __version__
from igm_cli.cli import app
from igm_cli.errors import UsageError
from igm_cli.pipeline import train
from igm_cli.presets import resolve_preset
from igm_cli.runs import create_run_dir
from tests.helpers import TINY_SETS, set_args

runner = CliRunner()


def test_version_and_completion():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"igm {__version__}"
    assert "--install-completion" in runner.invoke(app, ["--help"]).stdout


@pytest.mark.parametrize(
    ("command", "choices"),
    [
        ("train", ["igm|joint|unimodal", "cpu|cuda|cuda:N|mps|auto", "KEY=VALUE"]),
        ("eval", ["train|val|test", "mean|entropy", "cpu|cuda|cuda:N|mps|auto"]),
        ("landscape", ["train|val|test"]),
        ("sweep", ["cpu|cuda|cuda:N|mps|auto"]),
    ],
)
def test_help_lists_choices_without_type_noise(command, choices):
    text = " ".join(runner.invoke(app, [command, "--help"]).stdout.split())
    for choice in choices:
        assert choice in text, (command, choice)
    assert "<bool>" not in text and "<list[str]>" not in text


def test_a_preset_typo_fails_before_torch_is_imported(tmp_path):
    code = (
        "import sys\nfrom igm_cli.cli import app\n"
        "try:\n    app(['train', '--preset', 'mfaet'])\nexcept SystemExit as e:\n    code = e.code\n"
        "print(code, 'torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert out.stdout.split() == ["2", "False", "False"], out.stderr
    assert "did you mean 'mfeat'?" in out.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_sweep_on_cuda_without_cuda_exits_2_once_before_any_trial(tmp_path):
    result = runner.invoke(app, ["sweep", "--grid", "gm.tau=1,2", "--device", "cuda", "--out", "s", "-q"])
    assert result.exit_code == 2
    assert [line for line in result.stderr.splitlines() if line.strip()] == [
        "error: device cuda requested but CUDA is not available"
    ]
    assert not (tmp_path / "s").exists()


def test_eval_on_a_yaml_file_says_it_is_not_a_checkpoint(tmp_path):
    (tmp_path / "config.yaml").write_text("name: mfeat\n")
    result = runner.invoke(app, ["eval", "config.yaml"])
    assert result.exit_code == 3
    assert "not a checkpoint" in result.stderr and "text file" in result.stderr


@pytest.fixture
def finished_run(tmp_path):
    mask = os.umask(0o027)
    try:
        return train(resolve_preset("mfeat", TINY_SETS), runs_dir=tmp_path / "runs")
    finally:
        os.umask(mask)


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_checkpoints_and_surfaces_honour_the_umask(tmp_path, finished_run):
    from pathlib import Path

    run = Path(finished_run["run_dir"])
    files = (
        "config.yaml",
        "metrics.jsonl",
        "results.json",
        "best.safetensors",
        "last.safetensors",
        "run.json",
    )
    assert {p.name: mode(p) for p in run.iterdir()} == dict.fromkeys(files, 0o640)
    mask = os.umask(0o022)
    try:
        result = runner.invoke(app, ["landscape", str(run), "--grid", "3", "--batches", "1", "--out", "ls"])
    finally:
        os.umask(mask)
    assert result.exit_code == 0, result.stderr
    assert mode(tmp_path / "ls" / "surfaces.safetensors") == 0o644


def test_two_default_landscapes_of_one_run_do_not_collide(finished_run):
    best, last = (f"{finished_run['run_dir']}/{n}.safetensors" for n in ("best", "last"))
    outs = []
    for args in ([best], [last], [best, "--grid", "5"], [best]):
        result = runner.invoke(
            app, ["landscape", *args, "--batches", "1", "--json", *(["--grid", "3"] * (len(args) == 1))]
        )
        assert result.exit_code == 0, result.stderr
        outs.append(json.loads(result.stdout)["out"])
    assert len(set(outs[:3])) == 3  # best, last, best on another grid: three directories
    assert outs[3] == outs[0]  # the same command again continues (here: redraws) the same one


def test_unreadable_checkpoint_is_one_line_permission_denied(tmp_path, finished_run, monkeypatch):
    """Permissions do not stop root, so the refusal is injected where the file is opened."""
    real_open = open

    def refusing_open(path, *args, **kwargs):
        if str(path).endswith(".safetensors"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module, "open", refusing_open, raising=False)
    run = finished_run["run_dir"]
    os.remove(f"{run}/results.json")  # resumable again
    for args in (["eval", run], ["landscape", run, "--grid", "3", "--out", "ls"], ["train", "--resume", run]):
        result = runner.invoke(app, args)
        assert result.exit_code == 3, (args, result.stderr)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "permission denied" in lines[0], (args, result.stderr)


def test_run_names_are_one_path_component(tmp_path):
    for bad in ("../escaped", "a/b", ".hidden", ""):
        with pytest.raises(UsageError):
            create_run_dir(tmp_path / "runs", bad)
    result = runner.invoke(app, ["train", "--runs-dir", "runs", *set_args([*TINY_SETS, "name=../escaped"])])
    assert result.exit_code == 2 and "name" in result.stderr
    assert not (tmp_path / "escaped").exists() and not list(tmp_path.glob("escaped*"))


def test_every_package_ships_in_the_wheel():
    """pyproject lists packages explicitly: a subpackage left out is missing from a real install."""
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

    root = Path(__file__).resolve().parents[1]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(root).parts) for init in (root / "igm_cli").rglob("__init__.py")
    }
    assert found - listed == set()
