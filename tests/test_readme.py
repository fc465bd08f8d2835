"""Every `igm` command shown in README.md runs, offline, on the embedded data.

Training commands get the tiny-branch overrides appended so the suite stays fast (and
NVGesture prepares small, Farneback flow); the example run directory, preset file, raw
downloads and public I3D files (tiny width, in the pytorch-i3d layout) are created first.
"""

import json
import shlex
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from igm_cli.cli import app
from igm_cli.models.i3d import I3D
from igm_cli.pipeline import train
from igm_cli.presets import resolve_preset
from tests.helpers import TINY_SETS, set_args
from tests.models.test_inputs_encoders import TINY_AV
from tests.raw_factories import make_crema_d, make_kinetics_sounds
from tests.raw_nvgesture import make_nvgesture
from tests.text_image_factories import make_sarcasm, make_tokenizer, make_twitter2015
from tests.text_image_helpers import save_tiny_weights, tiny_text_image

README = Path(__file__).resolve().parents[1] / "README.md"
EXAMPLE_RUN = "runs/mfeat-20261122-101500"
NVGESTURE_PREPARE = ["--frames", "8", "--frame-size", "32", "--flow", "farneback"]
NVGESTURE_SETS = ["stages.epochs=[1,1,1,1]", "data.batch_size=5"] + [
    f"modalities.{m}.{key}"
    for m in ("depth", "rgb", "flow")
    for key in ("encoder.width_divisor=16", "encoder.pool_frames=1", "input.size=28", "input.window=6")
]


def make_public_i3d_files(folder: Path) -> None:
    """rgb_imagenet.pt / flow_imagenet.pt: plain state dicts in the pytorch-i3d layout (width 1/16)."""
    folder.mkdir(parents=True)
    for name, channels in (("rgb_imagenet.pt", 3), ("flow_imagenet.pt", 2)):
        torch.save(dict(I3D(channels, width_divisor=16).state_dict()), folder / name)


def readme_commands() -> list[str]:
    lines = [line.strip() for line in README.read_text().splitlines() if line.startswith("    igm ")]
    return [line.split("  #")[0].strip() for line in lines]


def test_readme_shows_every_command():
    text = " ".join(readme_commands())
    for command in ("igm train", "igm eval", "igm prepare", "igm presets list", "igm presets show"):
        assert command in text


def make_interrupted_example_run(tmp_path: Path) -> None:
    """An unfinished run (one stage done, so best.safetensors exists) under the README's name."""

    def stop_in_second_stage(kind, payload):
        if kind == "step" and payload["stage"] == 1 and payload["batch"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(
            resolve_preset("mfeat", TINY_SETS), runs_dir=tmp_path / "tmp-runs", on_event=stop_in_second_stage
        )
    (run,) = (tmp_path / "tmp-runs").iterdir()
    (tmp_path / "runs").mkdir(exist_ok=True)
    run.rename(tmp_path / EXAMPLE_RUN)


def test_every_readme_command_runs(tmp_path):
    runner = CliRunner()
    make_interrupted_example_run(tmp_path)
    make_crema_d(tmp_path / "raw/CREMA-D")  # the raw downloads the prepare examples name
    make_kinetics_sounds(tmp_path / "raw/kinetics400")
    make_nvgesture(tmp_path / "raw/nvGesture")
    make_public_i3d_files(tmp_path / "raw/pytorch-i3d")
    make_twitter2015(tmp_path / "raw/twitter2015")
    make_sarcasm(tmp_path / "raw/sarcasm")
    save_tiny_weights(tmp_path / "models/bert-base-uncased", tmp_path / "models/resnet-50")  # local copies
    make_tokenizer(tmp_path / "models/bert-base-uncased")
    commands = readme_commands()
    # the README pipes `presets show` into my-preset.yaml, which an earlier line uses
    show = next(c for c in commands if c.startswith("igm presets show") and ">" in c)
    left, target = show.split(">")
    out = runner.invoke(app, shlex.split(left)[1:])
    assert out.exit_code == 0, out.stderr
    Path(target.strip()).write_text(out.stdout)
    for command in commands:
        args = shlex.split(command.split(">")[0])[1:]
        if "--nproc" in args:  # worker processes: run as a subprocess by tests/distributed/test_ddp_cli.py
            continue
        if args[0] == "train" and "nvgesture" in args:
            args += set_args(NVGESTURE_SETS)  # keeps the converted weights (tiny width)
        elif args[0] == "train" and {"twitter2015", "sarcasm"} & set(args):  # tiny sizes of the local weights
            args += set_args(tiny_text_image(max_tokens=64, weights=True))
        elif args[0] == "train" and "crema-d" in args:  # the prepared tiny CREMA-D: tiny ResNets
            args += set_args(TINY_AV)
        elif args[0] == "train" and ("--resume" not in args or "auto" in args):
            args += set_args(TINY_SETS)
        if args[:2] == ["prepare", "nvgesture"] and "--verify" not in args:
            args += NVGESTURE_PREPARE
        result = runner.invoke(app, args)
        if "cuda" in args and not torch.cuda.is_available():
            assert result.exit_code == 2 and "CUDA is not available" in result.stderr, command
            continue
        assert result.exit_code == 0, f"{command}\n{result.stderr}"
        if "--json" in args:
            json.loads(result.stdout)
    assert (tmp_path / EXAMPLE_RUN / "results.json").is_file()  # the resume example finished the run


def test_readme_commands_are_safe_in_zsh():
    """zsh (macOS's default shell) globs unquoted [...], * and ?: every example quotes them."""
    import re

    texts = [line for line in README.read_text().splitlines() if line.startswith("    igm ")]
    texts += re.findall(r"`((?:--set |--grid )[^`]*)`", README.read_text())
    bad = [t for t in texts if re.search(r"[\[\]*?]", re.sub(r"'[^']*'|\"[^\"]*\"", "", t.split("  #")[0]))]
    assert bad == []
