"""The `igm` command line: parse, call one library function, render, map errors to exit codes.

Heavy imports (torch and the engine) happen inside the commands, after the preset, the
device and the paths are checked, so `igm --help` and a mistyped preset are fast.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import typer
from typer.core import TyperArgument, TyperGroup

from . import __version__, console
from .errors import EXIT_INTERRUPTED, IgmError, Interrupted, UsageError
from .preset_schema import Preset

MethodName = Preset.model_fields["method"].annotation  # the schema's Literal: choices in --help
FusionName = Preset.model_fields["fusion"].annotation
SplitName = Literal["train", "val", "test"]


class IgmGroup(TyperGroup):
    """The app's group: a usage error (`--seed abc`, an unknown option) is one line, exit 2."""

    def main(self, args: Sequence[str] | None = None, *pos: Any, standalone_mode: bool = True, **kw: Any):
        """Run the CLI; click's errors become one line (and a JSON document under --json)."""
        argv = list(sys.argv[1:] if args is None else args)
        try:
            code = super().main(argv, *pos, standalone_mode=False, **kw)
        except typer.Abort:
            console.error("aborted")
            code = 1
        except typer.TyperException as e:  # click's errors: bad value, unknown option, missing argument
            if not hasattr(e, "format_message"):
                raise
            code = _usage_failure(e, argv)
        if standalone_mode:
            sys.exit(code if isinstance(code, int) else 0)
        return code


def _usage_failure(e: Exception, argv: list[str]) -> int:
    ctx = getattr(e, "ctx", None)
    where = f"{ctx.command_path}: " if ctx is not None else ""
    hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
    text = e.format_message().replace("Value error, ", "")  # type: ignore[attr-defined]
    message = f"{where}{text}{hint}"
    code = getattr(e, "exit_code", 2)
    console.error(message)
    if "--json" in argv:
        console.error_json(message, code, "usage")
    return code


def _argument_type(self: TyperArgument, ctx: Any) -> str | None:
    """`checkpoints...` already says "several paths": drop typer's `<list[Path]>` beside it."""
    return None if self.nargs != 1 else TyperArgument.display_type(self, ctx)


TyperArgument.display_type_rich = _argument_type  # type: ignore[method-assign]

app = typer.Typer(
    cls=IgmGroup,
    help="Train and study multimodal classifiers with IGM (flat gradient modification + SAM).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,  # plain help: no type noise such as <bool>, choices shown as a|b|c
)
presets_app = typer.Typer(help="List and show the shipped presets.", no_args_is_help=True)
app.add_typer(presets_app, name="presets")
convert_app = typer.Typer(help="Convert public pretrained weights to safetensors.", no_args_is_help=True)
app.add_typer(convert_app, name="convert")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"igm {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = None,
) -> None:
    """Train and study multimodal classifiers with IGM (flat gradient modification + SAM)."""


T = TypeVar("T")


def _check_device_syntax(value: str | None) -> str | None:
    import re

    from .devices import DEVICE_PATTERN

    if value is not None and not re.match(DEVICE_PATTERN, value):
        raise typer.BadParameter(f"{value!r}: expected cpu, cuda, cuda:N, mps or auto")
    return value


PresetOpt = Annotated[
    str,
    typer.Option("--preset", "-p", metavar="NAME|PATH", help="Shipped preset name or path to a YAML file."),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        metavar="KEY=VALUE",
        help="Override a preset key: dotted.key=value (repeatable; 0/false/empty work).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print exactly one JSON document on stdout.")]
DeviceOpt = Annotated[
    str | None,
    typer.Option(
        metavar="cpu|cuda|cuda:N|mps|auto",
        callback=_check_device_syntax,
        help="torch device (auto: cuda if any).",
    ),
]
ThreadsOpt = Annotated[
    int | None,
    typer.Option(
        min=1, help="CPU threads of torch (default: 1 below 500k parameters, else torch's default)."
    ),
]
LoggerOpt = Annotated[
    Literal["none", "tensorboard"] | None,
    typer.Option(
        help="Also log to TensorBoard event files in <run>/tensorboard/ (needs igm-cli[tensorboard]; "
        "a resume keeps the run's logger)."
    ),
]
DataOpt = Annotated[
    Path | None,
    typer.Option("--data", metavar="DIR", help="Prepared data directory (default data/<dataset>)."),
]


