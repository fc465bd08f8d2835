"""Setup and orchestration of a training run: preset + data → objects → Trainer → results.

This is the library behind `igm train`; it builds what the Trainer is given and owns the
run directory (config.yaml, metrics.jsonl, checkpoints, results.json).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from .checkpoint import (
    load_checkpoint,
    load_optimizer_state,
    optimizer_tensors,
    restore_rng,
    rng_tensors,
    save_checkpoint,
)
from .data import get_dataset
from .data.prepared import PreparedDataset
from .deviations import deviations
from .distributed.failure import is_communication_error, rank_errors
from .distributed.setup import data_parallel, distributed_record
from .distributed.world import env_rank, join_world
from .engine.batches import SplitBatches
from .engine.evaluate import evaluate_model
from .engine.flat_projector import head_pairs
from .engine.optim import build_optimizer, learning_rate
from .engine.sam import SamStep
from .engine.trainer import Trainer, TrainerConfig, TrainState, state_from_dict, state_to_dict
from .errors import CheckpointError, DataError, DivergedError, IgmError, Interrupted, PresetError, UsageError
from .methods import Method, get_method
from .models.clip_input import clip_problems
from .models.fusion_model import encoder_configs
from .presets import Modality, Preset, preset_from_json, preset_to_yaml
from .run_info import clear_failed, mark_failed, preset_overrides, recorded_logger, write_run_info
from .runs import RunLock, append_jsonl, auto_resume_target, create_run_dir, trim_metrics, write_text_atomic
from .threads import use_threads
from .tracking import RunLogger, check_logger, open_logger

Event = Callable[[str, dict[str, Any]], None]


# ---------------------------------------------------------------- setup helpers


def resolve_device(name: str) -> torch.device:
    """`auto` → cuda when available; asking for cuda without one is a usage error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"invalid device {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name} requested but CUDA is not available")
    return device


def open_data(preset: Preset, data_dir: Path | None) -> PreparedDataset:
    """The prepared data for a preset; the embedded dataset needs no `igm prepare`."""
    if data_dir is not None:
        data = PreparedDataset.open(data_dir)
    elif (Path("data") / preset.dataset / "manifest.json").is_file():
        data = PreparedDataset.open(Path("data") / preset.dataset)
    elif hasattr(module := get_dataset(preset.dataset), "load_in_memory"):
        unknown = [m for m in preset.modality_names if m not in module.MODALITIES]
        if unknown:
            have = ", ".join(module.MODALITIES)
            raise PresetError(
                f"modalities: {', '.join(unknown)} not in dataset {preset.dataset} (have {have})"
            )
        data = module.load_in_memory(tuple(preset.modality_names))
    else:
        raise DataError(f"no prepared data at data/{preset.dataset}; run `igm prepare {preset.dataset}`")
    check_compatible(preset, data)
    return data


STORED_RANK = {  # per-sample array rank per input kind
    "vector": (1,),
    "spectrogram": (2,),
    "frames": (4,),
    "clip": (4,),
    "tokens": (2,),
    "image": (3,),
}


def check_compatible(preset: Preset, data: PreparedDataset) -> None:
    """The preset must match the data: dataset, classes, modalities and their array shapes."""
    manifest = data.manifest
    if manifest.dataset != preset.dataset:
        raise PresetError(f"dataset: preset says {preset.dataset!r} but the data is {manifest.dataset!r}")
    if preset.num_classes is not None and preset.num_classes != len(manifest.classes):
        raise PresetError(
            f"num_classes: preset says {preset.num_classes}, the data has {len(manifest.classes)}"
        )
    missing = [m for m in preset.modality_names if m not in manifest.modalities]
    if missing:
        have = ", ".join(manifest.modalities)
        raise PresetError(f"modalities: {', '.join(missing)} not in the prepared data (have {have})")
    for m in preset.modalities:
        shape = manifest.modalities[m.name].shape
        if m.input.kind != "vector" and len(shape) not in STORED_RANK[m.input.kind]:
            raise PresetError(
                f"modalities.{m.name}.input.kind: {m.input.kind} needs per-sample rank "
                f"{STORED_RANK[m.input.kind][0]}, the data's {m.name} has shape {shape}"
            )
        if m.input.kind == "clip":
            problems = clip_problems(m.name, m.input, shape, getattr(m.encoder, "min_frames", None))
            if problems:
                raise PresetError("; ".join(problems))
        check_text_compatible(m, shape, manifest.preprocessing.get("text", {}))


