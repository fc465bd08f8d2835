"""`igm report`: Table 3 from metrics.jsonl, spectra from the checkpoint, the cosine histogram, errors.

Expected numbers are recomputed here from the run's files (metrics.jsonl records, numpy
SVD of the checkpoint's gm.* tensors), never taken from the report under test.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from igm_cli.checkpoint import load_checkpoint
from igm_cli.cli import app
from igm_cli.pipeline import train
from igm_cli.presets import resolve_preset
from igm_cli.runs import read_jsonl
from tests.helpers import TINY_SETS

runner = CliRunner()
FAST = [*TINY_SETS, "data.batch_size=48"]
FILES = ["curves.png", "spectra.png", "grad_cosine.png", "report.md"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("report-runs")
    sets = {
        "igm": [*FAST, "stages.epochs=[1,1,1,1]"],
        "mla": [*FAST, "method=mla", "baseline.epochs=2"],
        "joint": [*FAST, "method=joint", "baseline.epochs=1"],
    }
    return {k: Path(train(resolve_preset("mfeat", s), runs_dir=root / k)["run_dir"]) for k, s in sets.items()}


def report(*args: str):
    result = runner.invoke(app, ["report", *args, "--json"])
    return result, (json.loads(result.stdout) if result.stdout else None)


@pytest.fixture(scope="module")
def igm_doc(runs) -> dict:
    """`igm report --json` of the IGM run (rendering costs ~2 s: done once for several tests)."""
    result, doc = report(str(runs["igm"]))
    assert result.exit_code == 0, result.stderr
    return doc


def expected_table3(run: Path) -> list[float]:
    """Fused val accuracy of the last epoch record of every stage that has a stage record."""
    records = read_jsonl(run / "metrics.jsonl")
    finished = [r["stage"] for r in records if r["kind"] == "stage"]
    return [
        [r for r in records if r["kind"] == "epoch" and r["stage"] == s][-1]["val"]["fused"]["accuracy"]
        for s in finished
    ]


def test_report_of_an_igm_run_writes_every_file_and_table3_equals_the_records(runs, igm_doc):
    run = runs["igm"]
    assert igm_doc["files"] == [str(run / "report" / name) for name in FILES]
    for name in FILES[:3]:
        with Image.open(run / "report" / name) as image:
            assert image.format == "PNG" and image.width > 400
    (summary,) = igm_doc["runs"]
    assert [row["fused"] for row in summary["table3"]] == expected_table3(run)
    assert [row["label"] for row in summary["table3"]] == [
        "iter 1 · fou", "iter 1 · kar", "iter 2 · fou", "iter 2 · kar"
    ]  # fmt: skip
    markdown = (run / "report" / "report.md").read_text()
    for name in FILES[:3]:
        assert f"]({name})" in markdown
    row = next(line for line in markdown.splitlines() if line.startswith(f"| {run.name} (igm) |"))
    assert row.split("|")[2:-1] == [f" {v:.4f} " for v in expected_table3(run)]


def test_spectra_are_the_singular_values_of_every_T_and_covariance(runs, igm_doc):
    rows = {f"{r['modality']}.{r['layer']}": r for r in igm_doc["runs"][0]["spectra"]}
    gm = load_checkpoint(runs["igm"] / "last.safetensors").group("gm")
    assert set(rows) == {k.split(".", 1)[1] for k in gm} and len(rows) == 6  # fou, kar × 3 layers
    for key, row in rows.items():
        for kind in ("T", "cov"):
            s = np.linalg.svd(gm[f"{kind}.{key}"].numpy(), compute_uv=False)
            assert row[kind]["max"] == pytest.approx(s.max(), rel=1e-9)
            assert row[kind]["mean"] == pytest.approx(s.mean(), rel=1e-9)
        assert np.exp(-0.4) - 1e-9 <= row["T"]["min"] and row["T"]["max"] <= 1 + 1e-9


def test_histogram_section_of_the_report(runs, igm_doc):
    stages = igm_doc["runs"][0]["grad_cos_hist"]
    assert [s["stage"] for s in stages] == [0, 1, 2, 3]
    first, second = stages[0], stages[1]
    assert not first["projected"] and all(s["unchanged"] == 1.0 for s in first["summary"].values())
    assert second["projected"]
    assert all(s["unchanged"] < 1.0 and s["steps"] == 25 for s in second["summary"].values())
    record = [r for r in read_jsonl(runs["igm"] / "metrics.jsonl") if r["kind"] == "stage"][1]
    assert second["layers"] == record["grad_cos_hist"]["counts"]


def test_several_runs_side_by_side_in_one_figure_per_kind(runs, igm_doc, tmp_path):
    paths = [str(runs[k]) for k in ("igm", "mla", "joint")]
    result = runner.invoke(app, ["report", *paths, "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.stderr
    assert result.stderr.count("Table 3 ·") == 3 and "iter 2 · kar" in result.stderr  # printed
    for name in FILES[:3]:
        with Image.open(tmp_path / "cmp" / name) as three, Image.open(runs["igm"] / "report" / name) as one:
            assert three.width > 2.5 * one.width  # three columns
    assert not (runs["mla"] / "report").exists()  # --out: nothing written into the runs
    markdown = (tmp_path / "cmp" / "report.md").read_text()
    assert all(f"`{Path(p).name}`" in markdown for p in paths)
    assert "method mla builds no flat projection T, so there is no T or covariance" in markdown
    assert "method joint does not modify gradients, so there is no gradient-change histogram" in markdown
    # MLA's histogram path: the shared head's cos(G, G Pᵀ) per modality, in its own table
    record = next(r for r in read_jsonl(runs["mla"] / "metrics.jsonl") if r["kind"] == "stage")
    assert set(record["grad_cos_hist"]["counts"]) == {"fou.head", "kar.head"}
    assert (
        f"| stage 0 · fou+kar | fou.head | {sum(record['grad_cos_hist']['counts']['fou.head'])} |" in markdown
    )
    row = next(line for line in markdown.splitlines() if line.startswith(f"| {runs['mla'].name} (mla) |"))
    assert row.split("|")[2].strip() == f"{expected_table3(runs['mla'])[0]:.4f}"


def one_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_not_a_run_missing_metrics_and_a_corrupt_checkpoint_exit_3_in_one_line(runs, tmp_path):
    (tmp_path / "empty").mkdir()
    assert "not a run directory" in one_line(runner.invoke(app, ["report", str(tmp_path / "nowhere")]))
    result = runner.invoke(app, ["report", str(tmp_path / "empty")])
    assert result.exit_code == 3 and "not a run directory" in one_line(result)

    no_metrics = tmp_path / "no-metrics"
    shutil.copytree(runs["igm"], no_metrics)
    (no_metrics / "metrics.jsonl").write_text('{"kind": "stage"}\n')
    result = runner.invoke(app, ["report", str(no_metrics)])
    assert result.exit_code == 3 and "no epoch record" in one_line(result)

    bad_hist = tmp_path / "bad-hist"
    shutil.copytree(runs["igm"], bad_hist)
    lines = (bad_hist / "metrics.jsonl").read_text().splitlines()
    stage = next(i for i, line in enumerate(lines) if '"kind": "stage"' in line)
    record = json.loads(lines[stage])
    record["grad_cos_hist"]["counts"]["fou.head.0"] = [1, 2]  # not one count per bin
    lines[stage] = json.dumps(record)
    (bad_hist / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    result = runner.invoke(app, ["report", str(bad_hist)])
    assert result.exit_code == 3 and "corrupt metrics" in one_line(result)

    corrupt = tmp_path / "corrupt"
    shutil.copytree(runs["igm"], corrupt)
    data = bytearray((corrupt / "last.safetensors").read_bytes())
    (corrupt / "last.safetensors").write_bytes(bytes(data[: len(data) // 2]))
    result, doc = report(str(corrupt))
    assert result.exit_code == 3 and "last.safetensors" in one_line(result)
    assert doc["error"]["exit_code"] == 3 and doc["error"]["kind"] == "checkpoint"


def test_spectra_take_any_layer_names_in_forward_order():
    import torch

    from igm_cli.report.source import RunData
    from igm_cli.report.spectra import spectra

    rng = np.random.default_rng(0)
    names = [
        "encoder.stages.3.layers.1.convolution",
        "head.10",
        "head.2",
        "encoder.stages.3.layers.0.convolution",
    ]
    tensors = {}
    for name in names:
        a = rng.standard_normal((9, 5))
        tensors[f"gm.cov.audio.{name}"] = torch.from_numpy(a.T @ a)  # (5, 5) PSD, rank 5
        tensors[f"gm.T.audio.{name}"] = torch.eye(5, dtype=torch.float64)
    run = RunData(
        Path("x"), "x", {"method": "igm", "modalities": [{"name": "audio"}]}, [], [], Path("x"), tensors
    )
    rows = spectra(run)
    assert [r["layer"] for r in rows] == [
        "encoder.stages.3.layers.0.convolution", "encoder.stages.3.layers.1.convolution", "head.2", "head.10"
    ]  # fmt: skip
    for row in rows:
        s = np.linalg.svd(tensors[f"gm.cov.audio.{row['layer']}"].numpy(), compute_uv=False)
        assert row["cov"]["values"] == pytest.approx(s.tolist(), rel=1e-9) and row["cov"]["rank"] == 5
        assert row["T"]["min"] == row["T"]["max"] == pytest.approx(1.0)
