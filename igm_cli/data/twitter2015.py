"""Twitter2015 (text + image, 3 sentiment classes) from the TomBERT TSVs and the image folder.

`train.tsv`, `dev.tsv`, `test.tsv` (header `index  #1 Label  #2 ImageID  #3 String  #3 String`:
the tweet with its target replaced by `$T$`, then the target). One row per target, so
rows share images. dev is the validation split. Text: `$T$` handled by `--target`, then
the reference's cleaning (letters only, lowercase, no punctuation, ≤ 50 words).
"""

from __future__ import annotations

import csv
from pathlib import Path

from ..errors import DataError
from .base import PrepareOptions, check_options, require_source
from .images import ImageSpec
from .manifest import Manifest
from .text import MASK, TextSpec, clean_caption, letters_only
from .text_image import Post, prepare_posts

NAME = "twitter2015"
MODALITIES = ("text", "image")
OPTIONS = frozenset({"images", "tokenizer", "max_tokens", "image_size", "target"})
CLASSES = ["negative", "neutral", "positive"]  # the TSV labels 0, 1, 2
FILES = {"train": "train.tsv", "val": "dev.tsv", "test": "test.tsv"}
HEADER = ["index", "#1 Label", "#2 ImageID", "#3 String", "#3 String"]
PLACEHOLDER = "$T$"
TOKENIZER, MAX_TOKENS, IMAGE_SIZE, MAX_WORDS = "bert-base-uncased", 64, 256, 50
LAYOUT = "the folder of TomBERT's train.tsv, dev.tsv, test.tsv (absa_data/twitter2015)"


def clean(text: str, max_words: int = MAX_WORDS) -> str:
    """The reference's Twitter cleaning: `[A-Za-z]+` runs, then lowercase / punctuation / word limit."""
    return clean_caption(letters_only(text), max_words)


def post_text(tweet: str, target: str, mode: str) -> tuple[str, str | None]:
    """(text, second segment) of one row for `--target substitute|mask|append`."""
    if mode == "mask":  # clean around the placeholder so the mask token survives the cleaning
        parts = [clean(part, 10**9) for part in tweet.split(PLACEHOLDER)]
        words = f" {MASK} ".join(parts).split()
        return " ".join(words[:MAX_WORDS]), None
    text = clean(tweet.replace(PLACEHOLDER, target))
    return text, (clean(target) if mode == "append" else None)


def find_images(source: Path, given: Path | None) -> Path:
    """--images, else twitter2015_images/ in or beside the TSV folder, else the TSV folder itself."""
    if given is not None:
        if not Path(given).is_dir():
            raise DataError(f"--images {given} is not a directory")
        return Path(given)
    for folder in (
        source / "twitter2015_images",
        source.parent / "twitter2015_images",
        source.parent.parent / "twitter2015_images",
    ):
        if folder.is_dir():
            return folder
    if any(source.glob("*.jpg")):
        return source
    raise DataError(f"{source}: no twitter2015_images/ folder in or beside it; give it with --images DIR")


def read_split(path: Path, split: str, images: Path, mode: str) -> tuple[list[Post], list[str], int]:
    """(posts, ids of unparsable lines, rows read) of one TSV."""
    posts, bad, rows = [], [], 0
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != HEADER:
            raise DataError(f"{path}: expected the TomBERT header {' | '.join(HEADER)}, got {header}")
        for row in reader:
            if not row:
                continue
            rows += 1
            where = f"{path.name}:{reader.line_num}"
            if len(row) != 5 or row[1].strip() not in ("0", "1", "2") or not row[2].strip():
                bad.append(where)
                continue
            text, pair = post_text(row[3], row[4], mode)
            image = images / row[2].strip()
            posts.append(Post(f"{split}/{row[0].strip()}", int(row[1]), text, image, pair))
    return posts, bad, rows


def prepare(source: Path | None, out: Path, opts: PrepareOptions | None = None) -> Manifest:
    """TomBERT TSVs + twitter2015_images → prepared `text` (3×L int32) and `image` (3×S×S uint8)."""
    opts = opts or PrepareOptions()
    check_options(NAME, OPTIONS, opts)
    source = require_source(NAME, source, LAYOUT)
    missing = [name for name in FILES.values() if not (source / name).is_file()]
    if missing:
        raise DataError(f"{source} is not a Twitter2015 download: {', '.join(missing)} missing ({LAYOUT})")
    images = find_images(source, opts.images)
    mode = opts.target or "substitute"
    plan, skipped, counts = {}, {}, {}
    for split, name in FILES.items():
        plan[split], bad, rows = read_split(source / name, split, images, mode)
        skipped.setdefault("unparsable line", []).extend(bad)
        counts[split] = {"rows": rows, "unparsable": len(bad), "posts": len(plan[split])}
    text = TextSpec(opts.tokenizer or TOKENIZER, opts.max_tokens or MAX_TOKENS, MAX_WORDS)
    preprocessing = {
        "labels": "#1 Label: 0 negative, 1 neutral, 2 positive",
        "split": "the official train.tsv / dev.tsv (validation) / test.tsv",
        "counts": counts,
        "text": {
            "source": "#3 String (tweet with $T$) and the second #3 String (the target)",
            "target": mode,
            "target_modes": "substitute: $T$ replaced by the target; mask: by the tokenizer's mask token; "
            "append: substituted, and the target as the second segment ([SEP] target [SEP])",
            "cleaning": "keep [A-Za-z]+ runs; lowercase; strip ,.'!?\"()*#:;~; - and / to spaces; "
            f"at most {MAX_WORDS} words (the reference's clean_str + pre_caption)",
        },
        "image": {"source": str(images), "file": "#2 ImageID in the image folder"},
        "ids": "<split>/ids.txt: <split>/<TSV index> per row, in row order",
    }
    return prepare_posts(
        out,
        plan,
        text,
        ImageSpec(opts.image_size or IMAGE_SIZE),
        opts,
        dataset=NAME,
        classes=CLASSES,
        preprocessing=preprocessing,
        skipped=skipped,
        source=source,
    )
