"""Loss landscapes (Li et al., NeurIPS 2018) of one or several checkpoints, per modality.

`compute_landscape` is the library behind `igm landscape`; the pieces are importable:
filter-normalised directions (`directions`), the objective (`objective`), the grid
(`surface`), sharpness figures and Hessian power iteration (`sharpness`), plots (`plots`).
"""

from .runner import LandscapeSpec, compute_landscape

__all__ = ["LandscapeSpec", "compute_landscape"]
