"""The NVGesture part of bench/data_pipeline.py: prepare with flow at --jobs 1 vs 2, reader vs on the fly.

Writes synthetic NVGesture clips in the real layout (MPEG-4 .avi, 320×240 at 30 fps like
the SoftKinetic sensor, textured frames with a moving square; windows of 80 frames),
then measures, in one run:

- prepare: `igm prepare nvgesture` (library call, 80 frames at 256², flow included) with
  --jobs 1 and --jobs 2, clips/s (wall clock, worker start-up included);
- reader: samples/s of batches of 6 in shuffled order through SplitBatches (memory-mapped);
- on the fly: samples/s of decoding both sensors' windows and computing the flow per sample;
- TV-L1 vs Farneback: seconds per frame pair at 256² (one OpenCV thread), to extrapolate.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from igm_cli.data.base import PrepareOptions
from igm_cli.data.flow import FlowSpec, clip_flow
from igm_cli.data.nvgesture import GestureSpec, decode_gesture, find_lists, read_list
from igm_cli.preparation import prepare_dataset
from tests.raw_nvgesture import list_line, write_avi

BATCH, FRAMES, SIZE = 6, 80, 256


def make_raw(root: Path, clips: int) -> None:
    """`clips` clips of 100 frames, window 10:90, half train half test (2 classes)."""
    rng = np.random.default_rng(0)
    lines = {"train": [], "test": []}
    for k in range(clips):
        rel = f"Video_data/class_{k % 2 + 1:02d}/subject{k}_r0"
        base = cv2.GaussianBlur(rng.integers(0, 255, (240, 360, 3), dtype=np.uint8), (0, 0), 2)  # camera-like
        for name, depth in (("sk_color.avi", False), ("sk_depth.avi", True)):
            frames = []
            for t in range(100):
                img = base[:, 2 * t % 40 : 2 * t % 40 + 320].copy()  # texture moving 2 px/frame
                frames.append(img.mean(2, keepdims=True).repeat(3, 2).astype(np.uint8) if depth else img)
            write_avi(root / rel / name, frames)
        lines["train" if k % 4 < 2 else "test"].append(list_line(rel, k % 2 + 1, (10, 90)))
    (root / "nvgesture_train_correct_cvpr2016_v2.lst").write_text("\n".join(lines["train"]) + "\n")
    (root / "nvgesture_test_correct_cvpr2016_v2.lst").write_text("\n".join(lines["test"]) + "\n")


def time_prepare(raw: Path, out: Path, jobs: int, flow: str) -> dict[str, float]:
    start = time.perf_counter()
    options = PrepareOptions(jobs=jobs, flow=flow)
    result = prepare_dataset("nvgesture", source=raw, out=out, options=options)
    seconds = time.perf_counter() - start
    clips = sum(result["splits"].values())
    rate = round(clips / seconds, 3)
    return {
        "jobs": jobs,
        "clips": clips,
        "seconds": round(seconds, 2),
        "clips_per_s": rate,
        "bytes": result["bytes"],
    }


def on_the_fly_rate(raw: Path, flow: str) -> float:
    """Samples/s of decoding the windows and computing the flow of every clip."""
    lists = find_lists(raw, None)
    clips = read_list(lists["train"], raw, {}) + read_list(lists["test"], raw, {})
    spec = GestureSpec(FRAMES, SIZE, FlowSpec(flow))
    start = time.perf_counter()
    for clip in clips:
        arrays = decode_gesture(clip, spec)
        assert arrays["flow"].shape == (FRAMES, 2, SIZE, SIZE)
    return len(clips) / (time.perf_counter() - start)


def decode_rates(raw: Path, flow: str, jobs: int) -> dict[str, float]:
    """Worker start-up (seconds to the first clip) and steady clips/s after it (decode + flow)."""
    from igm_cli.data.clips import run_pool

    lists = find_lists(raw, None)
    clips = read_list(lists["train"], raw, {}) + read_list(lists["test"], raw, {})
    spec = GestureSpec(FRAMES, SIZE, FlowSpec(flow))
    start = time.perf_counter()
    stamps = [time.perf_counter() for _ in run_pool(decode_gesture, [(c, spec) for c in clips], jobs)]
    steady = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    return {"jobs": jobs, "first_clip_s": round(stamps[0] - start, 2), "steady_clips_per_s": round(steady, 3)}


def reader_rate(prepared: Path, min_seconds: float = 2.0) -> float:
    import torch

    from igm_cli.data.prepared import PreparedDataset
    from igm_cli.engine.batches import SplitBatches

    split = PreparedDataset.open(prepared).split("train")
    batches = SplitBatches(split, ["rgb", "depth", "flow"], torch.device("cpu"))
    generator, samples, start = torch.Generator().manual_seed(0), 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        order = torch.randperm(len(split), generator=generator)
        for b in range(0, len(split), BATCH):
            inputs, _ = batches.take(order[b : b + BATCH])
            samples += len(inputs["rgb"])
    return samples / (time.perf_counter() - start)


def flow_pair_seconds(prepared: Path) -> dict[str, float]:
    """Seconds per frame pair of each method, on the first two prepared RGB frames."""
    from igm_cli.data.prepared import PreparedDataset

    pair = np.asarray(PreparedDataset.open(prepared).split("test").inputs["rgb"][0, :2])  # (2, 3, S, S)
    out = {}
    for method in ("farneback", "tvl1"):
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < 2.0:
            clip_flow(pair, FlowSpec(method))
            n += 1
        out[method] = round((time.perf_counter() - start) / n, 4)
    return out


def run(tmp: Path, clips: int, flow: str) -> dict:
    raw = tmp / "nvGesture"
    make_raw(raw, clips)
    prepare = [time_prepare(raw, tmp / f"nvg-jobs{j}", j, flow) for j in (1, 2)]
    rates = {"reader_split_batches": reader_rate(tmp / "nvg-jobs1"), "on_the_fly": on_the_fly_rate(raw, flow)}
    pair = flow_pair_seconds(tmp / "nvg-jobs1")
    decoding = [decode_rates(raw, flow, j) for j in (1, 2)]
    return {
        "clips": clips,
        "flow": flow,
        "frames": FRAMES,
        "frame_size": SIZE,
        "samples_per_s": {k: round(v, 2) for k, v in rates.items()},
        "ratio_reader_on_the_fly": round(rates["reader_split_batches"] / rates["on_the_fly"], 1),
        "prepare": prepare,
        "prepare_speedup_jobs2": round(prepare[1]["clips_per_s"] / prepare[0]["clips_per_s"], 2),
        "decode_workers": decoding,
        "steady_speedup_jobs2": round(
            decoding[1]["steady_clips_per_s"] / decoding[0]["steady_clips_per_s"], 2
        ),
        "flow_seconds_per_pair": pair,
        "tvl1_hours_for_1532_clips_one_core": round(pair["tvl1"] * (FRAMES - 1) * 1532 / 3600, 1),
        "farneback_hours_for_1532_clips_one_core": round(pair["farneback"] * (FRAMES - 1) * 1532 / 3600, 2),
    }


def report(doc: dict, print_line) -> None:
    rates = doc["samples_per_s"]
    print_line(f"nvgesture reader (SplitBatches) {rates['reader_split_batches']:10.2f} samples/s")
    print_line(f"nvgesture on the fly ({doc['flow']})  {rates['on_the_fly']:10.2f} samples/s")
    for p in doc["prepare"]:
        print_line(
            f"nvgesture prepare --jobs {p['jobs']}     {p['clips_per_s']:10.3f} clips/s ({p['seconds']} s)"
        )
    print_line(f"nvgesture prepared reader / on the fly: {doc['ratio_reader_on_the_fly']}×")
    for d in doc["decode_workers"]:
        rate, first = d["steady_clips_per_s"], d["first_clip_s"]
        print_line(
            f"nvgesture decode+flow --jobs {d['jobs']} {rate:10.3f} clips/s after a {first} s start-up"
        )
    print_line(
        f"nvgesture --jobs 2 / --jobs 1: prepare {doc['prepare_speedup_jobs2']}×, "
        f"steady decode+flow {doc['steady_speedup_jobs2']}× (worker start-up not included)"
    )
    pair = doc["flow_seconds_per_pair"]
    print_line(
        f"flow per frame pair at {SIZE}²: farneback {pair['farneback']} s, tvl1 {pair['tvl1']} s "
        f"(1,532 clips × 79 pairs on one core: {doc['farneback_hours_for_1532_clips_one_core']} h vs "
        f"{doc['tvl1_hours_for_1532_clips_one_core']} h)"
    )
