"""`igm prepare twitter2015|sarcasm` on tiny downloads in the real formats, offline tokenizer."""

import hashlib
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from igm_cli.cli import app
from igm_cli.data import images as images_module
from igm_cli.data.base import PrepareOptions
from igm_cli.data.prepared import PreparedDataset
from igm_cli.data.sarcasm import is_filtered, parse_line
from igm_cli.data.text import clean_caption, letters_only
from igm_cli.data.twitter2015 import post_text
from igm_cli.preparation import prepare_dataset
from tests.text_image_factories import image_colour, make_sarcasm, make_tokenizer, make_twitter2015

runner = CliRunner()
MAX_TOKENS, SIZE = 20, 32


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("tok") / "wordpiece")


@pytest.fixture(scope="module")
def twitter(tmp_path_factory, tokenizer_dir):
    raw = make_twitter2015(tmp_path_factory.mktemp("raw"))
    out = tmp_path_factory.mktemp("prepared") / "twitter2015"
    args = [
        "prepare",
        "twitter2015",
        "--source",
        str(raw.root),
        "--out",
        str(out),
        "--tokenizer",
        str(tokenizer_dir),
        "--max-tokens",
        str(MAX_TOKENS),
        "--image-size",
        str(SIZE),
        "--json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    return raw, out, json.loads(result.stdout)


@pytest.fixture(scope="module")
def sarcasm(tmp_path_factory, tokenizer_dir):
    raw = make_sarcasm(tmp_path_factory.mktemp("raw-sarcasm"))
    out = tmp_path_factory.mktemp("prepared") / "sarcasm"
    args = [
        "prepare",
        "sarcasm",
        "--source",
        str(raw.root),
        "--out",
        str(out),
        "--tokenizer",
        str(tokenizer_dir),
        "--max-tokens",
        str(MAX_TOKENS),
        "--image-size",
        str(SIZE),
        "--json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    return raw, out, json.loads(result.stdout)


def ids(out, split):
    return (out / split / "ids.txt").read_text().split()


def test_cleaning_is_the_references():
    assert letters_only("RT @user: it's 2 GOOD!! #tag") == "RT user it s GOOD tag"
    assert (
        clean_caption("Hello, World! It's (a) test-case/two <person>  here")
        == "hello world its a test case two person here"
    )
    assert clean_caption(" ".join(["w"] * 60)) == " ".join(["w"] * 50)
    assert post_text("I met $T$ today!", "Bob Smith", "substitute") == ("i met bob smith today", None)
    assert post_text("I met $T$ today!", "Bob Smith", "append") == ("i met bob smith today", "bob smith")
    assert post_text("I met $T$ today!", "Bob Smith", "mask") == ("i met [MASK] today", None)


def test_sarcasm_filter_matches_whole_tokens_and_lines_are_literals_not_code(tmp_path):
    assert is_filtered("what a joke <user>") and is_filtered("see <url>") and is_filtered("# irony")
    assert not is_filtered("the jokester 's joker # sarcasmfail humorous")  # substrings only
    assert parse_line("['12', 'a b', 1]", "train", "human") == ("12", "a b", 1)
    assert parse_line("['12', 'a b', 0, 1]", "val", "human") == ("12", "a b", 1)
    assert parse_line("['12', 'a b', 0, 1]", "val", "hashtag") == ("12", "a b", 0)
    marker = tmp_path / "pwned"
    assert parse_line(f"__import__('pathlib').Path({str(marker)!r}).touch()", "train", "human") is None
    assert not marker.exists()
    assert (
        parse_line("['12', 'a b', 3]", "train", "human") is None
        and parse_line("[1, 2", "train", "human") is None
    )


def test_twitter_prepare_writes_the_contract(twitter, tokenizer_dir):
    raw, out, summary = twitter
    assert summary["splits"] == {"train": 7, "val": 6, "test": 6}  # 9 − missing − corrupt; dev = val
    assert summary["skipped"] == {"missing image": 1, "corrupt image": 1, "unparsable line": 2}
    assert summary["counts"]["train"] == {"rows": 11, "unparsable": 2, "posts": 9}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["classes"] == ["negative", "neutral", "positive"]
    assert manifest["modalities"] == {
        "image": {"shape": [3, SIZE, SIZE], "dtype": "uint8"},
        "text": {"shape": [3, MAX_TOKENS], "dtype": "int32"},
    }
    text = manifest["preprocessing"]["text"]
    assert text["target"] == "substitute" and text["max_tokens"] == MAX_TOKENS
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    assert text["vocab_sha256"] == hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()
    assert manifest["preprocessing"]["image"]["resize"].startswith(f"short side to {SIZE}")
    assert {"pillow", "transformers", "tokenizers"} <= set(manifest["versions"])
    assert manifest["skipped"]["missing image"] == ["train/1007"]
    assert [p.name for p in out.parent.iterdir()] == ["twitter2015"]  # no staging or lock left
    assert runner.invoke(app, ["prepare", "twitter2015", "--verify", str(out)]).exit_code == 0


def test_rows_sharing_an_image_share_its_stored_array(twitter):
    raw, out, _ = twitter
    data = PreparedDataset.open(out)
    for split in ("train", "val", "test"):
        names = [raw.image_of[i] for i in ids(out, split)]
        table = np.load(out / split / "image.npy")
        index = np.load(out / split / "image.rows.npy")
        assert len(table) == len(set(names)) < len(names)  # two targets per image
        for name, row in zip(names, index, strict=True):
            colour = image_colour(int(name.split(".")[0]) - 100)  # the flat colour of that file
            assert np.abs(table[row].reshape(3, -1).mean(1) - colour).max() < 4
        assert np.array_equal(np.asarray(data.split(split).inputs["image"]), table[index])


def test_every_distinct_image_is_decoded_once(tmp_path, tokenizer_dir, monkeypatch):
    raw = make_twitter2015(tmp_path / "raw")
    calls = []
    real = images_module.decode_image
    monkeypatch.setattr(
        images_module, "decode_image", lambda path, spec: calls.append(path) or real(path, spec)
    )
    opts = PrepareOptions(tokenizer=str(tokenizer_dir), max_tokens=MAX_TOKENS, image_size=SIZE)
    prepare_dataset("twitter2015", source=raw.root, out=tmp_path / "out", options=opts)
    assert len(calls) == len(set(calls)) == len(set(raw.image_of.values()))


def test_text_is_truncated_for_real(twitter, tokenizer_dir):
    raw, out, _ = twitter
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    text = np.load(out / "train" / "text.npy")
    long_row = ids(out, "train").index("train/1000")
    full = tok(
        post_text(*(raw.root / "train.tsv").read_text().splitlines()[1].split("\t")[3:5], "substitute")[0]
    )
    assert len(full["input_ids"]) > MAX_TOKENS  # the reference would keep all of them
    assert text[long_row, 1].tolist() == [1] * MAX_TOKENS  # no padding: cut at max_tokens
    assert text[long_row, 0, :-1].tolist() == full["input_ids"][: MAX_TOKENS - 1]
    assert text[long_row, 0, -1] == tok.sep_token_id
    short = text[ids(out, "train").index("train/1001")]
    assert short[1].sum() < MAX_TOKENS and set(short[0][short[1] == 0].tolist()) == {tok.pad_token_id}


@pytest.mark.parametrize("mode", ["mask", "append"])
def test_target_modes(tmp_path, tokenizer_dir, mode):
    raw = make_twitter2015(tmp_path / "raw", per_split=(("train", 4), ("val", 2), ("test", 2)))
    images = raw.images if mode == "append" else None  # --images given, or found beside the TSVs
    opts = PrepareOptions(
        tokenizer=str(tokenizer_dir), max_tokens=40, image_size=16, target=mode, images=images
    )
    prepare_dataset("twitter2015", source=raw.root, out=tmp_path / "out", options=opts)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    text = np.load(tmp_path / "out" / "val" / "text.npy")
    from transformers import AutoTokenizer

    mask_id = AutoTokenizer.from_pretrained(tokenizer_dir).mask_token_id
    assert manifest["preprocessing"]["text"]["target"] == mode
    assert (mask_id in text[:, 0]) == (mode == "mask")
    assert (text[:, 2].max() == 1) == (mode == "append")  # the target as a second segment


def test_sarcasm_filter_labels_and_counts(sarcasm):
    raw, out, summary = sarcasm
    assert summary["counts"]["train"] == {"lines": 17, "unparsable": 3, "filtered": 4, "posts": 10}
    assert summary["splits"] == {"train": 8, "val": 5, "test": 5}
    assert summary["skipped"] == {"missing image": 1, "corrupt image": 1, "unparsable line": 3}
    for split in ("train", "val", "test"):
        assert ids(out, split) == raw.kept[split]  # the substring-only post survives, in file order
    assert not set(raw.filtered) & set(ids(out, "train"))
    labels = np.load(out / "val" / "labels.npy")  # human = the last element: n % 2 by construction
    assert labels.tolist() == [int(i) % 2 for i in ids(out, "val")]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["preprocessing"]["filter"]["splits"] == ["train"]
    assert manifest["preprocessing"]["counts"]["train"]["filtered"] == 4


def test_sarcasm_hashtag_label(tmp_path, tokenizer_dir):
    raw = make_sarcasm(tmp_path / "raw")
    opts = PrepareOptions(tokenizer=str(tokenizer_dir), max_tokens=8, image_size=16, label="hashtag")
    prepare_dataset("sarcasm", source=raw.root, out=tmp_path / "out", options=opts)
    labels = np.load(tmp_path / "out" / "test" / "labels.npy")
    assert labels.tolist() == [1 - int(i) % 2 for i in ids(tmp_path / "out", "test")]


def test_strict_offline_tokenizer_and_verify_errors(tmp_path, sarcasm, tokenizer_dir):
    raw, out, _ = sarcasm
    base = ["prepare", "sarcasm", "--source", str(raw.root), "--image-size", "16"]
    strict = runner.invoke(app, [*base, "--out", "s", "--tokenizer", str(tokenizer_dir), "--strict"])
    errors = [line for line in strict.stderr.splitlines() if line.startswith("error:")]
    assert strict.exit_code == 3 and errors == [strict.stderr.strip().splitlines()[-1]]
    assert (
        "train.txt:15: unparsable line (and 2 more) (--strict)" in errors[0] and not (tmp_path / "s").exists()
    )
    offline = runner.invoke(app, [*base, "--out", "o"])  # default bert-base-uncased, HF_HUB_OFFLINE=1
    assert offline.exit_code == 3 and "--tokenizer" in offline.stderr and "Traceback" not in offline.stderr
    assert runner.invoke(app, [*base, "--out", "t", "--target", "mask"]).exit_code == 2  # twitter2015 only
    missing = runner.invoke(
        app, [*base, "--out", "m", "--tokenizer", str(tokenizer_dir), "--images", "nowhere"]
    )
    assert missing.exit_code == 3 and "--images nowhere is not a directory" in missing.stderr
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    np.save(copy / "train" / "image.rows.npy", np.zeros(3, np.int64))
    bad = runner.invoke(app, ["prepare", "sarcasm", "--verify", str(copy)])
    assert bad.exit_code == 3 and "train/image.rows.npy" in bad.stderr


def test_an_interrupted_prepare_resumes_the_decoded_images(tmp_path, tokenizer_dir, monkeypatch):
    raw = make_sarcasm(tmp_path / "raw")
    real, calls = images_module.decode_image, []

    def stop_after_five(path, spec):
        if len(calls) == 5:
            raise KeyboardInterrupt
        calls.append(path)
        return real(path, spec)

    monkeypatch.setattr(images_module, "decode_image", stop_after_five)
    opts = PrepareOptions(tokenizer=str(tokenizer_dir), max_tokens=8, image_size=16, progress=print)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset("sarcasm", source=raw.root, out=tmp_path / "out", options=opts)
    assert not (tmp_path / "out").exists()
    monkeypatch.setattr(
        images_module, "decode_image", lambda path, spec: calls.append(path) or real(path, spec)
    )
    prepare_dataset("sarcasm", source=raw.root, out=tmp_path / "out", options=opts)
    assert len(calls) == len(set(calls))  # nothing decoded twice
    assert PreparedDataset.open(tmp_path / "out").split("train").labels.shape == (8,)


def test_two_jobs_give_the_same_arrays(sarcasm, tmp_path, tokenizer_dir):
    raw, out, _ = sarcasm
    opts = PrepareOptions(jobs=2, tokenizer=str(tokenizer_dir), max_tokens=MAX_TOKENS, image_size=SIZE)
    prepare_dataset("sarcasm", source=raw.root, out=tmp_path / "j2", options=opts)
    for split in ("train", "val", "test"):
        for name in ("image", "image.rows", "text", "labels"):
            assert np.array_equal(
                np.load(out / split / f"{name}.npy"), np.load(tmp_path / "j2" / split / f"{name}.npy")
            )
