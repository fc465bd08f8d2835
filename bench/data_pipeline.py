"""Prepared-data reader vs decoding every sample on the fly, and prepare throughput, in one run.

Writes synthetic CREMA-D clips in the real layout into a temp dir (16 kHz mono wav of
2.5 s; FLV 480×360 at 30 fps, 2.5 s, textured frames so the codec does real work), then:

- prepare: `igm prepare crema-d` (the library call) with --jobs 1 and --jobs 2, clips/s
  (wall clock, including the workers' start-up: each spawned worker imports librosa,
  1–5 s, which 60 clips do not amortise; the main process has it imported already);
- decoding alone through the same worker pool (clips.run_pool): seconds to the first clip
  (start-up) and clips/s after it (steady state, what matters for 7,442 clips);
- reader: samples/s of batches of 12 in a shuffled order from the prepared train split,
  (a) through igm_cli.engine.batches.SplitBatches (what training uses; it preloads a split
  this small into RAM) and (b) straight from the memory-mapped .npy files;
- on the fly: samples/s of what the reference loaders do per sample — load + resample
  the wav, tile, STFT, log; decode the FLV at 1 fps and resize a frame to 224×224;
- ratio = reader / on the fly (target ≥ 10×).

Text–image (`--posts`): a synthetic Twitter2015 in the real layout (TomBERT TSVs, two
targets per image, textured 500×375 JPEGs) prepared with `igm prepare twitter2015` and a
WordPiece tokenizer trained offline (bert-base-uncased cannot be downloaded here), then:

- reader: samples/s of shuffled batches of 12 (text + image) through SplitBatches and
  straight from the memory-mapped arrays (image rows gathered through image.rows.npy);
- on the fly: what the reference loaders do per sample every epoch — clean the text,
  tokenize it, open and decode the JPEG with Pillow, resize it to 224×224 (bicubic) and
  convert it to a tensor;
- ratio = reader / on the fly.

NVGesture (bench/nvgesture_pipeline.py, `--nvg-clips`): prepare with optical flow at
--jobs 1 vs 2 (and the steady decode + flow rate of the worker pool), the prepared reader
vs decoding both sensors' windows and computing the flow per sample, and TV-L1 vs
Farneback per frame pair (`--nvg-flow` picks the flow of the prepare runs).

    python bench/data_pipeline.py [--clips 60] [--posts 120] [--nvg-clips 8] [--nvg-flow farneback|tvl1]
                                  [--only av|text-image|nvgesture] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Spawned prepare workers re-import this module, so torch is imported only inside functions.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.raw_factories

from igm_cli.data.audio import spectrogram_of  # noqa: E402
from igm_cli.data.base import PrepareOptions  # noqa: E402
from igm_cli.data.clips import AVSpec, Clip, decode_clip, run_pool  # noqa: E402
from igm_cli.data.crema_d import AUDIO  # noqa: E402
from igm_cli.data.prepared import PreparedDataset  # noqa: E402
from igm_cli.data.video import VideoSpec, sampled_frames  # noqa: E402
from igm_cli.preparation import prepare_dataset  # noqa: E402
from tests.raw_factories import make_crema_d  # noqa: E402

BATCH = 12


def make_raw(root: Path, clips: int) -> list[str]:
    """`clips` CREMA-D clips (6 emotions × actors), realistic sizes and rates."""
    actors = tuple(range(1001, 1001 + -(-clips // 6)))
    raw = make_crema_d(root, actors=actors, seconds=2.5, video_seconds=2.5, fps=30, size=(480, 360),
                       texture=True, corrupt=False, bad_id=False)  # fmt: skip
    return raw.ids


def time_prepare(raw: Path, out: Path, jobs: int) -> dict[str, float]:
    start = time.perf_counter()
    result = prepare_dataset("crema-d", source=raw, out=out, options=PrepareOptions(jobs=jobs))
    seconds = time.perf_counter() - start
    clips = sum(result["splits"].values())
    return {
        "jobs": jobs,
        "clips": clips,
        "seconds": round(seconds, 2),
        "clips_per_s": round(clips / seconds, 1),
    }


def decode_rates(raw: Path, ids: list[str], jobs: int) -> dict[str, float]:
    """Worker start-up (seconds to the first decoded clip) and steady clips/s after it."""
    spec = AVSpec(AUDIO, VideoSpec(frames=1, fps=1.0, size=224))
    args = [(Clip(i, 0, raw / "AudioWAV" / f"{i}.wav", raw / "VideoFlash" / f"{i}.flv"), spec) for i in ids]
    start = time.perf_counter()
    stamps = [time.perf_counter() for _ in run_pool(decode_clip, args, jobs)]
    steady = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    return {"jobs": jobs, "first_clip_s": round(stamps[0] - start, 2), "steady_clips_per_s": round(steady, 1)}


def reader_rate(read_batch, n: int, min_seconds: float = 2.0) -> float:
    """Samples/s of reading shuffled batches of 12 until `min_seconds` have passed."""
    import torch

    generator, samples, start = torch.Generator().manual_seed(0), 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        order = torch.randperm(n, generator=generator)
        for b in range(0, n, BATCH):
            audio, video = read_batch(order[b : b + BATCH])
            samples += len(audio)
    return samples / (time.perf_counter() - start)


def on_the_fly_rate(raw: Path, ids: list[str]) -> float:
    """Samples/s of decoding every sample from the raw files."""
    import torch

    video = VideoSpec(frames=1, fps=1.0, size=224)
    start = time.perf_counter()
    for clip_id in ids:
        audio = torch.from_numpy(spectrogram_of(raw / "AudioWAV" / f"{clip_id}.wav", AUDIO))
        frames = torch.from_numpy(sampled_frames(raw / "VideoFlash" / f"{clip_id}.flv", video))
        assert audio.shape == (257, 188) and frames.shape == (1, 3, 224, 224)
    return len(ids) / (time.perf_counter() - start)


def text_image_rates(posts: int) -> dict:
    """Prepared text–image reader vs tokenizing + decoding + resizing every sample, in one run."""
    import torch
    from PIL import Image
    from transformers import AutoTokenizer

    from igm_cli.data.twitter2015 import clean
    from igm_cli.engine.batches import SplitBatches
    from tests.text_image_factories import make_tokenizer, make_twitter2015

    with tempfile.TemporaryDirectory() as tmp:
        per = max(1, posts // 3)
        raw = make_twitter2015(Path(tmp) / "raw", per_split=(("train", per), ("val", per), ("test", per)))
        _texture_images(raw.images)
        tok_dir = make_tokenizer(Path(tmp) / "tok")
        opts = PrepareOptions(tokenizer=str(tok_dir))
        start = time.perf_counter()
        result = prepare_dataset("twitter2015", source=raw.root, out=Path(tmp) / "prepared", options=opts)
        prepare_s = time.perf_counter() - start
        split = PreparedDataset.open(Path(tmp) / "prepared").split("train")
        batches = SplitBatches(split, ["text", "image"], torch.device("cpu"))

        def from_batches(index):
            inputs, _ = batches.take(index)
            return inputs["text"], inputs["image"]

        def from_memmap(index):
            rows = np.sort(index.numpy())
            return (torch.from_numpy(np.asarray(split.inputs["text"][rows])),
                    torch.from_numpy(np.asarray(split.inputs["image"][rows])))  # fmt: skip

        tokenizer = AutoTokenizer.from_pretrained(tok_dir)
        rows = [line.split("\t") for line in (raw.root / "train.tsv").read_text().splitlines()[1:]]
        rows = [r for r in rows if len(r) == 5 and (raw.images / r[2]).is_file() and r[2] != raw.corrupt]

        def on_the_fly() -> float:
            start, n = time.perf_counter(), 0
            while time.perf_counter() - start < 2.0:
                for r in rows:
                    ids = tokenizer(clean(r[3].replace("$T$", r[4])), padding="longest")["input_ids"]
                    with Image.open(raw.images / r[2]) as img:
                        img = img.convert("RGB").resize((224, 224), Image.Resampling.BICUBIC)
                    pixels = torch.from_numpy(np.array(img)).permute(2, 0, 1).float().div(255)
                    assert len(ids) > 2 and pixels.shape == (3, 224, 224)
                    n += 1
            return n / (time.perf_counter() - start)

        rates = {
            "reader_split_batches": reader_rate(from_batches, len(split)),
            "reader_memmap": reader_rate(from_memmap, len(split)),
            "on_the_fly": on_the_fly(),
        }
    return {
        "posts": sum(result["splits"].values()),
        "prepare_seconds": round(prepare_s, 2),
        "samples_per_s": {k: round(v, 1) for k, v in rates.items()},
        "ratio_split_batches": round(rates["reader_split_batches"] / rates["on_the_fly"], 1),
        "ratio_memmap": round(rates["reader_memmap"] / rates["on_the_fly"], 1),
        "tokenizer": "a WordPiece tokenizer trained offline on the fixture text (not bert-base-uncased)",
    }


def _texture_images(folder: Path) -> None:
    """Replace the flat fixture images by textured 500×375 JPEGs, the size of typical tweet photos."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for path in sorted(folder.glob("*.jpg")):
        try:
            Image.open(path).verify()
        except Exception:
            continue  # the deliberately corrupt file stays corrupt
        pixels = rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path, format="JPEG", quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=60)
    parser.add_argument("--posts", type=int, default=120, help="text–image posts (a third per split)")
    parser.add_argument("--nvg-clips", type=int, default=8, help="NVGesture clips (half train, half test)")
    parser.add_argument("--nvg-flow", choices=["farneback", "tvl1"], default="farneback")
    parser.add_argument("--only", choices=["av", "text-image", "nvgesture"], help="run one of the parts")
    parser.add_argument("--json", action="store_true", help="only the JSON document")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    doc = av_rates(args) if args.only in (None, "av") else {}
    if args.only in (None, "text-image"):
        doc["text_image"] = text_image_rates(args.posts)
        if not args.json:
            ti = doc["text_image"]
            for key, label in (("reader_split_batches", "SplitBatches"), ("reader_memmap", "memmap")):
                print(
                    f"text–image reader ({label}) {ti['samples_per_s'][key]:10.1f} samples/s", file=sys.stderr
                )
            print(
                f"text–image on the fly      {ti['samples_per_s']['on_the_fly']:10.1f} samples/s",
                file=sys.stderr,
            )
            print(f"text–image prepared reader / on the fly: {ti['ratio_split_batches']}×", file=sys.stderr)
    if args.only in (None, "nvgesture"):
        from bench.nvgesture_pipeline import report, run

        with tempfile.TemporaryDirectory() as tmp:
            doc["nvgesture"] = run(Path(tmp), args.nvg_clips, args.nvg_flow)
        if not args.json:
            report(doc["nvgesture"], lambda line: print(line, file=sys.stderr))
    # other work on the machine skews the timings: the load average is part of the record
    doc |= {"cpus": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2)}
    print(json.dumps(doc, indent=2))


