"""Fuzz: hostile checkpoint files through `igm eval`, `igm landscape` and `igm train --resume`.

Every variant must exit 3 with one line on stderr and no traceback, never unpickle, and never
build the model its metadata describes before checking it against the file (peak RSS of a
subprocess is asserted for the oversized models; the rest run in-process via CliRunner).
"""

from __future__ import annotations

import json
import os
import pickle
import resource
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from typer.testing import CliRunner

from igm_cli.cli import app
from igm_cli.pipeline import train
from igm_cli.presets import resolve_preset
from tests.helpers import TINY_SETS

runner = CliRunner()
MARKER = "igm-unpickled-marker"
RSS_LIMIT_MB = 600  # a good `igm eval` peaks at ~340 MB here; the 10⁷-unit model alone is > 2.5 GB


class Planted:
    """What unpickling this object does: create the marker directory."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


# ---------------------------------------------------------------- reading and writing files


def parts(path: Path) -> tuple[dict, bytes]:
    """(header with __metadata__, tensor data) of a safetensors file."""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def raw_file(header: dict, data: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def tensors_and_meta(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())  # noqa: SIM118


def rebuilt(path: Path, edit: Callable[[dict, dict], None]) -> bytes:
    """Edit (tensors, metadata) and write a well-formed safetensors file."""
    tensors, meta = tensors_and_meta(path)
    edit(tensors, meta)
    out = path.with_name(".edit.safetensors")
    save_file(tensors, str(out), metadata=meta)
    return out.read_bytes()


def header_edit(path: Path, edit: Callable[[dict], None]) -> bytes:
    header, data = parts(path)
    edit(header)
    return raw_file(header, data)


def meta_edit(key: str, change: Callable[[dict], object]):
    """Edit one JSON metadata entry (preset, model, state, extra)."""

    def apply(tensors, meta):
        value = json.loads(meta[key])
        result = change(value)
        meta[key] = json.dumps(value if result is None else result)

    return lambda p: rebuilt(p, apply)


def weight_key(tensors) -> str:
    return "model.branches.kar.head.0.weight"


def set_in(path: list, value):
    def change(d):
        node = d
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value

    return change


def drop(key: str):
    return lambda p: rebuilt(p, lambda t, m: t.pop(key))


def replace(key: str, make: Callable[[torch.Tensor], torch.Tensor]):
    def apply(t, m):
        t[key] = make(t[key])

    return lambda p: rebuilt(p, apply)


def relabel_dtype(key: str, dtype: str):
    return lambda p: header_edit(p, lambda h: h[key].update(dtype=dtype))


def overlap(p: Path) -> bytes:
    def edit(h):
        keys = sorted(k for k in h if k != "__metadata__")
        h[keys[1]]["data_offsets"] = h[keys[0]]["data_offsets"]

    return header_edit(p, edit)


def flip(position: int):
    def apply(p):
        raw = bytearray(p.read_bytes())
        raw[position] ^= 0xFF
        return bytes(raw)

    return apply


def header_length(value: int):
    return lambda p: struct.pack("<Q", value) + p.read_bytes()[8:]


def pickled(p: Path) -> bytes:
    return pickle.dumps({"model": Planted(str(p.parent.parent / MARKER))})


def rename_modality(p: Path) -> bytes:
    def apply(t, m):
        preset = json.loads(m["preset"])
        preset["modalities"][1]["name"] = "kor"
        m["preset"] = json.dumps(preset)

    return rebuilt(p, apply)


W = "model.branches.kar.head.0.weight"
T = "gm.T.fou.head.0"

COSINE_KEY = "grad_cos.kar.head.0"  # gradient-cosine counts in state.gm_meter

# name → bytes of the hostile file, made from the good checkpoint at the given path
GENERAL: dict[str, Callable[[Path], bytes]] = {
    "empty": lambda p: b"",
    "four-bytes": lambda p: p.read_bytes()[:4],
    "truncated-half": lambda p: p.read_bytes()[: len(p.read_bytes()) // 2],
    "truncated-last-byte": lambda p: p.read_bytes()[:-1],
    "header-length-huge": header_length(1 << 62),
    "header-length-4gb": header_length(4 << 30),
    "header-length-zero": header_length(0),
    "header-length-beyond-file": lambda p: header_length(len(p.read_bytes()))(p),
    "flip-length-byte": flip(0),
    "flip-first-json-byte": flip(8),
    "flip-high-length-byte": flip(5),
    "renamed-pickle": pickled,
    "yaml-text": lambda p: b"name: mfeat\ngm:\n  tau: 0.4\n",
    "noise": lambda p: bytes((i * 97 + 13) % 251 for i in range(4096)),
    "header-not-mapping": lambda p: raw_file([1, 2], b""),  # type: ignore[arg-type]
    "int32-relabel-same-bytes": relabel_dtype(W, "I32"),
    "unknown-dtype": relabel_dtype(W, "X99"),
    "bool-weight": replace(W, lambda w: w > 0),
    "int64-weight": replace(W, lambda w: w.long()),
    "transposed-weight": replace(W, lambda w: w.t().contiguous()),
    "missing-weight": drop(W),
    "extra-model-tensor": lambda p: rebuilt(p, lambda t, m: t.update({"model.extra.weight": torch.zeros(2)})),
    "stray-tensor": lambda p: rebuilt(p, lambda t, m: t.update({"junk": torch.zeros(2)})),
    "overlapping-offsets": overlap,
    "shape-lies-about-bytes": lambda p: header_edit(p, lambda h: h[W].update(shape=[10**6, 10**6])),
    "nan-weight": replace(W, lambda w: w.index_fill(0, torch.tensor([0]), float("nan"))),
    "inf-T": replace(T, lambda x: x.index_fill(0, torch.tensor([1]), float("inf"))),
    "T-wrong-shape": replace(T, lambda x: torch.eye(x.shape[0] + 1, dtype=torch.float64)),
    "T-float32": replace(T, lambda x: x.float()),
    "T-unknown-modality": lambda p: rebuilt(
        p, lambda t, m: t.update({"gm.T.zzz.head.0": torch.eye(2, dtype=torch.float64)})
    ),
    "no-format": lambda p: rebuilt(p, lambda t, m: m.pop("format")),
    "no-preset": lambda p: rebuilt(p, lambda t, m: m.pop("preset")),
    "preset-not-json": lambda p: rebuilt(p, lambda t, m: m.update(preset="{not json")),
    "preset-is-list": meta_edit("preset", lambda d: [1, 2]),
    "preset-invalid-tau": meta_edit("preset", set_in(["gm", "tau"], -1)),
    "preset-1e7-hidden": meta_edit("preset", set_in(["modalities", 1, "encoder", "hidden"], [10**7])),
    "preset-1e9-hidden": meta_edit("preset", set_in(["modalities", 1, "encoder", "hidden"], [10**9])),
    "preset-1e5-layers": meta_edit("preset", set_in(["modalities", 1, "encoder", "hidden"], [4] * 10**5)),
    "renamed-modality": rename_modality,
    "model-missing-classes": meta_edit("model", lambda d: d.pop("classes") and None),
    "model-bad-input-shapes": meta_edit("model", set_in(["input_shapes"], "x")),
    "model-huge-input": meta_edit("model", set_in(["input_shapes", "kar"], [10**6, 10**6, 10**6])),
    "model-data-dir-int": meta_edit("model", set_in(["data_dir"], 5)),
    "model-one-class": meta_edit("model", set_in(["classes"], ["a"])),
    "model-is-list": meta_edit("model", lambda d: []),
    "model-encoder-configs-junk": meta_edit("model", set_in(["encoder_configs"], {"kar": "x"})),
    "model-config-for-an-mlp": meta_edit("model", set_in(["encoder_configs"], {"kar": {"hidden_size": 5}})),
    "state-not-mapping": meta_edit("state", lambda d: "stage 1"),
    "state-stage-99": meta_edit("state", set_in(["stage"], 99)),
    "state-unknown-key": meta_edit("state", set_in(["bogus"], 1)),
    "state-missing-key": meta_edit("state", lambda d: d.pop("step") and None),
    "state-epoch-string": meta_edit("state", set_in(["epoch"], "a")),
    "state-negative-step": meta_edit("state", set_in(["step"], -5)),
    "state-cosine-counts-short": meta_edit("state", set_in(["gm_meter", COSINE_KEY], [1, 2])),
    "state-cosine-counts-negative": meta_edit("state", set_in(["gm_meter", COSINE_KEY], [-1] * 26)),
    "metadata-value-not-string": lambda p: header_edit(p, lambda h: h["__metadata__"].update(state=5)),
}

# Only what --resume needs: the same files may be fine for eval and landscape.
RESUME_ONLY: dict[str, Callable[[Path], bytes]] = {
    "rng-wrong-dtype": replace("rng.cpu", lambda r: r.float()),
    "rng-missing": drop("rng.cpu"),
    "rng-truncated": replace("rng.cpu", lambda r: r[:100].clone()),
    "optim-buffer-missing": drop("optim.0.momentum_buffer"),
    "optim-buffer-wrong-shape": replace("optim.0.momentum_buffer", lambda b: b.flatten()[:3].clone()),
    "optim-stray-index": lambda p: rebuilt(
        p, lambda t, m: t.update({"optim.999.momentum_buffer": torch.zeros(2)})
    ),
    "optim-bad-key": lambda p: rebuilt(p, lambda t, m: t.update({"optim.x.y.z": torch.zeros(2)})),
    "optimizer-meta-malformed": meta_edit("extra", set_in(["optimizer"], {"param_groups": 5})),
    "optimizer-none-mid-stage": meta_edit("extra", set_in(["optimizer"], None)),
    "optimizer-lr-string": meta_edit("extra", lambda d: d["optimizer"]["param_groups"][0].update(lr="abc")),
    "optimizer-scalar-junk": meta_edit("extra", lambda d: d["optimizer"]["scalars"].update({"x.y": "z"})),
    "T-of-finished-stage-missing": drop("gm.T.fou.head.2"),
    "cov-of-finished-stage-missing": drop("gm.cov.fou.head.3"),
    "no-optimizer-entry": meta_edit("extra", lambda d: d.pop("optimizer") and None),
}


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> dict[str, Path]:
    """A tiny run stopped inside stage 1: best.safetensors and a mid-stage last.safetensors."""
    root = tmp_path_factory.mktemp("hostile")

    def stop(kind, payload):
        if kind == "step" and payload["stage"] == 1 and payload["batch"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(resolve_preset("mfeat", TINY_SETS), runs_dir=root / "runs", on_event=stop)
    (run,) = (root / "runs").iterdir()
    return {"run": run, "best": run / "best.safetensors", "last": run / "last.safetensors", "root": root}


def check_one_line_exit_3(result, name: str) -> None:
    assert result.exit_code == 3, (name, result.exit_code, result.stderr[-500:], result.exception)
    assert isinstance(result.exception, SystemExit), (name, repr(result.exception))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, (name, result.stderr)


def invoke_on(command: str, data: bytes, good: dict[str, Path], work: Path):
    work.mkdir(parents=True, exist_ok=True)
    if command == "resume":
        run = work / "run"
        shutil.copytree(good["run"], run)
        (run / "last.safetensors").write_bytes(data)
        return runner.invoke(app, ["train", "--resume", str(run), "-q"])
    path = work / "hostile.safetensors"
    path.write_bytes(data)
    if command == "eval":
        return runner.invoke(app, ["eval", str(path), "--json"])
    return runner.invoke(
        app, ["landscape", str(path), "--grid", "3", "--batches", "1", "--out", str(work / "ls")]
    )


def test_the_good_files_pass(good, tmp_path):
    """The baseline: the unmodified files work, so every failure below is the variant's doing."""
    for command in ("eval", "landscape"):
        result = invoke_on(command, good["best"].read_bytes(), good, tmp_path / command)
        assert result.exit_code == 0, result.stderr
    resumed = invoke_on("resume", good["last"].read_bytes(), good, tmp_path / "resume")
    assert resumed.exit_code == 0, resumed.stderr


def test_hostile_checkpoints_exit_3_with_one_line(good, tmp_path):
    cases = [(c, n, f) for c in ("eval", "landscape", "resume") for n, f in GENERAL.items()]
    cases += [("resume", n, f) for n, f in RESUME_ONLY.items()]
    assert len(GENERAL) + len(RESUME_ONLY) >= 50
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for i, (command, name, make) in enumerate(cases):
        base = good["last"] if command == "resume" else good["best"]
        data = make(base)
        check_one_line_exit_3(invoke_on(command, data, good, tmp_path / f"{i}-{command}-{name}"), name)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert grown_mb < 300, f"peak RSS grew by {grown_mb:.0f} MB"
    assert not (good["root"] / MARKER).exists() and not list(tmp_path.rglob(MARKER))


# The child records its own peak (VmHWM, per address space, so reset by exec): the rusage of a
# child forked from a large pytest process would count the parent's pages shared before exec.
PEAK = (
    "import atexit, runpy, sys\n"
    "out = sys.argv[1]\n"
    "def peak():\n"
    "    line = next(x for x in open('/proc/self/status') if x.startswith('VmHWM'))\n"
    "    open(out, 'w').write(line.split()[1])\n"
    "atexit.register(peak)\n"
    "sys.argv = ['igm', *sys.argv[2:]]\n"
    "runpy.run_module('igm_cli', run_name='__main__')\n"
)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak RSS is read from /proc")
@pytest.mark.parametrize(
    ("command", "name"), [("eval", "preset-1e7-hidden"), ("resume", "preset-1e9-hidden")]
)
def test_oversized_model_description_stays_small_in_a_subprocess(good, tmp_path, command, name):
    """Peak RSS of the whole process stays bounded: the described model is never built."""
    base = good["last"] if command == "resume" else good["best"]
    data = GENERAL[name](base)
    if command == "resume":
        run = tmp_path / "run"
        shutil.copytree(good["run"], run)
        (run / "last.safetensors").write_bytes(data)
        args = ["train", "--resume", str(run)]
    else:
        (tmp_path / "h.safetensors").write_bytes(data)
        args = ["eval", str(tmp_path / "h.safetensors")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    peak_file = tmp_path / "peak"
    proc = subprocess.run(
        [sys.executable, "-c", PEAK, str(peak_file), *args], cwd=tmp_path, env=env, capture_output=True
    )
    err = proc.stderr.decode()
    assert proc.returncode == 3, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    peak_mb = int(peak_file.read_text()) / 1024
    assert peak_mb < RSS_LIMIT_MB, f"peak RSS {peak_mb:.0f} MB"
