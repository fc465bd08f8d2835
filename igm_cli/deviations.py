"""What a run does that the paper's stated method does not: results.json `deviations`.

Each check reads the resolved preset and returns entries `{"switch": <preset key>,
"what": <one line>}`. General checks apply to every run; a training method adds its own
with `@method_check("name")` (called only for runs of that method). The paper's values are
those of §4.2 and Algorithm 1 (reference/igm-paper.txt); where the paper is silent (mfeat
has no ρ in the paper) the entry says what the paper gives for its own data.
"""

from __future__ import annotations

from collections.abc import Callable

from .presets import Preset

Deviation = dict[str, str]
Check = Callable[[Preset], list[Deviation]]

PAPER_TAU = 0.4
PAPER_RHO = (1e-10, 1e-15)  # audio; image and text
PAPER_COV_BATCH = 12  # every dataset but NVGesture (6)
PAPER_SELECTION = {"twitter2015": "accuracy"}  # macro-F1 elsewhere (the released code's metric)

IGM_LIKE = ("igm", "mie")  # methods whose paper is IGM's (SAM, GM, fusion checks); others list their own
GENERAL: list[Check] = []
BY_METHOD: dict[str, list[Check]] = {}


def check(fn: Check) -> Check:
    """Register a check that applies to every run."""
    GENERAL.append(fn)
    return fn


def method_check(method: str) -> Callable[[Check], Check]:
    """Register a check that applies only to runs of `method` (the methods' hook)."""

    def register(fn: Check) -> Check:
        BY_METHOD.setdefault(method, []).append(fn)
        return fn

    return register


def deviations(preset: Preset) -> list[Deviation]:
    """Every departure from the paper's method, one entry each, general checks first."""
    return [d for fn in [*GENERAL, *BY_METHOD.get(preset.method, [])] for d in fn(preset)]


def _entry(switch: str, what: str) -> list[Deviation]:
    return [{"switch": switch, "what": what}]


@check
def _sam(preset: Preset) -> list[Deviation]:
    if preset.method not in IGM_LIKE:
        return []  # baselines use sam.baseline_rho, 0 by default: the plain method
    rho = preset.sam.rho if preset.code_sam_rho is None else preset.code_sam_rho
    if rho == 0:
        return _entry("sam.rho", "SAM off (ρ = 0): plain steps; the paper trains with SAM")
    if any(abs(rho - p) <= 1e-3 * p for p in PAPER_RHO):
        return []
    return _entry("sam.rho", f"ρ = {rho:g}; the paper uses 1e-10 (audio) and 1e-15 (image, text)")


@check
def _gm(preset: Preset) -> list[Deviation]:
    if preset.method not in IGM_LIKE:
        return []
    if not preset.gm.enabled:
        return _entry("gm.enabled", "GM off: no flat projection between stages (the paper's ablation)")
    if preset.gm.tau != PAPER_TAU:
        return _entry("gm.tau", f"τ = {preset.gm.tau:g}; the paper uses {PAPER_TAU:g}")
    return []


@check
def _covariance_pass(preset: Preset) -> list[Deviation]:
    if preset.method not in IGM_LIKE or not preset.gm.enabled:
        return []
    out = []
    augmented = preset.recipe == "reference" and preset.reference.augmented_covariance  # listed by the recipe
    if any(m.input.kind == "frames" for m in preset.modalities) and not augmented:
        out += _entry(
            "gm",
            "covariance pass without augmentation (deterministic inputs); the released code "
            "collects it on augmented training batches, the paper does not say",
        )
    if preset.data.batch_size != PAPER_COV_BATCH:
        out += _entry(
            "data.batch_size",
            f"covariance batches of {preset.data.batch_size}; the paper uses {PAPER_COV_BATCH}",
        )
    return out


@check
def _fusion(preset: Preset) -> list[Deviation]:
    if preset.method not in IGM_LIKE or preset.fusion in ("entropy", "entropy_logits"):
        return []
    if preset.recipe == "reference" and preset.reference.mean_fusion:
        return []  # the recipe's own line (reference.mean_fusion)
    return _entry("fusion", "fused by the mean of branch softmaxes; the paper states MLA's entropy weighting")


@check
def _selection(preset: Preset) -> list[Deviation]:
    paper = PAPER_SELECTION.get(preset.dataset, "macro_f1")
    if preset.selection == paper:
        return []
    on_test = preset.recipe == "reference" and preset.reference.test_selection
    split = "test" if on_test else "validation"
    return _entry("selection", f"best epoch selected on {split} {preset.selection}, not {paper}")


@check
def _schedule(preset: Preset) -> list[Deviation]:
    if preset.schedule.name == "step" and preset.schedule.gamma == 0.1:
        return []
    return _entry(
        "schedule.name",
        f"learning rate {preset.schedule.name}; the paper divides it by 10 when the loss saturates",
    )
