"""A split's per-branch outputs, stored once, and the fused prediction of any set of branches.

Late fusion (every fusion but `module`): a set of branches is fused by `engine.fusion.fuse`
on their stored logits; a missing branch is left out of the fusion. A fusion module (DGL,
`fusion: module`): the module on the stored features with the missing ones set to zero,
which is how DGL forms its unimodal logits. Either way no encoder runs again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from igm_cli.engine.batches import SplitBatches
from igm_cli.engine.evaluate import predict
from igm_cli.engine.fusion import FUSED, FUSIONS, fuse
from igm_cli.models.shared import FusionModuleModel

LEFT_OUT = "left out of the late fusion"
ZEROED = "feature zeroed in the fusion module"


@dataclass
class SplitOutputs:
    """Everything the analyses need from one forward pass over a split."""

    logits: dict[str, torch.Tensor]  # modality (+ 'fused' of a fusion module) → (N, C)
    labels: torch.Tensor  # (N,)
    features: dict[str, torch.Tensor] = field(default_factory=dict)  # fusion module: modality → (N, d)

    @property
    def modalities(self) -> list[str]:
        """The branches, in the model's order."""
        return [m for m in self.logits if m != FUSED]


def collect(model: torch.nn.Module, batches: SplitBatches, batch_size: int) -> SplitOutputs:
    """`engine.evaluate.predict`, keeping a fusion module's input features on the way (forward hooks)."""
    chunks: dict[str, list[torch.Tensor]] = {}
    hooks = []
    if isinstance(model, FusionModuleModel):
        for m, branch in model.branches.items():
            chunks[m] = []
            hooks.append(branch.register_forward_hook(lambda _mod, _in, out, m=m: chunks[m].append(out)))
    try:
        logits, labels = predict(model, batches, batch_size)
    finally:
        for hook in hooks:
            hook.remove()
    return SplitOutputs(logits, labels, {m: torch.cat(z) for m, z in chunks.items() if z})


class Fuser:
    """Hard fused predictions (N,) for a set of branches, a per-sample missing branch, or new outputs.

    Rows left with no branch at all get a uniformly random class (seeded): the prediction
    of a model with no information, whose expected accuracy is 1/C (the Shapley v(∅)).
    """

    def __init__(self, model: torch.nn.Module, outputs: SplitOutputs, fusion: str, batch: int, seed: int = 0):
        self.model, self.outputs, self.fusion, self.batch = model, outputs, fusion, batch
        self.module = fusion == "module"
        self.rule = ZEROED if self.module else LEFT_OUT
        self.full = fuse(outputs.logits, fusion, batch)  # (N, C): what `igm eval` scores as fused
        self.num_classes = self.full.shape[1]
        self.seed = seed
        self.clean = self.full.argmax(1)  # (N,) the fused predictions of `igm eval`
        self._without: dict[str, torch.Tensor] = {}
        self._probs: dict[str, torch.Tensor] = {}

    @property
    def modalities(self) -> list[str]:
        """The branches that can be left out."""
        return self.outputs.modalities

    def predictions(self, probs: torch.Tensor) -> torch.Tensor:
        """argmax, as scikit-learn scores `igm eval` (first maximum)."""
        return probs.argmax(1)

    def guess(self, rows: int) -> torch.Tensor:
        """Seeded uniform classes for rows without any branch."""
        generator = torch.Generator().manual_seed(self.seed)
        return torch.randint(self.num_classes, (rows,), generator=generator).to(self.full.device)

    def probs_of(self, keep: Iterable[str]) -> torch.Tensor | None:
        """Fused probabilities (N, C) of the branches `keep` alone (None if empty)."""
        keep = [m for m in self.modalities if m in set(keep)]
        if not keep:
            return None
        if len(keep) == len(self.modalities):
            return self.full
        if self.module:
            features = {m: self.outputs.features[m] for m in keep}
            return torch.softmax(self.model.fuse_features(features), -1)
        return self._fuse({m: self.outputs.logits[m] for m in keep})

    def subset(self, keep: Iterable[str]) -> torch.Tensor:
        """Predictions of the fusion of `keep` only (the other branches missing for every sample)."""
        probs = self.probs_of(keep)
        return self.guess(len(self.full)) if probs is None else self.predictions(probs)

    def missing(self, modality: str, mask: torch.Tensor) -> torch.Tensor:
        """Predictions when `modality` is missing for the samples where `mask` (N,) is True.

        The fusion without it is computed once for every sample and taken where `mask` is
        set: per sample the same as fusing those rows alone (for `entropy_batch`, whose
        weights are per batch, the batches are those of `igm eval`).
        """
        if modality not in self._without:
            self._without[modality] = self.subset([m for m in self.modalities if m != modality])
        return torch.where(mask, self._without[modality], self.clean)

    def replaced(self, modality: str, output: torch.Tensor) -> torch.Tensor:
        """Predictions with `modality`'s stored output (logits, or a fusion module's feature) replaced."""
        if self.module:
            features = {**self.outputs.features, modality: output}
            return self.predictions(self.model.fuse_features(features))
        logits = {m: z for m, z in self.outputs.logits.items() if m != FUSED}
        return self.predictions(self._fuse({**logits, modality: output}))

    def _fuse(self, logits: dict[str, torch.Tensor]) -> torch.Tensor:
        """`engine.fusion.fuse`; for probability fusions each stored branch's softmax is computed once."""
        if self.fusion not in FUSIONS:
            return fuse(logits, self.fusion, self.batch)
        return FUSIONS[self.fusion]([self._softmax(m, z) for m, z in logits.items()])

    def _softmax(self, modality: str, z: torch.Tensor) -> torch.Tensor:
        if z is not self.outputs.logits.get(modality):
            return torch.softmax(z, dim=-1)  # a corrupted branch's new logits
        if modality not in self._probs:
            self._probs[modality] = torch.softmax(z, dim=-1)
        return self._probs[modality]