def check_text_compatible(m: Modality, shape: list[int], text: dict[str, Any]) -> None:
    """Token length and vocabulary of a tokens modality against the manifest's tokenizer record."""
    if m.input.kind != "tokens":
        return
    key = f"modalities.{m.name}"
    if m.input.tokens is not None and m.input.tokens != shape[-1]:
        raise PresetError(
            f"{key}.input.tokens: preset expects {m.input.tokens} tokens, the data stores {shape[-1]} "
            "(igm prepare --max-tokens)"
        )
    vocab = text.get("vocab_size")
    if getattr(m.encoder, "weights", "") is None and vocab and vocab > m.encoder.vocab_size:
        raise PresetError(
            f"{key}.encoder.vocab_size: {m.encoder.vocab_size} < the data's tokenizer vocabulary ({vocab})"
        )


def model_info(preset: Preset, data: PreparedDataset, data_dir: Path | None) -> dict[str, Any]:
    """What, besides the preset, is needed to rebuild the model from a checkpoint alone."""
    return {
        "input_shapes": {m: data.manifest.modalities[m].shape for m in preset.modality_names},
        "classes": data.manifest.classes,
        "dataset": data.manifest.dataset,
        "data_dir": str(Path(data_dir).resolve()) if data_dir else None,
    }


def trained_modalities(preset: Preset) -> list[str]:
    """Branches the run builds: a unimodal run builds only its one branch."""
    return get_method(preset).trained_modalities()


def build_for(
    preset: Preset, info: dict[str, Any], device: torch.device, pretrained: bool = True
) -> torch.nn.Module:
    """Seed, then build the method's model (initialisation is reproducible from the seed).

    `pretrained=False` when a checkpoint's weights are loaded next: I3D weight files
    (`encoder.weights`) are then not read, so such a checkpoint needs nothing but itself.
    """
    torch.manual_seed(preset.seed)
    if not pretrained:
        preset = preset.model_copy(update={"modalities": [_without_weights(m) for m in preset.modalities]})
    method = get_method(preset)
    configs = info.get("encoder_configs")
    if device.type == "meta":  # shapes only, nothing allocated: how a checkpoint's model is sized
        with device:
            return method.build_model(info["input_shapes"], len(info["classes"]), configs)
    return method.build_model(info["input_shapes"], len(info["classes"]), configs).to(device)


def _without_weights(modality):
    """Drop an I3D weight file (its architecture, unlike BERT's or ResNet-50's, never comes from it)."""
    if modality.encoder.name != "i3d" or modality.encoder.weights is None:
        return modality
    return modality.model_copy(update={"encoder": modality.encoder.model_copy(update={"weights": None})})


# ---------------------------------------------------------------- checkpoint sink


