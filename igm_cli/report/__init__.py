"""`igm report`: the paper's figures for one or several runs (Table 3, Figure 1, Figure 5a).

`build_report` reads each run directory (source.py), draws curves.png (curves.py),
spectra.png (spectra.py) and grad_cosine.png (cosine.py) with the runs side by side, and
writes them with report.md (markdown.py) into each run's `report/` or into `out`.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from igm_cli.durable import write_atomic
from igm_cli.errors import UsageError

from .cosine import histograms, no_histogram_reason, plot_cosine
from .curves import plot_curves, table3
from .markdown import cosine_markdown, report_markdown, spectra_markdown, table3_markdown
from .source import RunData, load_run
from .spectra import no_spectra_reason, plot_spectra, spectra

FIGURES = {"curves": "curves.png", "spectra": "spectra.png", "grad_cosine": "grad_cosine.png"}


def build_report(run_dirs: list[Path], out: Path | None = None) -> dict[str, Any]:
    """Write the report of `run_dirs`; returns the files written and the numbers behind them."""
    if not run_dirs:
        raise UsageError("igm report needs at least one run directory")
    runs = [load_run(Path(p)) for p in run_dirs]
    names = [r.path.resolve() for r in runs]
    if len(set(names)) != len(names):
        raise UsageError("the same run is given twice")
    tables = [table3(r) for r in runs]
    spectra_rows = [spectra(r) for r in runs]
    cosine_rows = [histograms(r) for r in runs]
    pngs = {
        "curves": _render(lambda p: plot_curves(runs, p)),
        "spectra": _render(lambda p: plot_spectra(runs, spectra_rows, p)),
        "grad_cosine": _render(lambda p: plot_cosine(runs, cosine_rows, p)),
    }
    parts = {
        "files": FIGURES,
        "table3": table3_markdown(runs, tables),
        "spectra": [spectra_markdown(r, rows) for r, rows in zip(runs, spectra_rows, strict=True)],
        "cosine": [cosine_markdown(r, rows) for r, rows in zip(runs, cosine_rows, strict=True)],
    }
    markdown = report_markdown(runs, parts)
    files = []
    for directory in [Path(out)] if out is not None else [r.path / "report" for r in runs]:
        directory.mkdir(parents=True, exist_ok=True)
        for kind, name in FIGURES.items():
            write_atomic(directory / name, pngs[kind])
            files.append(str(directory / name))
        write_atomic(directory / "report.md", markdown)
        files.append(str(directory / "report.md"))
    return {
        "files": files,
        "runs": [_run_summary(*row) for row in zip(runs, tables, spectra_rows, cosine_rows, strict=True)],
    }


def _render(draw: Callable[[io.BytesIO], None]) -> bytes:
    """A figure as PNG bytes (written atomically afterwards, into every output directory)."""
    buffer = io.BytesIO()
    draw(buffer)
    return buffer.getvalue()


def _run_summary(run: RunData, stages: list[dict], layers: list[dict], cosine: list[dict]) -> dict[str, Any]:
    """What --json shows per run: Table 3, spectra summaries, histograms (no raw spectra)."""
    return {
        "run": str(run.path),
        "name": run.name,
        "label": run.label,
        "method": run.method,
        "checkpoint": str(run.checkpoint) if run.checkpoint else None,
        "table3": stages,
        "spectra": [
            {k: ({s: v for s, v in r[k].items() if s != "values"} if k in ("T", "cov") else r[k]) for k in r}
            for r in layers
        ],
        "spectra_note": no_spectra_reason(run) if not layers else None,
        "grad_cos_hist": [{k: v for k, v in r.items() if k != "pooled"} for r in cosine],
        "grad_cos_note": no_histogram_reason(run) if not cosine else None,
    }


__all__ = ["build_report"]