def _guard(action: Callable[[], T], interrupted: str = "", *, json_: bool = False) -> T:
    """Run a command body; IgmError → one line + its exit code; Ctrl-C → `interrupted` + 130.

    Under `--json` the failure is also one JSON document on stdout, so scripts can parse it.
    """
    previous = _sigterm_as_interrupt()
    try:
        return action()
    except IgmError as e:
        if getattr(e, "quiet", False):  # another rank of a torchrun job prints this failure
            raise typer.Exit(e.exit_code) from None
        message, code, kind = str(e), e.exit_code, e.kind
    except OSError as e:  # a full disk or a permission problem while writing: name it, no traceback
        message, code, kind = f"{e.strerror or e}{f': {e.filename}' if e.filename else ''}", 1, "os"
    except KeyboardInterrupt as e:
        if getattr(e, "quiet", False):  # a torchrun rank other than 0: rank 0 says what was saved
            raise typer.Exit(EXIT_INTERRUPTED) from None
        message = str(e) if isinstance(e, Interrupted) else interrupted or "interrupted"
        code, kind = EXIT_INTERRUPTED, "interrupted"
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    console.error(message)
    if json_:
        console.error_json(message, code, kind)
    raise typer.Exit(code)


def _sigterm_as_interrupt():
    """SIGTERM (a scheduler's preemption) behaves like Ctrl-C; returns the previous handler."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, handler)


def _check_paths(data: Path | None = None, resume: str | None = None) -> None:
    """Paths given on the command line must exist before anything heavy starts."""
    from .errors import CheckpointError, DataError

    if data is not None and not (Path(data) / "manifest.json").is_file():
        raise DataError(f"no prepared data at {data} (no manifest.json); run `igm prepare` first")
    if resume not in (None, "auto") and not Path(resume).exists():
        raise CheckpointError(f"checkpoint not found: {resume}")


@app.command()
def train(
    preset: PresetOpt = "mfeat",
    set_: SetOpt = None,
    method: Annotated[
        MethodName | None, typer.Option(help="Training method (same as --set method=...).")
    ] = None,
    seed: Annotated[int | None, typer.Option(metavar="N", help="Seed (same as --set seed=...).")] = None,
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
    data: DataOpt = None,
    runs_dir: Annotated[
        Path, typer.Option(metavar="DIR", help="Parent directory of run directories.")
    ] = Path("runs"),
    resume: Annotated[
        str | None,
        typer.Option(
            metavar="RUN|FILE|auto",
            help="Continue a run: its directory, its last.safetensors, or auto (the newest run of "
            "the preset: resumed, or shown when finished; a new run when there is none).",
        ),
    ] = None,
    logger: LoggerOpt = None,
    json_: JsonOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or per-epoch lines.")] = False,
    nproc: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            min=1,
            help="Train on N local processes (DDP), launched through torch.distributed.run: the same "
            "as torchrun --standalone --nproc-per-node N -m igm_cli train ...",
        ),
    ] = None,
) -> None:
    """Train a model (IGM on the embedded dataset by default) and print a results table."""
    if nproc is not None:
        _launch(nproc, locals())
    rank = _worker_rank()  # under torchrun only rank 0 prints (and writes)

    def run() -> dict[str, Any]:
        from .devices import check_device
        from .presets import resolve_preset
        from .tracking import check_logger

        overridden = bool(set_ or method or seed is not None)
        if resume and resume != "auto" and overridden:
            raise UsageError("--resume continues a run with its stored config; drop --set/--method/--seed")
        resolved = resolve_preset(preset, set_ or [], method=method, seed=seed)
        check_device(device or (resolved.device if not resume or resume == "auto" else "cpu"))
        _check_paths(data, resume)
        check_logger(logger)
        from .pipeline import train as train_run  # heavy: only once the inputs are known to be good

        with console.TrainingDisplay(quiet=quiet or rank > 0) as display:
            on_event = display if rank == 0 else None
            return train_run(
                resolved if not resume or resume == "auto" else None,
                data_dir=data,
                runs_dir=runs_dir,
                resume=resume,
                device=device,
                threads=threads,
                resume_same_settings=overridden,
                on_event=on_event,
                logger=logger,
                source=preset,
            )

    results = _guard(run, json_=json_)
    if rank == 0:
        console.emit_json(results) if json_ else console.results_table(results)


def _worker_rank() -> int:
    """This process's rank under torchrun (0 otherwise); read from the environment, no torch import."""
    import os

    return int(os.environ.get("RANK", "0")) if "WORLD_SIZE" in os.environ else 0


