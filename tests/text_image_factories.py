"""Writers of tiny Twitter2015 and Sarcasm downloads in the real formats, and a tiny offline tokenizer.

Twitter2015: TomBERT's TSVs (real header, `$T$` placeholders, rows sharing images) beside
`twitter2015_images/`. Sarcasm: `text/*.txt` with one Python list literal per line and
`dataset_image/<tweet_id>.jpg`. Image k is a flat colour `image_colour(k)`, so a test can
tell which file a stored image came from.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from tests.raw_factories import write_garbage

TWITTER_HEADER = ["index", "#1 Label", "#2 ImageID", "#3 String", "#3 String"]
WORDS = "the cat dog sat on a mat and it was good bad great awful day night with my friend".split()


def image_colour(k: int) -> tuple[int, int, int]:
    """The flat RGB colour of generated image k (distinct for k < 40)."""
    return (20 + 6 * k) % 250, (200 - 5 * k) % 250, (60 + 11 * k) % 250


def write_jpeg(path: Path, k: int, size: tuple[int, int] = (48, 36)) -> None:
    """A JPEG of flat colour image_colour(k), `size` = (width, height)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, image_colour(k)).save(path, format="JPEG", quality=95)


def make_tokenizer(folder: Path, corpus: list[str] | None = None) -> Path:
    """A tiny WordPiece tokenizer trained offline with `tokenizers`, saved with save_pretrained."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    text = corpus or [" ".join(WORDS)] * 3 + ["joke jokes joker humor target user url num"]
    tok.train_from_iterator(text, trainers.WordPieceTrainer(vocab_size=120, special_tokens=special))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    fast = BertTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    fast.save_pretrained(folder)
    return Path(folder)


def sentence(i: int, words: int = 6) -> str:
    """A deterministic sentence of `words` words."""
    return " ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(words))


@dataclass
class RawTwitter:
    """What make_twitter2015 wrote."""

    root: Path  # the folder of the TSVs
    images: Path
    rows: dict[str, int]  # split → rows written (all parsable)
    posts: dict[str, int]  # split → rows whose image is intact
    missing: str = ""  # image id referenced but absent
    corrupt: str = ""  # image id whose file is garbage
    unparsable: int = 0  # extra malformed lines in train
    image_of: dict[str, str] = field(default_factory=dict)  # "<split>/<index>" → image id
    long_words: int = 0


def make_twitter2015(
    root: Path, per_split=(("train", 9), ("val", 6), ("test", 6)), long_words: int = 80
) -> RawTwitter:
    """TomBERT layout: <root>/absa_data/twitter2015/{train,dev,test}.tsv and <root>/twitter2015_images/."""
    tsv_dir, images = Path(root) / "absa_data" / "twitter2015", Path(root) / "twitter2015_images"
    tsv_dir.mkdir(parents=True, exist_ok=True)
    raw = RawTwitter(
        tsv_dir, images, {}, {}, missing="999999.jpg", corrupt="888888.jpg", long_words=long_words
    )
    k = 0
    for split, count in per_split:
        name = {"val": "dev"}.get(split, split)
        rows = []
        for i in range(count):
            image = f"{100 + k // 2}.jpg"  # two consecutive rows (two targets) share an image
            if split == "train" and i == count - 2:
                image = raw.missing
            if split == "train" and i == count - 1:
                image = raw.corrupt
            tweet = f"RT @user: {sentence(k)} $T$ , {sentence(k + 1, 3)}!! #tag"
            if split == "train" and i == 0:  # longer than any --max-tokens: truncation must act
                tweet = " ".join([tweet] + [sentence(j) for j in range(long_words // 6)])
            rows.append([str(1000 + k), str(k % 3), image, tweet, "the cat" if k % 2 else "my friend"])
            raw.image_of[f"{split}/{1000 + k}"] = image
            k += 1
        with open(tsv_dir / f"{name}.tsv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(
                f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\", lineterminator="\n"
            )
            writer.writerow(TWITTER_HEADER)
            writer.writerows(rows)
            if split == "train":
                f.write("not\ta\tvalid row\n")
                f.write("1234\t7\t1.jpg\ttext\ttarget\n")  # label out of range
                raw.unparsable = 2
        raw.rows[split] = count
        raw.posts[split] = count - (2 if split == "train" else 0)
    for image_id in sorted(set(raw.image_of.values()) - {raw.missing, raw.corrupt}):
        write_jpeg(
            images / image_id, int(image_id.split(".")[0]) - 100, size=(48 + int(image_id[:3]) % 3 * 8, 36)
        )
    write_garbage(images / raw.corrupt)
    return raw


@dataclass
class RawSarcasm:
    """What make_sarcasm wrote."""

    root: Path
    kept: dict[str, list[str]]  # split → tweet ids that must survive
    filtered: list[str]  # train tweet ids the token filter must drop
    missing: str = ""
    corrupt: str = ""
    unparsable: int = 0


def make_sarcasm(root: Path, per_split=(("train", 8), ("val", 5), ("test", 5))) -> RawSarcasm:
    """headacheboy layout: text/train.txt, text/valid2.txt, text/test2.txt and dataset_image/<id>.jpg."""
    root = Path(root)
    raw = RawSarcasm(root, {s: [] for s, _ in per_split}, [])
    lines: dict[str, list[str]] = {s: [] for s, _ in per_split}
    n = 0
    for split, count in per_split:
        for i in range(count):
            tweet_id = str(800000000000000000 + n)
            text = f"<user> {sentence(n)} ! # lol"
            if split == "train" and i == 0:
                # filter words only as substrings: kept
                text = "this is the jokester 's day , a joker and humorous # sarcasmfail"
            if split == "train" and i == 1:
                text = " ".join([sentence(j) for j in range(15)])  # long: truncated
            label = n % 2
            item = [tweet_id, text, label] if split == "train" else [tweet_id, text, 1 - label, label]
            lines[split].append(repr(item))
            raw.kept[split].append(tweet_id)
            write_jpeg(root / "dataset_image" / f"{tweet_id}.jpg", n % 40)
            n += 1
    for j, text in enumerate(["what a joke <user>", "see <url>", "pure sarcasm here", "i love irony ."]):
        tweet_id = str(810000000000000000 + j)
        lines["train"].append(repr([tweet_id, text, 1]))
        raw.filtered.append(tweet_id)
        write_jpeg(root / "dataset_image" / f"{tweet_id}.jpg", j)
    raw.missing, raw.corrupt = str(820000000000000001), str(820000000000000002)
    lines["train"] += [repr([raw.missing, "a day with my friend", 0]), repr([raw.corrupt, "a good day", 1])]
    write_garbage(root / "dataset_image" / f"{raw.corrupt}.jpg")
    lines["train"] += ["['123', 'unterminated", "__import__('os').system('echo pwned')", "[1, 2]"]
    raw.unparsable = 3
    for split, name in (("train", "train.txt"), ("val", "valid2.txt"), ("test", "test2.txt")):
        (root / "text").mkdir(parents=True, exist_ok=True)
        (root / "text" / name).write_text("\n".join(lines[split]) + "\n", encoding="utf-8")
    return raw
