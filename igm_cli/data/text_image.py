"""Preparation shared by the text–image datasets: posts (text + image id) → token rows and shared images.

Text is tokenized in the main process (fast tokenizers batch it). Every distinct image is
decoded once, by the resumable worker pool of the audio–video datasets, into a staging
directory beside `--out`; each split then stores its distinct images once
(`image.npy`) and a sample → image index (`image.rows.npy`), so posts that share an image
share its stored array. A post whose image is missing or corrupt is skipped and counted.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.format import open_memmap

from .base import PrepareOptions
from .clips import fill, refuse_empty_splits, refuse_if_strict
from .images import ImageSpec, decode_item
from .manifest import Manifest, array_path, finish_prepared, partial_dir, rows_path
from .staging import REASONS, Staging
from .text import TextSpec, load_tokenizer, tokenize, tokenizer_record

LIBRARIES = ("pillow", "transformers", "tokenizers")


@dataclass(frozen=True)
class Post:
    """One sample: its id, class index, cleaned text (and optional second segment), image file."""

    id: str
    label: int
    text: str
    image: Path
    pair: str | None = None


@dataclass(frozen=True)
class ImageItem:
    """One distinct image to decode (the staging plan's unit; `label` is unused)."""

    id: str
    path: Path
    label: int = 0


def staging_dir(out: Path) -> Path:
    """Where the decoded images of `out` are assembled (a re-run resumes from it)."""
    return out.with_name(f".{out.name}.images.partial")


def distinct_images(plan: dict[str, list[Post]]) -> list[ImageItem]:
    """Every image the posts use, once, sorted by path."""
    paths = sorted({str(p.image) for posts in plan.values() for p in posts})
    return [ImageItem(path, Path(path)) for path in paths]


def fingerprint(items: list[ImageItem], spec: ImageSpec) -> str:
    """Identifies the image plan; a staging directory is resumed only by the same one."""
    doc = {"images": [i.id for i in items], "spec": spec.record()}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def prepare_posts(
    out: Path,
    plan: dict[str, list[Post]],
    text: TextSpec,
    image: ImageSpec,
    opts: PrepareOptions,
    *,
    dataset: str,
    classes: list[str],
    preprocessing: dict[str, Any],
    skipped: dict[str, list[str]],
    source: Path,
) -> Manifest:
    """Tokenize every post, decode every distinct image once (resumably), then publish `out`."""
    out = Path(out)
    tokenizer = load_tokenizer(text.tokenizer)  # first: offline without it, fail before any decoding
    refuse_if_strict(opts, skipped)
    items = distinct_images(plan)
    staging = Staging.open(
        staging_dir(out), {"images": items}, {"image": (image.shape, "uint8")}, fingerprint(items, image)
    )
    with staging:
        todo = staging.pending()
        opts.say(
            f"{dataset}: {sum(map(len, plan.values()))} posts, {len(items)} distinct images, "
            f"{len(items) - len(todo)} already decoded, {len(todo)} to decode with {opts.jobs} job(s)"
        )
        fill(staging, todo, image, opts, decode=decode_item, unit="images")
        bad = {i: reason for reason, ids in staging.skipped().items() for i in ids}
        kept = {s: [p for p in posts if str(p.image) not in bad] for s, posts in plan.items()}
        for posts in plan.values():
            for p in posts:
                if str(p.image) in bad:
                    skipped.setdefault(bad[str(p.image)], []).append(p.id)
        refuse_if_strict(opts, skipped)
        refuse_empty_splits({s: len(posts) for s, posts in kept.items()}, skipped)
        staging.finish()
        decoded = (staging.root / "images" / "ids.txt").read_text().splitlines()
        table = np.load(array_path(staging.root, "images", "image"), mmap_mode="r", allow_pickle=False)
        tmp = partial_dir(out)
        shutil.rmtree(tmp, ignore_errors=True)
        for split, posts in kept.items():
            _write_split(tmp / split, posts, tokenizer, text, table, {p: r for r, p in enumerate(decoded)})
        del table
    shutil.rmtree(staging.root, ignore_errors=True)
    text_record = preprocessing.get("text", {}) | tokenizer_record(tokenizer, text)
    preprocessing = preprocessing | {"text": text_record}
    return finish_prepared(
        tmp,
        out,
        dataset=dataset,
        classes=classes,
        preprocessing=preprocessing | {"image": preprocessing.get("image", {}) | image.record()},
        source=str(source),
        skipped={r: sorted(ids) for r in REASONS if (ids := skipped.get(r))},
        libraries=LIBRARIES,
    )


def _write_split(
    folder: Path, posts: list[Post], tokenizer: Any, text: TextSpec, table: np.ndarray, row_of: dict[str, int]
) -> None:
    """text.npy, image.npy (distinct images, first-use order), image.rows.npy, labels.npy, ids.txt."""
    folder.mkdir(parents=True)
    order: dict[str, int] = {}
    index = np.array([order.setdefault(str(p.image), len(order)) for p in posts], dtype=np.int64)
    source_rows = np.array([row_of[path] for path in order], dtype=np.int64)
    images = open_memmap(
        array_path(folder.parent, folder.name, "image"),
        mode="w+",
        dtype=np.uint8,
        shape=(len(order), *table.shape[1:]),
    )
    for start in range(0, len(source_rows), 256):  # bounded memory
        images[start : start + 256] = table[source_rows[start : start + 256]]
    images.flush()
    del images
    pairs = [p.pair or "" for p in posts] if any(p.pair for p in posts) else None
    tokens = tokenize(tokenizer, [p.text for p in posts], pairs, text.max_tokens)
    np.save(array_path(folder.parent, folder.name, "text"), tokens, allow_pickle=False)
    np.save(rows_path(folder.parent, folder.name, "image"), index, allow_pickle=False)
    labels = np.array([p.label for p in posts], dtype=np.int64)
    np.save(array_path(folder.parent, folder.name, "labels"), labels, allow_pickle=False)
    (folder / "ids.txt").write_text("".join(f"{p.id}\n" for p in posts))
