import re
from pathlib import Path

import pytest
import torch

from igm_cli.checkpoint import (
    Checkpoint,
    load_checkpoint,
    load_optimizer_state,
    optimizer_tensors,
    read_header,
    read_tensors,
    restore_rng,
    rng_tensors,
    save_checkpoint,
)
from igm_cli.errors import CheckpointError

PACKAGE = Path(__file__).resolve().parents[1] / "igm_cli"


def test_round_trip_of_tensors_and_metadata(tmp_path):
    import json

    tensors = {"model.w": torch.randn(3, 4), "gm.T.a.head.0": torch.eye(4, dtype=torch.float64)}
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, tensors, preset={"name": "x"}, model_info={"classes": ["a"]}, state={"stage": 2})
    specs, metadata = read_header(path)  # the raw reader; load_checkpoint also checks the model
    assert json.loads(metadata["preset"]) == {"name": "x"} and json.loads(metadata["state"]) == {"stage": 2}
    assert specs["model.w"].shape == (3, 4) and specs["gm.T.a.head.0"].dtype == "F64"
    loaded = Checkpoint(path, read_tensors(path), {}, {}, {}, {})
    assert torch.equal(loaded.tensors["model.w"], tensors["model.w"])
    assert loaded.tensors["gm.T.a.head.0"].dtype == torch.float64
    group = loaded.group("gm")
    assert list(group) == ["T.a.head.0"] and torch.equal(group["T.a.head.0"], tensors["gm.T.a.head.0"])
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]  # no temporary file left


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_optimizer_state_round_trips_exactly(name):
    params = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(3))]
    make = {"sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), "adam": lambda p: torch.optim.Adam(p)}[
        name
    ]
    opt = make(params)
    for _ in range(3):
        opt.zero_grad()
        (params[0].sum() ** 2 + params[1].pow(3).sum()).backward()
        opt.step()
    tensors, meta = optimizer_tensors(opt)
    tensors = {k: v.clone() for k, v in tensors.items()}  # as read back from a file: no aliasing
    clone = [torch.nn.Parameter(p.detach().clone()) for p in params]
    other = make(clone)
    load_optimizer_state(other, tensors, meta)
    for opt_ in (opt, other):
        opt_.zero_grad()
    for ps, o in ((params, opt), (clone, other)):
        (ps[0].sum() ** 2 + ps[1].pow(3).sum()).backward()
        o.step()
    assert all(torch.equal(a, b) for a, b in zip(params, clone, strict=True))


def test_rng_state_round_trip():
    saved = rng_tensors()
    a = torch.rand(4)
    restore_rng(saved)
    assert torch.equal(torch.rand(4), a)


def test_foreign_safetensors_file_is_rejected(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(1)}, str(path))
    with pytest.raises(CheckpointError, match="not an igm checkpoint"):
        load_checkpoint(path)


def test_no_pickle_capable_loading_in_the_package():
    # torch.load only with weights_only=True in the same call (the I3D converter)
    pattern = re.compile(
        r"torch\.load\((?![^)]*weights_only=True\))|import pickle|pickle\.load|allow_pickle=True"
    )
    offenders = [str(p) for p in PACKAGE.rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []
