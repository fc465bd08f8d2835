"""`igm eval CKPT... [--robustness] [--out DIR]`: evaluate checkpoints one after another, write the files.

Each checkpoint is rebuilt with its own preset and data; only its result document is kept
before the next is opened. Masks and noise use one `--seed`, so checkpoints of one dataset
are compared on the same missing samples and the same noise draws.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from igm_cli.durable import write_atomic
from igm_cli.errors import UsageError
from igm_cli.evaluation import evaluate_opened, open_checkpoint

from .corruption import build_corruption
from .robustness import robustness

EVAL_JSON = "eval.json"


def display_name(typed: Path | str) -> str:
    """The path as the user typed it, without `.safetensors`: what they recognise in a legend."""
    text = str(typed).rstrip("/")
    return text.removesuffix(".safetensors")


def resolve_checkpoint(typed: Path | str) -> Path:
    """A file, a run directory (its best), or a `--runs-dir` holding exactly one run (that run's best)."""
    path = Path(typed)
    if not path.is_dir() or (path / "best.safetensors").exists():
        return path
    runs = sorted(d.name for d in path.iterdir() if (d / "best.safetensors").is_file())
    if len(runs) > 1:
        raise UsageError(f"{path} holds {len(runs)} runs ({', '.join(runs[:3])}); give one of them")
    return path / runs[0] / "best.safetensors" if runs else path


def method_label(preset) -> str:
    """`joint`, `mla`, … or `igm` with its ablation switches (`igm, ρ=0, no GM`)."""
    from igm_cli.landscape.runner import method_label as label

    return label(preset)


def evaluate_many(
    paths: list[Path],
    *,
    split: str = "test",
    fusion: str | None = None,
    data_dir: Path | None = None,
    device: str = "cpu",
    threads: int | None = None,
    with_robustness: bool = False,
    out: Path | None = None,
    seed: int = 0,
    write: bool = True,
) -> dict[str, Any]:
    """One checkpoint without --robustness: its document; otherwise {"checkpoints": [...], "files"}.

    `write=False` computes only (no eval.json, no PNGs), for library callers.
    """
    if not paths:
        raise UsageError("give at least one checkpoint")
    docs = [_one(p, split, fusion, data_dir, device, threads, with_robustness, seed) for p in paths]
    _unique_names(docs)
    if len(docs) == 1 and not with_robustness:
        result = docs[0]
        if write and out is not None:
            result["files"] = write_files(out, {"checkpoints": docs}, result)
        return result
    result = {"split": split, "seed": seed, "checkpoints": docs}
    if write and (with_robustness or out is not None):
        result["files"] = write_files(out or default_out(paths), result, result)
    return result


def _one(path, split, fusion, data_dir, device, threads, with_robustness, seed) -> dict[str, Any]:
    where = resolve_checkpoint(path)
    opened = open_checkpoint(
        where, split=split, fusion=fusion, data_dir=data_dir, device=device, threads=threads
    )  # fmt: skip
    evaluated = evaluate_opened(opened, seed)
    doc = {
        "name": display_name(path),
        "label": method_label(opened.preset),
        **evaluated.result,
    }
    if with_robustness:
        batch = opened.batch_size
        corruptions = {
            m: build_corruption(opened.model, opened.preset, opened.data, m, batch, seed)
            for m in evaluated.fuser.modalities
        }
        doc["robustness"] = robustness(
            opened.model, evaluated.fuser, opened.batches, corruptions, batch, seed
        )
    return doc


def _unique_names(docs: list[dict[str, Any]]) -> None:
    """Suffix repeated names (#2, #3) so legends and panels are unambiguous."""
    seen: dict[str, int] = {}
    for doc in docs:
        seen[doc["name"]] = seen.get(doc["name"], 0) + 1
        if seen[doc["name"]] > 1:
            doc["name"] = f"{doc['name']}#{seen[doc['name']]}"


def default_out(paths: list[Path]) -> Path:
    """`robustness-<first run directory>-<stems>`; another directory there gets `-2`, `-3`."""
    files = [_file(resolve_checkpoint(p)) for p in paths]
    stems = "+".join(dict.fromkeys(f.stem for f in files))
    stem = f"robustness-{files[0].resolve().parent.name}-{stems}"
    for n in range(1, 1000):
        out = Path(stem if n == 1 else f"{stem}-{n}")
        if not out.exists() or (out / EVAL_JSON).is_file():
            return out
    raise UsageError(f"too many directories named {stem}*; pass --out")


def _file(path: Path) -> Path:
    return path / "best.safetensors" if path.is_dir() else path


def write_files(out: Path, figures: dict[str, Any], document: dict[str, Any]) -> dict[str, str]:
    """eval.json (the --json document), confusion.png and, with robustness, robustness.png."""
    from .plots import confusion_png, robustness_png

    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a directory")
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": str(out / EVAL_JSON), "confusion": str(out / "confusion.png")}
    write_atomic(out / "confusion.png", confusion_png(figures))
    if all("robustness" in d for d in figures["checkpoints"]):
        files["robustness"] = str(out / "robustness.png")
        write_atomic(out / "robustness.png", robustness_png(figures))
    write_atomic(out / EVAL_JSON, json.dumps({**document, "files": files}, indent=2) + "\n")
    return files
