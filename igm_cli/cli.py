"""The `igm` command line: parse, call one library function, render, map errors to exit codes.

Heavy imports (torch and the engine) happen inside the commands so `igm --help` is fast.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from . import console
from .errors import EXIT_INTERRUPTED, IgmError, UsageError

app = typer.Typer(
    help="Train and study multimodal classifiers with IGM (flat gradient modification + SAM).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
presets_app = typer.Typer(help="List and show the shipped presets.", no_args_is_help=True)
app.add_typer(presets_app, name="presets")

T = TypeVar("T")

PresetOpt = Annotated[str, typer.Option("--preset", "-p", help="Shipped preset name or path to a YAML file.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", "-s", help="Override a preset key: dotted.key=value (repeatable; 0/false/empty work)."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print exactly one JSON document on stdout.")]
DeviceOpt = Annotated[str | None, typer.Option(help="torch device: cpu, cuda, cuda:N or auto.")]
DataOpt = Annotated[
    Path | None, typer.Option("--data", help="Prepared data directory (default data/<dataset>).")
]


def _guard(action: Callable[[], T]) -> T:
    """Run a command body; IgmError → one line + its exit code; Ctrl-C → 130."""
    try:
        return action()
    except IgmError as e:
        console.error(str(e))
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:
        console.error("interrupted; a resumable last.safetensors was written (igm train --resume ...)")
        raise typer.Exit(EXIT_INTERRUPTED) from None


@app.command()
def train(
    preset: PresetOpt = "mfeat",
    set_: SetOpt = None,
    method: Annotated[
        str | None, typer.Option(help="igm, joint or unimodal (same as --set method=...).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (same as --set seed=...).")] = None,
    device: DeviceOpt = None,
    data: DataOpt = None,
    runs_dir: Annotated[Path, typer.Option(help="Parent directory of run directories.")] = Path("runs"),
    resume: Annotated[
        str | None, typer.Option(help="Continue a run: its directory, its last.safetensors, or auto.")
    ] = None,
    json_: JsonOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or per-epoch lines.")] = False,
) -> None:
    """Train a model (IGM on the embedded dataset by default) and print a results table."""

    def run() -> dict[str, Any]:
        from .pipeline import train as train_run
        from .presets import resolve_preset

        if resume and (set_ or method or seed is not None):
            raise UsageError("--resume continues a run with its stored config; drop --set/--method/--seed")
        resolved = resolve_preset(preset, set_ or [], method=method, seed=seed)
        with console.TrainingDisplay(quiet=quiet) as on_event:
            return train_run(
                resolved if not resume or resume == "auto" else None,
                data_dir=data,
                runs_dir=runs_dir,
                resume=resume,
                device=device,
                on_event=on_event,
            )

    results = _guard(run)
    console.emit_json(results) if json_ else console.results_table(results)


@app.command("eval")
def eval_(
    checkpoint: Annotated[
        Path, typer.Argument(help="A .safetensors checkpoint (or a run directory: its best).")
    ],
    split: Annotated[str, typer.Option(help="val or test.")] = "test",
    fusion: Annotated[str | None, typer.Option(help="mean or entropy (default: the preset's).")] = None,
    data: DataOpt = None,
    device: DeviceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Evaluate a checkpoint: every branch and the fused model, rebuilt from the file alone."""

    def run() -> dict[str, Any]:
        from .evaluation import evaluate_checkpoint

        if split not in ("train", "val", "test"):
            raise UsageError(f"--split must be train, val or test (got {split!r})")
        if fusion not in (None, "mean", "entropy"):
            raise UsageError(f"--fusion must be mean or entropy (got {fusion!r})")
        return evaluate_checkpoint(
            checkpoint, split=split, fusion=fusion, data_dir=data, device=device or "cpu"
        )

    result = _guard(run)
    console.emit_json(result) if json_ else console.eval_table(result)


@app.command()
def prepare(
    dataset: Annotated[str, typer.Argument(help="Dataset name (see `igm presets list`).")],
    source: Annotated[
        Path | None, typer.Option(help="The raw download (unused for the embedded dataset).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Output directory (default data/<dataset>).")] = None,
    verify: Annotated[
        Path | None, typer.Option(help="Re-check a prepared directory against its manifest.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if the output is already prepared.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Turn a raw dataset into the prepared format (manifest.json + memory-mappable .npy)."""

    def run() -> dict[str, Any]:
        from .preparation import prepare_dataset, verify_dataset

        if verify is not None:
            return verify_dataset(verify)
        return prepare_dataset(dataset, source=source, out=out or Path("data") / dataset, force=force)

    result = _guard(run)
    if json_:
        console.emit_json(result)
    else:
        console.info(result["message"])
    if result.get("problems"):
        raise typer.Exit(3)


@presets_app.command("list")
def presets_list(json_: JsonOpt = False) -> None:
    """List the shipped presets."""

    def run() -> list[dict[str, str]]:
        from .presets import resolve_preset, shipped_presets

        rows = []
        for name in sorted(shipped_presets()):
            p = resolve_preset(name)
            rows.append(
                {"name": name, "dataset": p.dataset, "method": p.method, "description": p.description}
            )
        return rows

    rows = _guard(run)
    console.emit_json(rows) if json_ else console.presets_table(rows)


@presets_app.command("show")
def presets_show(
    preset: Annotated[str, typer.Argument(help="Shipped name or path.")],
    set_: SetOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Print a preset fully resolved (defaults filled, --set applied) as YAML on stdout."""

    def run():
        from .presets import resolve_preset

        return resolve_preset(preset, set_ or [])

    resolved = _guard(run)
    if json_:
        console.emit_json(resolved.model_dump(mode="json"))
    else:
        from .presets import preset_to_yaml

        typer.echo(preset_to_yaml(resolved), nl=False)
