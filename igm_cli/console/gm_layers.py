"""The per-layer GM table of `gm.scope: fraction` (paper Table 4): every layer T touched, per stage."""

from __future__ import annotations

from typing import Any

from rich.table import Table

import igm_cli.console as base


def short_layer(name: str) -> str:
    """A module name without the ResNet wrapper's `encoder.net.` and `.convolution` (display only)."""
    if name.startswith("encoder.net."):
        name = "encoder." + name.removeprefix("encoder.net.").removeprefix("encoder.")
    return name.removesuffix(".convolution")


def beyond_head(stages: list[dict[str, Any]]) -> bool:
    """Whether any stage ran GM with gm.scope=fraction (then the per-layer table is shown)."""
    return any((s.get("gm_scope") or {}).get("scope") == "fraction" for s in stages)


def span(values: dict[str, float], fmt: str) -> str:
    """`5 layers, 1.0%–16.4%`: a compact cell when the per-layer table has the details."""
    if not values:
        return ""
    low, high = min(values.values()), max(values.values())
    return f"{len(values)} layers, {low:{fmt}}–{high:{fmt}}"


def gm_layer_table(stages: list[dict[str, Any]]) -> None:
    """Stage, layer, whose T, T's side, trace(T)/d of that T, share of ‖∇W‖ it removed."""
    table = Table(title="GM per layer (gm.scope=fraction)")
    for column in ("stage", "trained", "layer", "← T of", "T side", "trace(T)/d", "‖∇W‖ removed"):
        right = column in ("T side", "trace(T)/d", "‖∇W‖ removed")
        table.add_column(column, justify="right" if right else "left", no_wrap=column == "layer")
    for s in stages:
        for row in s.get("gm_layers") or []:
            paired = row["T_of"] is not None
            table.add_row(
                str(s["stage"]),
                "+".join(s["active"]),
                short_layer(row["layer"]),
                _source(row["layer"], row["T_of"]) if paired else "none (no partner)",
                str(row["T_size"]) if paired else "—",
                f"{row['T_trace_ratio']:.3f}" if paired else "—",
                f"{row['removed_share']:.1%}" if paired else "—",
            )
    base.console.print(table)
    for line in _scope_lines(stages):
        base.info(line, markup=False)


def _source(layer: str, source: str) -> str:
    """`audio (same)`: the namesake layer of audio; `audio.<layer>` when the partner has another name."""
    modality, theirs = source.split(".", 1)
    return f"{modality} (same)" if theirs == layer else f"{modality}.{short_layer(theirs)}"


def _scope_lines(stages: list[dict[str, Any]]) -> list[str]:
    """What each branch's scope covers: `audio: gm.fraction 0.3 → 43.0% of 11,318,406 parameters, …`."""
    seen: dict[str, str] = {}
    for s in stages:
        scope = s.get("gm_scope")
        if not scope or len(s["active"]) != 1 or s["active"][0] in seen:
            continue
        without = f", {len(scope['without_T'])} without a weight matrix (no T)" if scope["without_T"] else ""
        seen[s["active"][0]] = (
            f"{s['active'][0]}: gm.fraction {scope['fraction']:g} → {scope['share']:.1%} of "
            f"{scope['of']:,} parameters, {len(scope['layers'])} layers with T{without}"
        )
    return list(seen.values())