def av_rates(args) -> dict:
    """The audio–video part (CREMA-D clips)."""
    import torch

    from igm_cli.engine.batches import SplitBatches

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "CREMA-D"
        ids = make_raw(raw, args.clips)
        prepare = [time_prepare(raw, Path(tmp) / f"jobs{j}", j) for j in (1, 2)]
        decoding = [decode_rates(raw, ids, j) for j in (1, 2)]
        split = PreparedDataset.open(Path(tmp) / "jobs1").split("train")
        batches = SplitBatches(split, ["audio", "video"], torch.device("cpu"))
        n = len(split)

        def from_memmap(index):
            rows = np.sort(index.numpy())
            return (torch.from_numpy(np.asarray(split.inputs["audio"][rows])),
                    torch.from_numpy(np.asarray(split.inputs["video"][rows])))  # fmt: skip

        def from_batches(index):
            inputs, _ = batches.take(index)
            return inputs["audio"], inputs["video"]

        rates = {
            "reader_split_batches": reader_rate(from_batches, n),
            "reader_memmap": reader_rate(from_memmap, n),
            "on_the_fly": on_the_fly_rate(raw, ids),
        }
    doc = {
        "clips": len(ids),
        "samples_per_s": {k: round(v, 1) for k, v in rates.items()},
        "ratio_split_batches": round(rates["reader_split_batches"] / rates["on_the_fly"], 1),
        "ratio_memmap": round(rates["reader_memmap"] / rates["on_the_fly"], 1),
        "prepare": prepare,
        "prepare_speedup_jobs2": round(prepare[1]["clips_per_s"] / prepare[0]["clips_per_s"], 2),
        "decode_workers": decoding,
        "steady_speedup_jobs2": round(
            decoding[1]["steady_clips_per_s"] / decoding[0]["steady_clips_per_s"], 2
        ),
    }
    if not args.json:
        print(f"reader (SplitBatches) {rates['reader_split_batches']:10.1f} samples/s", file=sys.stderr)
        print(f"reader (memmap)       {rates['reader_memmap']:10.1f} samples/s", file=sys.stderr)
        print(f"on the fly            {rates['on_the_fly']:10.1f} samples/s", file=sys.stderr)
        for p in prepare:
            line = f"prepare --jobs {p['jobs']}      {p['clips_per_s']:10.1f} clips/s ({p['seconds']} s)"
            print(line, file=sys.stderr)
        for d in decoding:
            rate, first = d["steady_clips_per_s"], d["first_clip_s"]
            line = f"decode  --jobs {d['jobs']}      {rate:10.1f} clips/s after a {first} s start-up"
            print(line, file=sys.stderr)
        ratio = doc["ratio_split_batches"]
        verdict = "met" if ratio >= 10 else "NOT met"
        print(f"prepared reader / on the fly: {ratio}× (target ≥ 10×: {verdict})", file=sys.stderr)
        print(
            f"--jobs 2 / --jobs 1: prepare {doc['prepare_speedup_jobs2']}×, "
            f"steady decoding {doc['steady_speedup_jobs2']}× (worker start-up not included)",
            file=sys.stderr,
        )
    return doc


if __name__ == "__main__":
    main()