class RunSink:
    """Writes the trainer's checkpoints and records into a run directory."""

    def __init__(
        self, run_dir: Path, model, method: Method, preset: Preset, info: dict[str, Any], write: bool = True
    ):
        self.run_dir, self.model, self.method, self.write = run_dir, model, method, write
        self.preset_json, self.info = preset.model_dump(mode="json"), info
        self.last_state: dict[str, Any] | None = None  # the state last.safetensors holds
        self.logger: RunLogger | None = None  # --logger: fed every record metrics.jsonl gets

    def save(self, kind: str, state: TrainState, optimizer, extra: dict[str, Any] | None = None) -> None:
        """Write best.safetensors (weights, T) or last.safetensors (+ optimizer, RNG)."""
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:  # never replace a good checkpoint by a diverged model
            raise DivergedError(
                f"training diverged: {len(bad)} weight tensors are not finite (first {bad[0]}); "
                f"{kind}.safetensors was not overwritten"
            )
        if not self.write:  # another rank than 0: checked, not written
            self.last_state = state_to_dict(state) if kind == "last" else self.last_state
            return
        tensors.update(self.method.state_tensors())
        extra = dict(extra or {})
        if kind == "last":
            tensors.update(rng_tensors())
            extra["optimizer"] = None  # None: the next step starts a stage with a fresh optimizer
            if optimizer is not None:
                optim, extra["optimizer"] = optimizer_tensors(optimizer)
                tensors.update(optim)
        save_checkpoint(
            self.run_dir / f"{kind}.safetensors",
            tensors,
            preset=self.preset_json,
            model_info=self.info,
            state=state_to_dict(state),
            extra=extra,
        )
        if kind == "last":
            self.last_state = state_to_dict(state)

    def log(self, record: dict[str, Any]) -> None:
        """One line of metrics.jsonl (and the same record to the run's logger); rank 0 only."""
        if not self.write:
            return
        append_jsonl(self.run_dir / "metrics.jsonl", record)
        if self.logger is not None:
            self.logger.log(record)

    def best_weights(self) -> dict[str, torch.Tensor]:
        """The model tensors of best.safetensors (a stage of recipe reference starts from them)."""
        return load_checkpoint(self.run_dir / "best.safetensors").group("model")


