"""`method: igm` with `recipe: reference`: the authors' released training code, step for step.

What the code does (shared/reference/released-code.md §3–§5, algorithm-notes.md §2), each a
switch under `reference:` that results.json lists under `deviations` when on:

- the step (`code_step`): mixup of the active input, `fea = encoder(x̃)`, `o = head(fea)`,
  per-sample mixup CE; its gradients by `autograd.grad`; every encoder and head tensor moved
  by ρ·g/‖g‖ (per-tensor norm, no ε) and never moved back; `o′ = head(fea)` on the features
  already computed; one backward of (1 − r)·mixupCE(o) + r·CE(o′, y) with the un-mixed y;
  then T (before_step) and the optimizer step;
- each stage from the best checkpoint so far, T from it on augmented training batches in
  eval mode, without guards; selection on the test split; mean fusion; evaluation batch 64;
  the StepLR decay one epoch early (step() before each epoch).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from igm_cli.engine.flat_projector import FlatProjector
from igm_cli.engine.mixup import MixupDraw, draw_mixup, mix, mixup_cross_entropy
from igm_cli.engine.stages import Stage
from igm_cli.preset_schema import Preset

from .base import BatchesFor, Substep
from .igm import Igm

DrawFn = Callable[[int, torch.device], MixupDraw | None]
MOVED = "code_sam.moved"  # gm_meter key of the perturbation's [changed, total] entry counts


def code_step(
    branch: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    draw: MixupDraw | None,
    rho: float,
    flat_ratio: float,
    moved: torch.Tensor | None = None,
) -> torch.Tensor:
    """One step's gradients as `train_withP` computes them (released-code.md §4); leaves .grad set.

    `rho > 0` moves the branch's tensors by ρ·g/‖g‖ and leaves them there (the code's "SAM");
    `moved` (float64 [changed, total] on the device) counts the entries that move in float rounding.
    """
    x = mix(x, draw) if draw is not None else x
    fea = branch.encoder(x)
    loss_ori = mixup_cross_entropy(branch.head(fea), labels, draw)
    if rho > 0:
        params = [p for p in branch.parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss_ori.mean(), params, retain_graph=True, allow_unused=True)
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                if g is not None:
                    # `.data =` as the code: the retained graph keeps the old weights for the
                    # backward of loss_ori; head(fea) below runs on the moved ones. No ε: a zero
                    # gradient gives NaN there too.
                    new = p.data + rho * g / torch.linalg.vector_norm(g)
                    if moved is not None:  # device ops only: no host sync per step
                        moved[0] += (new != p.data).sum()
                        moved[1] += p.numel()
                    p.data = new
    loss_tmp = F.cross_entropy(branch.head(fea), labels, reduction="none")
    loss = (1 - flat_ratio) * loss_ori.mean() + flat_ratio * loss_tmp.mean()
    loss.backward()
    return loss.detach()


class IgmReference(Igm):
    """IGM as the released code trains it; every departure from the paper is a `reference.*` switch."""

    reads = (*Igm.reads, "reference")

    def __init__(self, preset: Preset):
        super().__init__(preset)
        self.ref = preset.reference
        gm = preset.gm
        self.projector = FlatProjector(
            gm.tau, enabled=gm.enabled, guards=not self.ref.unguarded_t, scope=gm.scope, fraction=gm.fraction
        )
        kinds = {m.name: m.input.kind for m in preset.modalities}
        self.mixed = {m for m, kind in kinds.items() if kind != "tokens" and self.ref.mixup_alpha > 0}
        self.draw: DrawFn = lambda batch, device: draw_mixup(batch, self.ref.mixup_alpha, device)
        self.moved: torch.Tensor | None = None  # [entries the perturbation changed, entries], per stage

    # ------------------------------------------------------------ what the Trainer and pipeline read

    @property
    def sam_rho(self) -> float:
        """The radius recorded in results.json: the code's in-step ρ (or sam.rho with code_sam off)."""
        code = self.preset.code_sam_rho
        return self.preset.sam.rho if code is None else code

    @property
    def trainer_sam_rho(self) -> float:
        """The code's perturbation lives in the step: the Trainer's SamStep is off for it."""
        return 0.0 if self.ref.code_sam else self.preset.sam.rho

    @property
    def fusion(self) -> str:
        """Mean of the branch softmaxes (the code's `test` forward)."""
        return "mean" if self.ref.mean_fusion else self.preset.fusion

    @property
    def restarts_from_best(self) -> bool:
        """Each stage starts from the best checkpoint so far."""
        return self.ref.restart_from_best

    @property
    def augmented_covariance(self) -> bool:
        """T's pass runs on training batches with training augmentation."""
        return self.ref.augmented_covariance

    @property
    def selection_split(self) -> str:
        """test: the published protocol."""
        return "test" if self.ref.test_selection else "val"

    @property
    def eval_batch_size(self) -> int:
        """The code's test batch (64)."""
        return self.ref.eval_batch_size or self.preset.data.eval_batch_size

    @property
    def drop_last(self) -> bool:
        """The code's training loader: drop_last=True (also for T's pass)."""
        return self.ref.drop_last

    @property
    def lr_epoch_offset(self) -> int:
        """StepLR stepped before each epoch: epoch e of a stage decays as e + 1."""
        return 1 if self.ref.lr_step_before_epoch else 0

    # ------------------------------------------------------------ training

    def substeps(self, model: nn.Module, stage: Stage, params: list[nn.Parameter]) -> list[Substep]:
        """One `code_step` of the active branch (the same mixup draw in a paper-SAM second pass)."""
        (m,) = stage.active
        branch = model.branch(m)
        rho = self.preset.code_sam_rho or 0.0
        substep = Substep(m, params, None)

        def gradients(
            inputs: dict[str, torch.Tensor], labels: torch.Tensor, second_pass: bool
        ) -> torch.Tensor:
            if not second_pass:
                x = inputs[m]
                substep.memo["draw"] = self.draw(x.shape[0], x.device) if m in self.mixed else None
            draw = substep.memo["draw"]
            return code_step(branch, inputs[m], labels, draw, rho, self.ref.flat_ratio, self.moved)

        substep.gradients = gradients
        return [substep]

    def begin_stage(self, model: nn.Module, stage: Stage, meter: dict | None) -> list[str]:
        """IGM's pairing, and the count of what the perturbation moves (continued on resume)."""
        paired = super().begin_stage(model, stage, meter)
        device = next(model.branch(stage.active[0]).parameters()).device
        self.moved = torch.tensor((meter or {}).get(MOVED, [0.0, 0.0]), dtype=torch.float64, device=device)
        return paired

    def meter_state(self) -> dict[str, list[float]]:
        """IGM's accumulators and the perturbation's count."""
        moved = {MOVED: [float(v) for v in self.moved]} if self.moved is not None else {}
        return {**super().meter_state(), **moved}

    def end_stage(self, model: nn.Module, stage: Stage, batches_for: BatchesFor) -> dict[str, Any]:
        """IGM's T pass (on the restarted model, see Trainer), plus the layers whose T is degenerate."""
        report = super().end_stage(model, stage, batches_for)
        report["T_degenerate"] = {m: degenerate_layers(self.projector, m) for m in stage.active}
        if self.ref.code_sam and self.moved is not None:  # the Trainer's SamStep is off: say what moved
            changed, total = (float(v) for v in self.moved)
            share = changed / total if total else 0.0
            report["code_sam_moved_share"] = share
            report["sam_note"] = f"code's {self.sam_rho:g}·g/‖g‖ kept; {share:.3%} moved"
        return report

    # ------------------------------------------------------------ results.json

    def deviations(self) -> list[dict[str, str]]:
        """One line per switch that is on."""
        ref, rho, alpha, r = self.ref, self.sam_rho, self.ref.mixup_alpha, self.ref.flat_ratio
        lines = [
            (alpha > 0, "mixup_alpha",
             f"Beta({alpha:g}, {alpha:g}) mixup of the active modality's input every step (tokens: none)"),
            (r > 0, "flat_ratio",
             f"loss {1 - r:g}·mixupCE(o) + {r:g}·CE(o′, y): o′ = head(features), y the un-mixed label"),
            (ref.code_sam, "code_sam",
             f"the code's SAM: each encoder and head tensor moved by {rho:g}·g/‖g‖ (per-tensor norm, "
             "autograd.grad), never restored; no gradient at θ + ε"),
            (ref.restart_from_best, "restart_from_best",
             "each stage starts from the best checkpoint so far (T from it), new optimizer and schedule"),
            (ref.augmented_covariance, "augmented_covariance",
             "T from one pass over training batches with training augmentation, model in eval mode"),
            (ref.unguarded_t, "unguarded_t",
             "T without guards: no clamp, no identity fallback (λmax = λmin gives NaN; see T_degenerate)"),
            (ref.test_selection, "test_selection",
             "the best epoch is selected on the test split (the published protocol), not on validation"),
            (ref.mean_fusion, "mean_fusion",
             "fused by the mean of branch softmaxes; the paper states MLA's entropy weighting"),
            (ref.eval_batch_size is not None, "eval_batch_size", f"evaluation batch {ref.eval_batch_size}"),
            (ref.drop_last, "drop_last",
             "a short last training batch of an epoch is dropped (also in T's pass), as the code's loader"),
            (ref.lr_step_before_epoch, "lr_step_before_epoch",
             "StepLR stepped before each epoch: epoch e of a stage uses lr·γ^⌊(e+1)/step_size⌋"),
        ]  # fmt: skip
        return [{"switch": f"reference.{key}", "what": what} for on, key, what in lines if on]


def degenerate_layers(projector: FlatProjector, modality: str) -> dict[str, str]:
    """Layers of `modality` whose unguarded T is not finite (a flat spectrum: 0/0), reported, not fixed.

    Read off T itself: another eigendecomposition per layer (4608² for scoped convs) is not paid for it.
    """
    return {
        name: "T is not finite (λmax = λmin: 0/0)"
        for name, T in projector.T.get(modality, {}).items()
        if not torch.isfinite(T).all()
    }
