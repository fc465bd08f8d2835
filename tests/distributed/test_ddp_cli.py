"""`igm train --nproc 2` end to end: torch.distributed.run, two `python -m igm_cli train` workers.

Ctrl-C as a terminal sends it (SIGINT to the whole process group: launcher and workers)
stops both ranks with one resumable checkpoint; `--nproc 2 --resume` then finishes the run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from tests.helpers import TINY_SETS, set_args

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def igm(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "igm_cli", *args], env=ENV, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, **kwargs,
    )  # fmt: skip


def test_nproc_2_through_the_cli_interrupted_and_resumed(tmp_path):
    first = igm("train", "--nproc", "2", "--json", "--runs-dir", str(tmp_path), *set_args(TINY_SETS))
    for line in first.stderr:  # rank 0's progress lines (no TTY): interrupt once stage 0 runs
        if line.startswith("stage 0:"):
            os.killpg(first.pid, signal.SIGINT)
            break
    out, err = first.communicate(timeout=120)
    assert first.returncode == 130, err
    assert json.loads(out)["error"]["kind"] == "interrupted"  # one document: rank 0's
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "resumable checkpoint" in errors[0], err
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert (run / "last.safetensors").is_file()

    second = igm("train", "--nproc", "2", "--json", "-q", "--resume", str(run))
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    results = json.loads(out)
    assert results["distributed"]["world_size"] == 2 and results["distributed"]["backend"] == "gloo"
    assert results["resume"]["action"] == "resume"
    assert {p.name for p in run.iterdir()} >= {
        "config.yaml",
        "metrics.jsonl",
        "results.json",
        "best.safetensors",
    }
    assert "error" not in err and "Traceback" not in err
