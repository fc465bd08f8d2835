"""Training curves per epoch and the paper's Table 3 (accuracy after each stage) from metrics.jsonl.

Train loss is that of the branches a stage trains; validation metrics are of every branch
and the fused model. Stages are shaded by the modality they train, so the alternation of
Algorithm 1 (and what each stage did to the other branch) is visible at a glance.
"""

from __future__ import annotations

from typing import Any

from .source import RunData

FUSED = "fused"
METRIC = "accuracy"  # Table 3 of the paper reports accuracy
PALETTE = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]


def stage_label(run: RunData, stage: int, active: list[str]) -> str:
    """`iter 2 · video` for alternating stages (the paper's "Out Iters"), else `stage 0 · a+v`."""
    modalities = run.modalities or active
    if len(active) == 1 and len(modalities) > 1 and run.method in ("igm", "mie"):
        return f"iter {stage // len(modalities) + 1} · {active[0]}"
    return f"stage {stage} · {'+'.join(active)}"


def table3(run: RunData) -> list[dict[str, Any]]:
    """Per finished stage: the validation accuracy of the fused model and every branch at its end."""
    finished = {r["stage"] for r in run.stages if isinstance(r.get("stage"), int)}
    last: dict[int, dict[str, Any]] = {}
    for record in run.epochs:
        if record["stage"] in finished:
            last[record["stage"]] = record  # records are in order: the stage's last epoch wins
    rows = []
    for stage in sorted(last):
        record = last[stage]
        val = record["val"]
        rows.append(
            {
                "stage": stage,
                "active": list(record["active"]),
                "label": stage_label(run, stage, record["active"]),
                "epochs_done": record["epochs_done"],
                FUSED: val.get(FUSED, {}).get(METRIC),
                "branches": {m: v.get(METRIC) for m, v in val.items() if m != FUSED},
            }
        )
    return rows


def modality_colours(runs: list[RunData]) -> dict[str, str]:
    """One colour per modality, shared by every panel (fused is black)."""
    names: list[str] = []
    for run in runs:
        for record in run.epochs:
            names += [m for m in record["val"] if m != FUSED and m not in names]
    return {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(names)}


def plot_curves(runs: list[RunData], path) -> None:
    """curves.png: per run a column with train loss (top) and validation accuracy (bottom)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    colours = modality_colours(runs)
    fig = Figure(figsize=(5.2 * len(runs) + 0.6, 6.6), layout="constrained")
    axes = fig.subplots(2, len(runs), squeeze=False, sharex="col", sharey="row")
    for k, run in enumerate(runs):
        loss_ax, acc_ax = axes[0][k], axes[1][k]
        x = [r["epochs_done"] for r in run.epochs]
        for ax in (loss_ax, acc_ax):
            _shade_stages(ax, run, colours)
        for records in _by_stage(run).values():  # a segment per stage: each trains other branches
            trained = records[0]["active"]
            colour = colours.get(trained[0], "black") if len(trained) == 1 else "black"
            xs, ys = [r["epochs_done"] for r in records], [r["train_loss"] for r in records]
            loss_ax.plot(xs, ys, marker=".", color=colour, lw=1.4)
        for m in [*colours, FUSED]:
            y = [r["val"].get(m, {}).get(METRIC) for r in run.epochs]
            if any(v is not None for v in y):
                style = {"color": "black", "lw": 2.2} if m == FUSED else {"color": colours[m], "lw": 1.4}
                acc_ax.plot(x, [float("nan") if v is None else v for v in y], marker=".", label=m, **style)
        loss_ax.set_title(f"{run.label}\ntrain loss of the branch(es) each stage trains", fontsize=9)
        loss_ax.set_ylabel("train loss")
        acc_ax.set_title("validation accuracy per branch and fused", fontsize=9)
        acc_ax.set(xlabel="epoch", ylabel="val accuracy")
        acc_ax.legend(fontsize=8, loc="lower right")
    shade = [Patch(color=c, alpha=0.18, label=f"stage training {m}") for m, c in colours.items()]
    shade.append(Patch(color="grey", alpha=0.18, label="stage training several branches"))
    fig.legend(handles=shade, loc="outside lower center", ncols=len(shade), fontsize=8)
    fig.savefig(path, dpi=110)


def _by_stage(run: RunData) -> dict[int, list[dict[str, Any]]]:
    """Epoch records grouped by stage, in order."""
    groups: dict[int, list[dict[str, Any]]] = {}
    for record in run.epochs:
        groups.setdefault(record["stage"], []).append(record)
    return groups


def _shade_stages(ax, run: RunData, colours: dict[str, str]) -> None:
    """A band per stage from its first epoch's start to its last epoch, coloured by what it trains."""
    for records in _by_stage(run).values():
        done, trained = [r["epochs_done"] for r in records], records[0]["active"]
        colour = colours.get(trained[0], "grey") if len(trained) == 1 else "grey"
        ax.axvspan(min(done) - 1, max(done), color=colour, alpha=0.18, lw=0)
        ax.axvline(min(done) - 1, color="grey", lw=0.6, ls=":")
