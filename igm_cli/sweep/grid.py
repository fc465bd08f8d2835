"""Parsing of `igm sweep` arguments: `--grid key=v1,v2`, `--range key=lo:hi[:log]`, seeds, shards.

Grid values are YAML scalars, exactly as `--set` parses them (so `0`, `false`, `1e-3` and
`[1,1]` work); commas inside brackets or quotes do not separate values.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from ..presets import parse_override

_OPENERS, _CLOSERS = "[{(", "]})"
METRICS = ("accuracy", "macro_f1", "map", "loss")


def split_values(text: str) -> list[str]:
    """Split on commas outside brackets and quotes: `[1,1],[2,2]` → `['[1,1]', '[2,2]']`."""
    parts, current, depth, quote = [], [], 0, ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in _OPENERS:
            depth += 1
        elif char in _CLOSERS:
            depth -= 1
        elif char == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return [p.strip() for p in parts]


def parse_grid(item: str) -> tuple[str, list[Any]]:
    """`key=v1,v2,...` → (key, values parsed as `--set` parses them)."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or not text.strip():
        raise UsageError(f"invalid --grid {item!r}: expected key.path=v1,v2,...")
    values = [parse_override(f"{key}={raw}")[1] for raw in split_values(text)]
    return key, values


@dataclass(frozen=True)
class Range:
    """One `--range`: uniform (or log-uniform) in [low, high]; integers when both ends are."""

    key: str
    low: float
    high: float
    log: bool = False
    integer: bool = False

    def draw(self, rng: random.Random) -> int | float:
        """One value; floats are rounded to 4 significant digits so tables stay readable."""
        if self.log:
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            value = rng.uniform(self.low, self.high)
        if self.integer:
            return int(min(max(round(value), self.low), self.high))
        return min(max(float(f"{value:.4g}"), self.low), self.high)

    def as_json(self) -> dict[str, Any]:
        """How sweep.json records it."""
        return {"low": self.low, "high": self.high, "log": self.log, "integer": self.integer}


def parse_range(item: str) -> Range:
    """`key=lo:hi` or `key=lo:hi:log`."""
    key, sep, text = item.partition("=")
    fields = text.split(":")
    if not sep or not key.strip() or len(fields) not in (2, 3) or fields[2:] not in ([], ["log"]):
        raise UsageError(f"invalid --range {item!r}: expected key.path=low:high or key.path=low:high:log")
    try:
        low, high = (float(f) for f in fields[:2])
    except ValueError:
        raise UsageError(f"invalid --range {item!r}: low and high must be numbers") from None
    log = fields[2:] == ["log"]
    if not low < high or (log and low <= 0):
        raise UsageError(f"invalid --range {item!r}: need low < high{' and low > 0 for log' if log else ''}")
    integer = all(_is_int(f) for f in fields[:2])
    return Range(key.strip(), low, high, log, integer)


def _is_int(text: str) -> bool:
    try:
        int(text.strip())
    except ValueError:
        return False
    return True


def draw_settings(ranges: list[Range], n: int, seed: int) -> list[dict[str, Any]]:
    """N random settings from a seeded RNG; repeated draws (integer ranges) are dropped."""
    rng = random.Random(seed)
    draws: list[dict[str, Any]] = []
    for _ in range(n):
        draw = {r.key: r.draw(rng) for r in ranges}
        if draw not in draws:
            draws.append(draw)
    return draws


def parse_seeds(text: str) -> list[int]:
    """`0,1,2` → [0, 1, 2]; duplicates are an error."""
    try:
        seeds = [int(s) for s in split_values(text)]
    except ValueError:
        raise UsageError(f"invalid --seeds {text!r}: expected integers like 0,1,2") from None
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"invalid --seeds {text!r}: a seed is repeated")
    return seeds


def parse_shard(text: str) -> tuple[int, int]:
    """`i/n` with 0 ≤ i < n (0-based, like SLURM_ARRAY_TASK_ID)."""
    index, sep, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i, n = -1, 0
    if not sep or n < 1 or not 0 <= i < n:
        raise UsageError(f"invalid --shard {text!r}: expected i/n with 0 <= i < n (0-based), e.g. 0/4")
    return i, n


def parse_metric(text: str) -> tuple[str, str, str]:
    """`split.branch.metric`, e.g. `test.fused.accuracy`."""
    parts = text.split(".")
    if len(parts) != 3 or parts[0] not in ("val", "test") or parts[2] not in METRICS:
        raise UsageError(
            f"invalid --metric {text!r}: expected split.branch.metric with split val|test and "
            f"metric {'|'.join(METRICS)}, e.g. test.fused.accuracy"
        )
    return parts[0], parts[1], parts[2]


def format_value(value: Any) -> str:
    """A swept value as tables, plots and messages show it."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)
