"""Sarcasm (text + image, 2 classes): Cai et al.'s `text/*.txt` list literals and `<tweet_id>.jpg` images.

`train.txt` lines are `[tweet_id, text, label]`, `valid2.txt` / `test2.txt` lines
`[tweet_id, text, hashtag_label, human_label]`, parsed with `ast.literal_eval` (never
`eval`). Train posts with a filter word among their whitespace tokens are dropped, as the
reference loader does (whole tokens: 19,816 / 2,410 / 2,409 on the real files; substring
matching would silently give 19,557 train posts).
"""

from __future__ import annotations

import ast
from pathlib import Path

from ..errors import DataError
from .base import PrepareOptions, check_options, require_source
from .images import ImageSpec
from .manifest import Manifest
from .text import TextSpec, clean_caption
from .text_image import Post, prepare_posts

NAME = "sarcasm"
MODALITIES = ("text", "image")
OPTIONS = frozenset({"images", "tokenizer", "max_tokens", "image_size", "label"})
CLASSES = ["not sarcastic", "sarcastic"]  # labels 0, 1
FILES = {"train": "train.txt", "val": "valid2.txt", "test": "test2.txt"}
FILTER_WORDS = frozenset(
    {
        "sarcasm",
        "sarcastic",
        "reposting",
        "<url>",
        "joke",
        "humour",
        "humor",
        "jokes",
        "irony",
        "ironic",
        "exgag",
    }
)
FILTERED_SPLITS = ("train",)
TOKENIZER, MAX_TOKENS, IMAGE_SIZE, MAX_WORDS = "bert-base-uncased", 64, 256, 50
LAYOUT = "the data-of-multimodal-sarcasm-detection folder: text/train.txt, text/valid2.txt, text/test2.txt"


def is_filtered(text: str) -> bool:
    """True when a filter word is one of the text's whitespace tokens (not merely a substring)."""
    return not FILTER_WORDS.isdisjoint(text.split())


def parse_line(line: str, split: str, label: str) -> tuple[str, str, int] | None:
    """(tweet id, text, label) of one list literal; None if it is not one of the expected shape."""
    try:
        value = ast.literal_eval(line)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    width = 3 if split == "train" else 4
    if not isinstance(value, list | tuple) or len(value) != width or not isinstance(value[1], str):
        return None
    tweet_id, y = str(value[0]).strip(), value[-1] if split == "train" or label == "human" else value[2]
    if not tweet_id.isdigit() or y not in (0, 1) or isinstance(y, bool):
        return None
    return tweet_id, value[1], int(y)


def find_images(source: Path, given: Path | None) -> Path:
    """--images, else the first of dataset_image/, images/ or the source folder holding .jpg files."""
    if given is not None:
        if not Path(given).is_dir():
            raise DataError(f"--images {given} is not a directory")
        return Path(given)
    for folder in (source / "dataset_image", source / "images", source):
        if folder.is_dir() and any(folder.glob("*.jpg")):
            return folder
    raise DataError(f"{source}: no folder of <tweet_id>.jpg images (dataset_image/); give --images DIR")


def read_split(path: Path, split: str, images: Path, label: str) -> tuple[list[Post], list[str], dict]:
    """(posts, ids of unparsable lines, counts) of one text file."""
    posts, bad, counts = [], [], {"lines": 0, "unparsable": 0, "filtered": 0}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            counts["lines"] += 1
            parsed = parse_line(line, split, label)
            if parsed is None:
                bad.append(f"{path.name}:{number}")
                continue
            tweet_id, text, y = parsed
            if split in FILTERED_SPLITS and is_filtered(text):
                counts["filtered"] += 1
                continue
            posts.append(Post(tweet_id, y, clean_caption(text, MAX_WORDS), images / f"{tweet_id}.jpg"))
    counts["unparsable"], counts["posts"] = len(bad), len(posts)
    return posts, bad, counts


def prepare(source: Path | None, out: Path, opts: PrepareOptions | None = None) -> Manifest:
    """text/*.txt + <tweet_id>.jpg → prepared `text` (3×L int32) and `image` (3×S×S uint8)."""
    opts = opts or PrepareOptions()
    check_options(NAME, OPTIONS, opts)
    source = require_source(NAME, source, LAYOUT)
    text_dir = source / "text" if (source / "text").is_dir() else source
    missing = [name for name in FILES.values() if not (text_dir / name).is_file()]
    if missing:
        raise DataError(f"{source} is not a Sarcasm download: {', '.join(missing)} missing ({LAYOUT})")
    images = find_images(source, opts.images)
    label = opts.label or "human"
    plan, skipped, counts = {}, {}, {}
    for split, name in FILES.items():
        plan[split], bad, counts[split] = read_split(text_dir / name, split, images, label)
        skipped.setdefault("unparsable line", []).extend(bad)
    found = ", ".join(f"{s} {c['posts']} posts ({c['filtered']} filtered)" for s, c in counts.items())
    opts.say(f"sarcasm: {found}")
    preprocessing = {
        "labels": "0 not sarcastic, 1 sarcastic; train: the last element; valid/test: "
        + ("the last element (human annotator)" if label == "human" else "the hashtag label (3rd element)"),
        "label": label,
        "split": "the files train.txt / valid2.txt (validation) / test2.txt",
        "filter": {
            "words": sorted(FILTER_WORDS),
            "rule": "drop a post when a filter word is one of its whitespace tokens (not a substring)",
            "splits": list(FILTERED_SPLITS),
        },
        "counts": counts,
        "text": {"cleaning": f"lowercase; strip ,.'!?\"()*#:;~; - and / to spaces; <= {MAX_WORDS} words"},
        "image": {"source": str(images), "file": "<tweet_id>.jpg"},
        "ids": "<split>/ids.txt: the tweet id of every row, in row order",
    }
    return prepare_posts(
        out,
        plan,
        TextSpec(opts.tokenizer or TOKENIZER, opts.max_tokens or MAX_TOKENS, MAX_WORDS),
        ImageSpec(opts.image_size or IMAGE_SIZE),
        opts,
        dataset=NAME,
        classes=CLASSES,
        preprocessing=preprocessing,
        skipped=skipped,
        source=source,
    )
