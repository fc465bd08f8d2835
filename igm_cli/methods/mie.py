"""`method: mie`: MIE (Modal-Aware Interactive Enhancement), the IGM group's earlier paper.

What its §3.2 establishes is IGM's algorithm: SAM while a modality trains (forward phase)
and, in the backward phase, a gradient modification built from the "cumulative variance"
of batch features of the other, already-learned modality, its SVD, and a matrix whose
singular directions with larger singular values are modified more, with a scaling factor
(τ). The extracted text has lost Eq. 5 and Eq. 7, so what the matrix is exactly cannot be
read from it; igm uses IGM's T (Eq. 4), whose prose matches. Where the text leaves a
choice open it is an option (`mie.covariance`, `mie.layers`), and MIE's own evaluation
adds MLA's weighting fusion (the mie presets default to `fusion: entropy_logits`).
What could not be established is written down in docs/methods.md, not implemented.
"""

from __future__ import annotations

from igm_cli.engine.flat_projector import FlatProjector
from igm_cli.errors import PresetError
from igm_cli.preset_schema import Preset

from .igm import Igm


class Mie(Igm):
    """IGM's stages, T and SAM, with MIE's open choices as named options."""

    name = "mie"
    reads = ("head", "stages.epochs", "gm", "mie", "sam.rho", "fusion")

    def __init__(self, preset: Preset):
        super().__init__(preset)
        gm, mie = preset.gm, preset.mie
        if gm.scope == "fraction" and (mie.layers != "head" or mie.covariance != "uncentred"):
            key = "mie.layers=penultimate" if mie.layers != "head" else "mie.covariance=centred"
            raise PresetError(
                f"{key} is defined for head Linears only; gm.scope=fraction adds encoder layers "
                "(convolutions): use one or the other"
            )
        self.projector = FlatProjector(
            gm.tau,
            enabled=gm.enabled,
            centred=mie.covariance == "centred",
            last_hidden_only=mie.layers == "penultimate",
            scope=gm.scope,
            fraction=gm.fraction,
        )
