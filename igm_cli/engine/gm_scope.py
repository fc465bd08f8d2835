"""Which layers of a branch GM acts on (`gm.scope`, paper Table 4 / MIE Table 4).

`head`: the head's Linears (the paper's default, 1.3 % of a CREMA-D branch). `fraction`:
parameter-holding modules are taken from the classifier back towards the input, in the
branch's module order, until their parameters cover `gm.fraction` of the branch's
parameters; the Linear and Conv2d layers among them get a T (convolutions over their
unfolded input patches). Other modules in the scope (BatchNorm, LayerNorm, embeddings,
Conv3d) count towards the share but have no weight matrix T could act on.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

from torch import nn

GmLayer = nn.Linear | nn.Conv2d


@dataclass
class Scope:
    """The layers of one branch GM acts on, in forward order, and what share they cover."""

    layers: list[tuple[str, GmLayer]]  # (branch-relative module name, layer), forward order
    covered: int = 0  # parameters of every module in the scope (incl. those without T)
    total: int = 0  # parameters of the branch
    without_T: list[str] = field(default_factory=list)  # modules in the scope T cannot act on

    @property
    def share(self) -> float:
        """Covered share of the branch's parameters."""
        return self.covered / self.total if self.total else 0.0

    def summary(self) -> dict:
        """JSON-ready description for stage records and results.json."""
        return {
            "layers": [name for name, _ in self.layers],
            "parameters": self.covered,
            "of": self.total,
            "share": self.share,
            "without_T": self.without_T,
        }


def gm_layer(module: nn.Module) -> bool:
    """Whether T can act on the module's weight: a Linear, or a zero-padded groups=1 Conv2d."""
    if isinstance(module, nn.Linear):
        return True
    return (
        isinstance(module, nn.Conv2d)
        and module.groups == 1
        and module.padding_mode == "zeros"
        and not isinstance(module.padding, str)
    )


def t_size(layer: GmLayer) -> int:
    """Side of the layer's T: in_features, or in·kh·kw for a convolution's patches."""
    if isinstance(layer, nn.Linear):
        return layer.in_features
    return layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1]


def pair_key(layer: GmLayer) -> Hashable:
    """What must agree for one layer's T to act on another: the input side of the weight."""
    if isinstance(layer, nn.Linear):
        return layer.in_features
    return ("conv", layer.in_channels, *layer.kernel_size)


def head_scope(branch: nn.Module) -> Scope:
    """The head's Linears (`head.N`), the paper's default scope."""
    layers = [(f"head.{n}", m) for n, m in branch.head.named_children() if isinstance(m, nn.Linear)]
    covered = sum(p.numel() for _, m in layers for p in m.parameters())
    return Scope(layers, covered, _count(branch.parameters()))


def fraction_scope(branch: nn.Module, fraction: float) -> Scope:
    """Modules from the classifier backwards until `fraction` of the branch's parameters is covered.

    The module that crosses the threshold is included (so the share covered is ≥ fraction);
    order is the branch's module registration order, which is the forward order of the
    encoders and heads built here (inputs → encoder → head).
    """
    owners = [(n, m) for n, m in branch.named_modules() if any(True for _ in m.parameters(recurse=False))]
    total = _count(branch.parameters())
    seen: set[int] = set()
    chosen: list[tuple[str, nn.Module]] = []
    covered = 0
    for name, module in reversed(owners):
        if covered >= fraction * total:
            break
        own = [p for p in module.parameters(recurse=False) if id(p) not in seen]
        seen.update(id(p) for p in own)
        covered += sum(p.numel() for p in own)
        chosen.append((name, module))
    chosen.reverse()
    layers = [(n, m) for n, m in chosen if gm_layer(m)]
    without = [n for n, m in chosen if not gm_layer(m)]
    return Scope(layers, covered, total, without)


def branch_scope(branch: nn.Module, scope: str, fraction: float) -> Scope:
    """The preset's `gm.scope` / `gm.fraction` applied to one branch."""
    return head_scope(branch) if scope == "head" else fraction_scope(branch, fraction)


def _count(params) -> int:
    return sum(p.numel() for p in dict.fromkeys(params))
