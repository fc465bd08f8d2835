"""Training methods, one module each; `get_method(preset)` picks the preset's `method`."""

from __future__ import annotations

from typing import Any

from igm_cli.preset_schema import Preset

from .base import COMMON_KEYS, Method, Substep
from .dgl import Dgl
from .igm import Igm
from .igm_reference import IgmReference
from .joint import Joint
from .mie import Mie
from .mla import Mla
from .unimodal import Unimodal

METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (Igm, Joint, Unimodal, Mla, Dgl, Mie)}


def method_class(preset: Preset) -> type[Method]:
    """The class of the preset's method (igm with `recipe: reference`: the released code's)."""
    if preset.method == "igm" and preset.recipe == "reference":
        return IgmReference
    return METHODS[preset.method]


def get_method(preset: Preset) -> Method:
    """A fresh method object for the preset (it holds per-run state such as T)."""
    return method_class(preset)(preset)


def method_view(preset: Preset) -> dict[str, Any]:
    """The resolved preset reduced to the keys its method reads (`igm presets show`)."""
    full = preset.model_dump(mode="json")
    keys = [*COMMON_KEYS, *method_class(preset).reads]
    view: dict[str, Any] = {}
    for key in sorted(keys, key=lambda k: list(full).index(k.split(".")[0])):
        section, _, leaf = key.partition(".")
        if leaf:
            view.setdefault(section, {})[leaf] = full[section][leaf]
        else:
            view[section] = full[section]
    return view


__all__ = ["METHODS", "Method", "Substep", "get_method", "method_class", "method_view"]