def _launch(nproc: int, options: dict[str, Any]) -> None:
    """`igm train --nproc N`: relaunch this command on N ranks; exit with the job's code."""
    named = ("preset", "method", "seed", "device", "threads", "data", "runs_dir", "resume", "logger")
    argv = [
        arg
        for key in named
        if options[key] is not None
        for arg in ("--" + key.replace("_", "-"), str(options[key]))
    ]
    argv += [arg for item in options["set_"] or [] for arg in ("--set", item)]
    argv += ["--json"] * options["json_"] + ["--quiet"] * options["quiet"]
    from .distributed.launch import launch_train

    raise typer.Exit(launch_train(nproc, argv, console.error))


@app.command("eval")
def eval_(
    checkpoints: Annotated[
        list[Path],
        typer.Argument(help="Checkpoints (a run directory means its best); each with its own data."),
    ],
    split: Annotated[SplitName, typer.Option(help="The split to score.")] = "test",
    fusion: Annotated[
        FusionName | None, typer.Option(help="Late fusion of the branches (default: the method's).")
    ] = None,
    robustness: Annotated[
        bool,
        typer.Option(
            "--robustness",
            help="Curves per modality: fused accuracy when it is missing or noisy (r, σ = 0…1).",
        ),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Write eval.json and the PNGs here (with --robustness the default is "
            "robustness-<run>-<checkpoint>)."
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Seed of the missing-sample masks, the noise and sampled Shapley.")
    ] = 0,
    data: DataOpt = None,
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Evaluate checkpoints: every branch, the fused model and the imbalance measures, from the file alone.

    Per checkpoint: metrics per branch and fused, each modality's Shapley share of the fused
    accuracy, the fused-vs-best-branch gap, per-class accuracy and the confusion matrix.
    --robustness adds the missing/noisy curves of every modality and robustness.png.
    """

    def run() -> dict[str, Any]:
        from .devices import check_device

        check_device(device or "cpu")
        _check_paths(data)
        from .analysis.runner import evaluate_many

        return evaluate_many(
            checkpoints, split=split, fusion=fusion, data_dir=data, device=device or "cpu", threads=threads,
            with_robustness=robustness, out=out, seed=seed,
        )  # fmt: skip

    result = _guard(run, json_=json_)
    console.emit_json(result) if json_ else console.eval_report(result)


@app.command()
def prepare(
    dataset: Annotated[
        str,
        typer.Argument(help="Dataset: mfeat, crema-d, kinetics-sounds, nvgesture, twitter2015 or sarcasm."),
    ],
    source: Annotated[
        Path | None, typer.Option(help="The raw download (unused for the embedded dataset).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Output directory (default data/<dataset>).")] = None,
    verify: Annotated[
        Path | None, typer.Option(help="Re-check a prepared directory against its manifest.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if the output is already prepared.")] = False,
    jobs: Annotated[int, typer.Option(help="Worker processes decoding clips.")] = 1,
    strict: Annotated[bool, typer.Option(help="Missing or corrupt media are an error (exit 3).")] = False,
    frames: Annotated[
        int | None,
        typer.Option(help="Frames per clip (default: crema-d 1, kinetics-sounds 3, nvgesture 80)."),
    ] = None,
    fps: Annotated[float | None, typer.Option(help="Rate frames are decoded at (default 1).")] = None,
    frame_size: Annotated[
        int | None, typer.Option(help="Frame side in pixels (default 224; nvgesture 256).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of derived splits (default 42).")] = None,
    split_file: Annotated[
        Path | None, typer.Option(help="crema-d: a published `id,EMO` list used as the test split.")
    ] = None,
    speaker_independent: Annotated[
        bool, typer.Option(help="crema-d: hold out whole actors for test and validation.")
    ] = False,
    annotations: Annotated[
        Path | None, typer.Option(help="kinetics-sounds: folder of K400 CSVs (default SOURCE/annotations).")
    ] = None,
    lists: Annotated[
        Path | None,
        typer.Option(help="nvgesture: folder of the official .lst files (default: under SOURCE)."),
    ] = None,
    flow: Annotated[
        str | None, typer.Option(help="nvgesture: optical flow, tvl1 (default) or farneback.")
    ] = None,
    images: Annotated[
        Path | None, typer.Option(help="twitter2015/sarcasm: the image folder (default: beside the text)")
    ] = None,
    tokenizer: Annotated[
        str | None, typer.Option(help="twitter2015/sarcasm: tokenizer folder or hub id (bert-base-uncased).")
    ] = None,
    max_tokens: Annotated[
        int | None, typer.Option(help="twitter2015/sarcasm: tokens per text, padded and truncated (64).")
    ] = None,
    image_size: Annotated[
        int | None, typer.Option(help="twitter2015/sarcasm: stored image side (centre crop; 256)")
    ] = None,
    target: Annotated[
        str | None, typer.Option(help="twitter2015: $T$ becomes the target: substitute, mask or append.")
    ] = None,
    label: Annotated[
        str | None, typer.Option(help="sarcasm: valid/test label: human (default) or hashtag.")
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Turn a raw dataset into the prepared format (manifest.json + memory-mappable .npy)."""

    def run() -> dict[str, Any]:
        from .data.base import PrepareOptions
        from .preparation import prepare_dataset, verify_dataset

        if verify is not None:
            return verify_dataset(verify, dataset)
        options = PrepareOptions(
            jobs=jobs, strict=strict, frames=frames, fps=fps, frame_size=frame_size, seed=seed,
            split_file=split_file, speaker_independent=speaker_independent, annotations=annotations,
            lists=lists, flow=flow, images=images, tokenizer=tokenizer, max_tokens=max_tokens,
            image_size=image_size, target=target, label=label, progress=console.info,
        )  # fmt: skip
        return prepare_dataset(
            dataset, source=source, out=out or Path("data") / dataset, force=force, options=options
        )

    result = _guard(run, interrupted="interrupted; run the same command again to resume", json_=json_)
    if json_:
        console.emit_json(result)
    else:
        console.info(result["message"])
    if result.get("problems"):
        raise typer.Exit(3)


@convert_app.command("i3d")
def convert_i3d(
    source: Annotated[
        Path, typer.Argument(help="A public pytorch-i3d state dict (rgb_imagenet.pt, flow_imagenet.pt).")
    ],
    out: Annotated[
        Path, typer.Argument(help="The .safetensors file to write (point encoder.weights at it).")
    ],
    json_: JsonOpt = False,
) -> None:
    """Convert I3D weights to safetensors once; a file that is not a plain state dict is refused (exit 3)."""

    def run() -> dict[str, Any]:
        from .models.i3d_weights import convert_i3d as convert

        return convert(source, out)

    result = _guard(run)
    console.emit_json(result) if json_ else console.info(result["message"])


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

    rows = _guard(run, json_=json_)
    console.emit_json(rows) if json_ else console.presets_table(rows)


@presets_app.command("show")
def presets_show(
    preset: Annotated[str, typer.Argument(help="Shipped name or path.")],
    set_: SetOpt = None,
    all_: Annotated[bool, typer.Option("--all", help="Every key, also those the method ignores.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Print a preset resolved (defaults filled, --set applied), only the keys its method reads."""

    def run():
        from .methods import method_view
        from .presets import resolve_preset

        resolved = resolve_preset(preset, set_ or [])
        return resolved.model_dump(mode="json") if all_ else method_view(resolved)

    view = _guard(run, json_=json_)
    if json_:
        console.emit_json(view)
    else:
        import yaml

        typer.echo(yaml.safe_dump(view, sort_keys=False), nl=False)


# ---------------------------------------------------------------- igm sweep

GridOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--grid",
        "-g",
        metavar="KEY=V1,V2,...",
        help="A swept key and its values: key.path=v1,v2,... (repeatable: cartesian product; "
        "values are YAML like --set: 0, false, 1e-3, [1,1]).",
    ),
]
RangeOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--range",
        metavar="KEY=LOW:HIGH[:log]",
        help="A random-search key: key.path=low:high or low:high:log (repeatable; integers when "
        "both ends are integers). Needs --random N.",
    ),
]


@app.command()
def sweep(
    dirs: Annotated[
        list[Path] | None,
        typer.Argument(help="With --collect: the sweep directories (shards) to merge."),
    ] = None,
    preset: PresetOpt = "mfeat",
    set_: SetOpt = None,
    grid: GridOpt = None,
    random_n: Annotated[
        int | None, typer.Option("--random", help="Draw N random settings from the --range keys.")
    ] = None,
    range_: RangeOpt = None,
    random_seed: Annotated[int, typer.Option(help="Seed of the random draws (kept in sweep.json).")] = 0,
    seeds: Annotated[
        str | None, typer.Option(help="Training seeds of every setting: 0,1,2 (default: the preset's seed).")
    ] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Trials run at once, in parallel processes.")] = 1,
    out: Annotated[
        Path | None, typer.Option(help="Sweep directory (default sweeps/<preset>-<timestamp>).")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Skip trials of --out that finished ok; run the rest.")
    ] = False,
    shard: Annotated[
        str | None, typer.Option(help="Run only shard i/n of the trials, 0-based (0/4 ... 3/4).")
    ] = None,
    collect: Annotated[
        bool, typer.Option("--collect", help="Merge the sweep directories given as arguments and summarize.")
    ] = False,
    metric: Annotated[
        str, typer.Option(help="Metric of the plot and the highlighted column: split.branch.metric.")
    ] = "val.fused.accuracy",
    data: DataOpt = None,
    device: DeviceOpt = None,
    logger: LoggerOpt = None,
    json_: JsonOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only failed trials and the summary.")] = False,
) -> None:
    """Sweep preset keys × seeds (grid or random search): summary table, CSV/JSON and a plot.

    Exit 0 when every trial finished ok, 1 when any failed (the others still run), 2 on a bad
    grid or preset (checked before anything runs), 130 when interrupted (resume with --resume).
    """

    def run() -> dict[str, Any]:
        from .devices import check_device
        from .sweep import collect_sweeps, plan_sweep, run_sweep
        from .sweep.grid import parse_seeds
        from .tracking import check_logger

        if collect and (grid or range_ or random_n or seeds or shard or resume or set_):
            raise UsageError("--collect merges finished sweeps; it takes directories, --out and --metric")
        if collect:
            return collect_sweeps(dirs or [], out, metric=metric)
        if dirs:
            raise UsageError(f"unexpected argument {dirs[0]} (directories are for --collect)")
        seed_list = parse_seeds(seeds) if seeds is not None else None
        plan = plan_sweep(preset, set_ or [], grid or [], range_ or [], random_n, random_seed, seed_list)
        for name in {device} if device else {s.preset["device"] for s in plan.settings}:
            check_device(name)  # once, before any trial starts
        _check_paths(data)
        check_logger(logger)
        with console.SweepDisplay(quiet=quiet) as on_event:
            return run_sweep(
                plan, out, jobs=jobs, resume=resume, shard=shard, data_dir=data, device=device, metric=metric,
                on_event=on_event, logger=logger,
            )  # fmt: skip

    report = _guard(run, json_=json_)
    console.emit_json(report) if json_ else console.sweep_report(report)
    if report["exit_code"]:
        raise typer.Exit(report["exit_code"])


# ---------------------------------------------------------------- igm landscape


@app.command()
def landscape(
    checkpoints: Annotated[
        list[Path],
        typer.Argument(help="Checkpoints of one architecture (a run directory means its best)."),
    ],
    split: Annotated[SplitName, typer.Option(help="The split the loss is computed on.")] = "train",
    modality: Annotated[
        str, typer.Option(help="A branch (perturb it, score its head) or fused (all branches, fused loss).")
    ] = "fused",
    grid: Annotated[int, typer.Option(help="Points per axis (odd: the centre is on the grid).")] = 25,
    span: Annotated[float, typer.Option(help="Coefficients α, β run over [-span, span].")] = 1.0,
    dims: Annotated[int, typer.Option(help="1: a curve along one direction; 2: a surface.")] = 2,
    batches: Annotated[
        int, typer.Option(help="Evaluation batches in the fixed seeded subset (0: the whole split).")
    ] = 8,
    seed: Annotated[int, typer.Option(help="Seed of the directions and of the subset.")] = 0,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Output directory (default landscape-<run>-<checkpoint>-<modality>, a new one when that "
            "holds other settings); rerun to resume."
        ),
    ] = None,
    data: DataOpt = None,
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Loss landscapes (Li et al. 2018) of checkpoints on identical filter-normalised directions.

    Writes surfaces.safetensors, landscape.json (centre loss, loss rise within r, top Hessian
    eigenvalue, which checkpoint is flatter), contour.png and surface.png to --out.
    """

    def run() -> dict[str, Any]:
        from .devices import check_device

        check_device(device or "cpu")
        _check_paths(data)
        from .landscape import LandscapeSpec, compute_landscape

        spec = LandscapeSpec(split, modality, grid, span, dims, batches, seed)
        with console.LandscapeDisplay() as on_event:
            return compute_landscape(
                checkpoints, spec, out=out, data_dir=data, device=device or "cpu", threads=threads,
                on_event=on_event,
            )  # fmt: skip

    result = _guard(
        run,
        interrupted="interrupted; finished grid points are saved: rerun the same command to continue",
        json_=json_,
    )
    console.emit_json(result) if json_ else console.landscape_table(result)


# ---------------------------------------------------------------- igm report


@app.command()
def report(
    runs: Annotated[list[Path], typer.Argument(help="Run directories (several: side by side).")],
    out: Annotated[
        Path | None,
        typer.Option(help="Write the report here instead of into each run's report/ directory."),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """The paper's figures for runs: training curves + Table 3, T/Ȳ spectra, gradient-cosine histogram.

    Writes curves.png, spectra.png, grad_cosine.png and report.md (the figures with captions
    and tables) into RUN/report/ of every run given, or into --out.
    """

    def run() -> dict[str, Any]:
        from .report import build_report

        return build_report(runs, out=out)

    result = _guard(run, json_=json_)
    console.emit_json(result) if json_ else console.report_summary(result)


# ---------------------------------------------------------------- igm runs


@app.command()
def runs(
    runs_dir: Annotated[Path, typer.Argument(metavar="[DIR]", help="Directory of run directories.")] = Path(
        "runs"
    ),
    sort: Annotated[
        str | None,
        typer.Option(
            metavar="[-]KEY", help="Sort by a column (name, val, test, seconds, ...); -KEY descending."
        ),
    ] = None,
    where: Annotated[
        list[str] | None,
        typer.Option(
            metavar="KEY=VALUE",
            help="Keep runs whose KEY equals VALUE (repeatable, all must hold): method=igm, status=failed, "
            "overrides.gm.tau=0.1, config.sam.rho=0.",
        ),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """List runs: method, overrides, selected epoch, accuracy, seconds, status (finished/resumable/failed)."""

    def run() -> list[dict[str, Any]]:
        from .run_table import list_runs

        return list_runs(runs_dir, where or [], sort)

    rows = _guard(run, json_=json_)
    console.emit_json(rows) if json_ else console.runs_table(rows, runs_dir)
