"""A sweep plan: settings (cartesian grid × random draws), trials (setting × seed), ids, shards.

Every setting's preset is resolved and validated before anything runs, so a typo in a key
fails fast (exit 2). Ids hash the *resolved* values, so `1e-3` and `0.001` name one trial on
every machine and in every resume.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from dataclasses import dataclass
from typing import Any

from ..errors import PresetError, UsageError
from ..presets import (
    apply_method_defaults,
    apply_override,
    override_keys,
    parse_override,
    read_preset_source,
    validate_preset,
)
from .grid import Range, draw_settings, format_value, parse_grid, parse_range

FORMAT = "igm-sweep/1"
_MISSING = object()


@dataclass(frozen=True)
class Setting:
    """One assignment of the swept keys and its resolved preset (JSON, base seed)."""

    id: str
    values: dict[str, Any]
    preset: dict[str, Any]

    @property
    def label(self) -> str:
        """`gm.tau=0.01, sam.rho=0` (or `base preset` when nothing but seeds is swept)."""
        return ", ".join(f"{k}={format_value(v)}" for k, v in self.values.items()) or "base preset"


@dataclass(frozen=True)
class Trial:
    """One training run of a sweep: a setting under one seed."""

    setting: Setting
    seed: int

    @property
    def id(self) -> str:
        """`<setting hash>-s<seed>`: stable across machines and resumes."""
        return f"{self.setting.id}-s{self.seed}"

    def preset(self) -> dict[str, Any]:
        """The resolved preset of this trial."""
        return {**self.setting.preset, "seed": self.seed}


@dataclass
class SweepPlan:
    """Everything `sweep.json` records; trials are sorted by id so shards are deterministic."""

    preset: str
    sets: list[str]
    keys: list[str]
    settings: list[Setting]
    seeds: list[int]
    definition: dict[str, Any]

    @property
    def trials(self) -> list[Trial]:
        """Every (setting, seed), sorted by id."""
        trials = [Trial(s, seed) for s in self.settings for seed in self.seeds]
        return sorted(trials, key=lambda t: t.id)

    @property
    def branches(self) -> list[str]:
        """Branch names any trial can report: every modality of any setting, then `fused`."""
        names = {m["name"] for s in self.settings for m in s.preset["modalities"]}
        return sorted(names) + ["fused"]

    def shard(self, index: int = 0, count: int = 1) -> list[Trial]:
        """The trials of shard `index` of `count` (0-based): every count-th trial by id."""
        return [t for i, t in enumerate(self.trials) if i % count == index]

    def sweep_json(self) -> dict[str, Any]:
        """The content of sweep.json."""
        return {
            "format": FORMAT,
            "preset": self.preset,
            "sets": self.sets,
            "keys": self.keys,
            "definition": self.definition,
            "settings": [{"id": s.id, "values": s.values} for s in self.settings],
            "trials": [t.id for t in self.trials],
        }


def plan_sweep(
    preset: str = "mfeat",
    sets: list[str] | tuple[str, ...] = (),
    grids: list[str] | tuple[str, ...] = (),
    ranges: list[str] | tuple[str, ...] = (),
    random_n: int | None = None,
    random_seed: int = 0,
    seeds: list[int] | None = None,
) -> SweepPlan:
    """Expand and validate a sweep; raises UsageError/PresetError (exit 2) before any training."""
    label, raw = read_preset_source(preset)
    for item in sets:
        apply_override(raw, *parse_override(item))
    protected = override_keys(sets)
    base_raw = apply_method_defaults(copy.deepcopy(raw), protected)
    base = validate_preset(base_raw, label).model_dump(mode="json")
    grid = [parse_grid(g) for g in grids]
    random_ranges = [parse_range(r) for r in ranges]
    _check_random(random_ranges, random_n)
    keys = [k for k, _ in grid] + [r.key for r in random_ranges]
    _check_keys(keys, sets)
    product = itertools.product(*(values for _, values in grid))
    combos = [dict(zip([k for k, _ in grid], c, strict=True)) for c in product]
    draws = draw_settings(random_ranges, random_n or 0, random_seed) if random_ranges else [{}]
    settings = [_setting(raw, label, base, {**c, **d}, protected) for c in combos for d in draws]
    _check_unique(settings)
    definition = {
        "base": base,
        "grid": {k: _unique([s.values[k] for s in settings]) for k, _ in grid},
        "random": _random_json(random_ranges, random_n, random_seed),
        "seeds": list(seeds) if seeds else [base["seed"]],
    }
    return SweepPlan(label, list(sets), keys, settings, definition["seeds"], definition)


def _check_random(ranges: list[Range], n: int | None) -> None:
    if n is not None and n < 1:
        raise UsageError(f"--random must be at least 1 (got {n})")
    if ranges and not n:
        raise UsageError("--range needs --random N (how many settings to draw)")
    if n is not None and not ranges:
        raise UsageError("--random N needs at least one --range key=low:high[:log]")


def _random_json(ranges: list[Range], n: int | None, seed: int) -> dict[str, Any] | None:
    if not ranges:
        return None
    return {"n": n, "seed": seed, "ranges": {r.key: r.as_json() for r in ranges}}


def _check_keys(keys: list[str], sets: list[str] | tuple[str, ...]) -> None:
    fixed = {".".join(parse_override(item)[0]) for item in sets}
    for key in keys:
        if keys.count(key) > 1:
            raise UsageError(f"{key} is swept twice (one --grid or --range per key)")
        if key in fixed:
            raise UsageError(f"{key} is both swept and fixed with --set; drop one")
        if key == "seed":
            raise UsageError("sweep seeds with --seeds 0,1,2, not --grid seed=...")


def _setting(
    raw: dict[str, Any], label: str, base: dict[str, Any], values: dict[str, Any], protected: set[str]
) -> Setting:
    """Resolve one setting; its canonical values are read back from the validated preset."""
    text = ", ".join(f"{k}={format_value(v)}" for k, v in values.items())
    tree = copy.deepcopy(raw)
    try:
        for key, value in values.items():
            apply_override(tree, key.split("."), copy.deepcopy(value))
        apply_method_defaults(tree, protected | set(values))
        preset = validate_preset(tree, label).model_dump(mode="json")
    except PresetError as e:
        raise PresetError(f"sweep setting {text}: {e}") from None
    resolved = {k: _read_back(preset, base, k, v) for k, v in values.items()}
    digest = hashlib.sha1(json.dumps(resolved, sort_keys=True).encode()).hexdigest()[:8]
    return Setting(digest, resolved, preset)


def _read_back(preset: dict[str, Any], base: dict[str, Any], key: str, fallback: Any) -> Any:
    """The value at a dotted key after validation (`1e-3` → 0.001); list items by index or name.

    Names are looked up in the base preset, so sweeping a modality's own name still works.
    """
    node_base: Any = base
    node: Any = preset
    for part in key.split("."):
        if isinstance(node_base, list):
            names = [item.get("name") if isinstance(item, dict) else None for item in node_base]
            index = int(part) if part.isdigit() else names.index(part) if part in names else None
            if index is None or index >= len(node):
                return fallback
            node_base, node = node_base[index], node[index]
        elif isinstance(node_base, dict) and part in node_base and isinstance(node, dict):
            node_base, node = node_base[part], node.get(part)
        else:
            return fallback
    return node


def _check_unique(settings: list[Setting]) -> None:
    seen: dict[str, Setting] = {}
    for s in settings:
        if s.id in seen:
            raise UsageError(f"two sweep values resolve to the same setting: {s.label}")
        seen[s.id] = s


def _unique(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if v not in out:
            out.append(v)
    return out


def definition_difference(
    here: dict[str, Any], there: dict[str, Any], names: tuple[str, str] = ("here", "there")
) -> str:
    """Name what differs between two sweep definitions ('' when they are the same sweep)."""
    a, b = _flat_definition(here), _flat_definition(there)
    diffs = [
        f"{key}: {_show(a.get(key, _MISSING))} ({names[0]}) vs {_show(b.get(key, _MISSING))} ({names[1]})"
        for key in dict.fromkeys([*a, *b])
        if a.get(key, _MISSING) != b.get(key, _MISSING)
    ]
    more = f" (and {len(diffs) - 3} more)" if len(diffs) > 3 else ""
    return "; ".join(diffs[:3]) + more


def _flat_definition(definition: dict[str, Any]) -> dict[str, Any]:
    flat = {f"--grid {k}": v for k, v in (definition.get("grid") or {}).items()}
    random = definition.get("random") or {}
    flat.update({f"--range {k}": v for k, v in (random.get("ranges") or {}).items()})
    flat.update({"--random": random.get("n"), "--random-seed": random.get("seed")} if random else {})
    flat["--seeds"] = definition.get("seeds")
    flat.update({f"preset {k}": v for k, v in _flatten(definition.get("base") or {}).items()})
    return flat


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _show(value: Any) -> str:
    return "(absent)" if value is _MISSING else format_value(value)