def load_weights(model: torch.nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Load `model.*` tensors; a mismatch is a CheckpointError, not a traceback."""
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path} does not fit its model: {str(e).splitlines()[0]}") from None


# ---------------------------------------------------------------- train


@dataclass
class _Run:
    """What a train() call has put on disk so far (for interrupt and divergence messages)."""

    run_dir: Path | None = None
    sink: RunSink | None = None
    world: Any = None
    resume: dict[str, Any] | None = None
    logger: str | None = None
    source: str | None = None


def train(
    preset: Preset | None,
    *,
    data_dir: Path | None = None,
    runs_dir: Path = Path("runs"),
    resume: str | None = None,
    device: str | None = None,
    threads: int | None = None,
    resume_same_settings: bool = False,
    on_event: Event | None = None,
    logger: str | None = None,
    source: str | None = None,
) -> dict[str, Any]:
    """Train a preset (or resume a run) and return results.json's content.

    `logger`: "tensorboard" also writes event files (a resume keeps the run's own logger
    unless given one). `source`: the preset name or file the preset was resolved from, so
    run.json records the overrides that differ from it (default: the shipped preset of the
    preset's name, when there is one).

    `resume="auto"` is idempotent (a requeue script's one command): it resumes the newest
    resumable run of the preset, reuses one left without a checkpoint, starts a new run
    when there is none, and returns the results of the newest run when it already finished.
    With `resume_same_settings` (the command gave --set/--method/--seed) it only looks at
    runs whose config.yaml is this preset.
    """
    run = _Run(logger=logger, source=source)
    try:
        with rank_errors(lambda: run.world):  # torchrun: the failing rank named, its code on every rank
            try:
                args = (preset, data_dir, Path(runs_dir), resume, device, threads, resume_same_settings)
                return _train(*args, on_event, run)
            except KeyboardInterrupt:
                raise Interrupted(_interrupted_note(run)) from None
            except DivergedError as e:
                error = DivergedError(f"{e}; {_last_good_note(run)}")
                _mark_failed(run, error)
                raise error from None
            except Exception as e:  # a crash once training started leaves a marker igm runs reads
                if not is_communication_error(e):  # a lost peer: the failing rank's error is the story
                    _mark_failed(run, e)
                raise
    finally:
        if run.world is not None:
            run.world.close()


def _mark_failed(run: _Run, error: Exception) -> None:
    """failed.json, only once this process owns the run (never for a run another process holds)."""
    if run.sink is not None and run.sink.write:
        message = str(error) if isinstance(error, IgmError) else f"{type(error).__name__}: {error}"
        mark_failed(run.run_dir, message, getattr(error, "exit_code", 1), getattr(error, "kind", "crash"))


def _train(preset, data_dir, runs_dir, resume, device, threads, same, on_event, run: _Run) -> dict[str, Any]:
    started = time.perf_counter()
    emit = on_event or (lambda *_: None)
    if resume == "auto":
        if preset is None:
            raise UsageError("--resume auto needs --preset to know which runs to look at")
        target = auto_resume_target(runs_dir, preset.name, lambda text: _same_preset(text, preset), same)
        run.resume = {"requested": "auto", "action": target.action, "run_dir": str(target.run_dir or "")}
        emit("resume_auto", {**run.resume, "preset": preset.name, "runs_dir": str(runs_dir)})
        if target.action == "finished":
            return json.loads((target.run_dir / "results.json").read_text())
        resume = str(target.run_dir) if target.action == "resume" else None
        run.run_dir = target.run_dir if target.action == "reuse" else None
    elif resume is not None:
        run.resume = {"requested": resume, "action": "resume", "run_dir": ""}
    with ExitStack() as held:
        resumed = _open_resume(resume, held, lock=env_rank() == 0) if resume else None
        if resumed is not None:
            preset = preset_from_json(resumed.preset, str(resumed.path))
            data_dir = data_dir or (
                Path(resumed.model_info["data_dir"]) if resumed.model_info["data_dir"] else None
            )
            run.run_dir = resumed.path.parent
            run.resume["run_dir"] = str(run.run_dir)
        if device is not None:
            preset = preset.model_copy(update={"device": device})
        world = run.world = join_world(resolve_device(preset.device))  # torchrun: every rank meets here
        torch_device = world.device_for(resolve_device(preset.device))
        data = open_data(preset, data_dir)
        info = model_info(preset, data, data_dir)
        model = build_for(preset, info, torch_device, pretrained=resumed is None)
        parallel = data_parallel(world, model, preset, len(data.split("train").labels))
        info["encoder_configs"] = encoder_configs(model)  # checkpoints rebuild without the weights folders
        # recorded in config.yaml and checkpoints: a resume runs on as many threads (bitwise equal)
        preset = preset.model_copy(update={"threads": use_threads(threads or preset.threads, model)})
        method = get_method(preset)
        method.world = world
        writer = world.is_writer  # only rank 0 writes the run directory
        if run.run_dir is None and writer:
            run.run_dir = create_run_dir(runs_dir, preset.name)
            held.enter_context(RunLock(run.run_dir))
        elif resumed is None and writer:  # reusing a run directory that never got a checkpoint
            held.enter_context(RunLock(run.run_dir))
            trim_metrics(run.run_dir / "metrics.jsonl", 0, 0)
        run_dir = run.run_dir = Path(world.broadcast_text(str(run.run_dir)))
        if resumed is None and writer:
            write_text_atomic(run_dir / "config.yaml", preset_to_yaml(preset))
            _write_run_info(run_dir, preset, run)
        _check_logger(run, run_dir, resumed is not None)  # before the sink: not a failed run
        sink = run.sink = RunSink(run_dir, model, method, preset, info, write=writer)
        modalities = trained_modalities(preset)
        trainer = _build_trainer(preset, model, data, method, sink, torch_device, on_event, parallel)
        state, restore_optimizer = TrainState(), None
        if resumed is not None:
            state, restore_optimizer = _restore(resumed, model, method)
            sink.last_state = state_to_dict(state)
            if writer:
                trim_metrics(run_dir / "metrics.jsonl", state.stage, state.epochs_done)
                clear_failed(run_dir)
        sink.logger = open_logger(run.logger, run_dir, state.epochs_done) if writer else None
        if sink.logger is not None:
            held.callback(sink.logger.close)
        emit(
            "run_start",
            {
                "run_dir": str(run_dir),
                "preset": preset.name,
                "resumed": resumed is not None,
                "state": state_to_dict(state),
                "total_epochs": trainer.schedule.total_epochs,
                "batches_per_epoch": trainer.train_batches.num_batches(preset.data.batch_size),
                "threads": preset.threads,
                "selection_split": method.selection_split,
                "world_size": world.size,
            },
        )
        state = trainer.fit(state, restore_optimizer)
        if not writer:
            return {"rank": world.rank, "run_dir": str(run_dir)}
        results = _final_results(preset, run_dir, model, data, modalities, torch_device, state, method)
        results["distributed"] = distributed_record(world, preset.data.batch_size, preset.sam.ddp)
        results["resume"] = run.resume
        results["seconds"] = round(time.perf_counter() - started, 2)
        write_text_atomic(run_dir / "results.json", json.dumps(results, indent=2))
        return results


def _check_logger(run: _Run, run_dir: Path, resuming: bool) -> None:
    """A resume keeps the logger run.json names; its package must be there before training."""
    why = "--logger tensorboard"
    if resuming and run.logger is None and (recorded := recorded_logger(run_dir)):
        run.logger, why = recorded, f"{run_dir} logs to TensorBoard (resume with --logger none to stop); it"
    check_logger(run.logger, why)


def _write_run_info(run_dir: Path, preset: Preset, run: _Run) -> None:
    """run.json: where the preset came from and the overrides that differ from it."""
    from .presets import shipped_presets

    source = run.source or (preset.name if preset.name in shipped_presets() else None)
    overrides = preset_overrides(preset.model_dump(mode="json"), source) if source else None
    write_run_info(run_dir, overrides, source or "unknown", run.logger)


def _same_preset(config_yaml: str, preset: Preset) -> bool:
    """A run directory's config.yaml is this preset (threads aside: they are resolved at start)."""
    try:
        stored = yaml.safe_load(config_yaml)
    except yaml.YAMLError:
        return False
    if not isinstance(stored, dict):
        return False
    wanted = preset.model_dump(mode="json")
    return {k: v for k, v in stored.items() if k != "threads"} == {
        k: v for k, v in wanted.items() if k != "threads"
    }


def _interrupted_note(run: _Run) -> str:
    """What an interrupt really left behind (said in the one line the CLI prints)."""
    if run.run_dir is None:
        return "interrupted before the run directory was created; nothing was written"
    if run.sink is not None and run.sink.last_state is not None:
        return (
            f"interrupted; resumable checkpoint {run.run_dir / 'last.safetensors'} "
            f"(igm train --resume {run.run_dir})"
        )
    return (
        f"interrupted before the first checkpoint; {run.run_dir} has none "
        "(igm train --resume auto reuses it, or start again)"
    )


def _last_good_note(run: _Run) -> str:
    """Where the last good state is after a divergence."""
    last = run.sink.last_state if run.sink is not None else None
    if last is None:
        return "no checkpoint was written (it diverged before the first epoch ended)"
    return (
        f"{run.run_dir / 'last.safetensors'} holds the last good state "
        f"(after {last['epochs_done']} epochs, stage {last['stage']} epoch {last['epoch']} "
        f"batch {last['batch']})"
    )


def _build_trainer(preset, model, data, method, sink, device, on_event, parallel=None) -> Trainer:
    """The Trainer with everything it needs injected (it never sees the preset)."""
    modalities = method.trained_modalities()
    return Trainer(
        model,
        method,
        make_optimizer=lambda params: build_optimizer(preset.optimizer, params),
        lr_at=lambda epoch, epochs: learning_rate(
            preset.schedule, preset.optimizer.lr, epoch, epochs, method.lr_epoch_offset
        ),
        train=SplitBatches(data.split("train"), modalities, device, drop_last=method.drop_last),
        val=SplitBatches(data.split(method.selection_split), modalities, device),
        sam=SamStep(method.trainer_sam_rho),
        config=TrainerConfig(
            batch_size=preset.data.batch_size,
            eval_batch_size=method.eval_batch_size,
            fusion=method.fusion,
            selection=preset.selection,
            seed=preset.seed,
            clip_norm=preset.optimizer.clip_norm,
        ),
        sink=sink,
        on_event=on_event,
        parallel=parallel,
    )


def _open_resume(resume: str, held: ExitStack, lock: bool = True):
    """Lock the run (rank 0 only under torchrun), then load its last.safetensors (not of a finished run)."""
    path = Path(resume)
    path = path / "last.safetensors" if path.is_dir() else path
    if lock and path.parent.is_dir() and path.is_file():
        held.enter_context(RunLock(path.parent))
    checkpoint = load_checkpoint(path, resume=True)
    if checkpoint.state.get("finished") or (path.parent / "results.json").exists():
        raise UsageError(f"run {path.parent} already finished (it has results.json); nothing to resume")
    if "optimizer" not in checkpoint.extra:
        raise CheckpointError(f"{path} has no optimizer state; resume from a run's last.safetensors")
    return checkpoint


def _restore(checkpoint, model, method: Method) -> tuple[TrainState, Callable | None]:
    load_weights(model, checkpoint.group("model"), checkpoint.path)
    method.load_state_tensors(checkpoint.tensors)
    restore_rng(checkpoint.tensors)
    state, meta = state_from_dict(checkpoint.state), checkpoint.extra["optimizer"]
    if meta is None:
        if state.epoch or state.batch:
            raise CheckpointError(
                f"{checkpoint.path} has no optimizer state but stops inside stage {state.stage}"
            )
        return state, None  # at a stage boundary: the stage builds its own fresh optimizer
    return state, lambda opt: load_optimizer_state(
        opt, checkpoint.tensors, meta, allow_empty=not (state.epoch or state.batch), source=checkpoint.path
    )


def _final_results(preset, run_dir, model, data, modalities, device, state, method) -> dict[str, Any]:
    """Reload the selected checkpoint and evaluate the test split once."""
    best = load_checkpoint(run_dir / "best.safetensors")
    load_weights(model, best.group("model"), best.path)
    test = SplitBatches(data.split("test"), modalities, device)
    test_metrics = evaluate_model(model, test, method.eval_batch_size, method.fusion)
    val = best.extra.get("val", {})
    if method.selection_split != "val":  # best.extra holds the selecting split's metrics: report val too
        val_split = SplitBatches(data.split("val"), modalities, device)
        val = evaluate_model(model, val_split, method.eval_batch_size, method.fusion)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {
        "preset": preset.name,
        "dataset": preset.dataset,
        "method": preset.method,
        "sam_rho": method.sam_rho,
        "fusion": method.fusion,
        "recipe": preset.recipe,
        "modalities": modalities,
        "run_dir": str(run_dir),
        "checkpoint": str(run_dir / "best.safetensors"),
        "selection": {
            "metric": preset.selection,
            "split": method.selection_split,
            "epoch": state.best_epoch,
            "stage": state.best_stage,
            "value": state.best_metric,
        },
        "val": val,
        "test": test_metrics,
        "stages": _stage_summaries(records, model, method.uses_gm),
        "deviations": deviations(preset) + method.deviations(),
        "steps": state.step,
        "epochs": state.epochs_done,
        "threads": preset.threads,
    }


def _stage_summaries(records: list[dict[str, Any]], model, gm: bool) -> list[dict[str, Any]]:
    """Stage records plus the mean of what SAM's ε really changed over the stage's epochs.

    `gm_pairs`: which head layer received which modality's T (null: none), when GM ran.
    """
    stages, trained = [], set()
    for record in (r for r in records if r["kind"] == "stage"):
        realized = [
            r["sam_realized"]
            for r in records
            if r["kind"] == "epoch" and r["stage"] == record["stage"] and r.get("sam_realized")
        ]
        sam = {k: sum(x[k] for x in realized) / len(realized) for k in realized[0]} if realized else None
        active, source = record["active"], record["source"]
        has_T = gm and source in trained and len(active) == 1  # before the source's first stage T = I
        if "gm_pairs" in record:  # the method recorded the pairs it made (any gm.scope)
            pairs = record["gm_pairs"]
        else:
            pairs = head_pairs(model, active[0], source) if has_T else None
        trained.update(active)
        stages.append({**record, "sam_realized": sam, "gm_pairs": pairs})
    return stages
