"""Launch 2-rank jobs through torch's elastic agent (torchrun's engine) with forked workers.

Forking from the test process skips each worker's ~3 s torch import; rendezvous, the
environment, signal handling and failure collection are torchrun's own. A worker runs
`igm train ARGS` (the CLI, as `python -m igm_cli train` does) after an optional `patch`
(a module-level function of this package, called in the child with its rank).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import torch._dynamo  # noqa: F401  (DDP's constructor imports it: ~4 s per worker unless inherited)
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

import igm_cli.cli  # noqa: F401  (imported here, inherited by every forked worker)
import igm_cli.pipeline  # noqa: F401


def _config(nproc: int) -> LaunchConfig:
    return LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=uuid.uuid4().hex,
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=0.05,
        start_method="fork",
    )


def launch_function(fn, *args, nproc: int = 2) -> None:
    """Run `fn(*args)` on every rank of an `nproc`-rank job (a test's worker function)."""
    elastic_launch(_config(nproc), fn)(*args)


def launch(args: list[str], nproc: int = 2, patch=None) -> tuple[dict[int, int], float]:
    """Exit code per rank (all 0 on success) and the wall time of the job."""
    config = _config(nproc)
    started = time.perf_counter()
    codes_dir = Path(tempfile.mkdtemp(prefix="igm-ranks-"))
    try:
        elastic_launch(config, _worker)(list(args), os.getcwd(), patch, str(codes_dir))
    except ChildFailedError as e:  # a forked job records the first failure only: each rank writes its own
        first = {r: f.exitcode for r, f in e.failures.items()}
    else:
        first = {}
    elapsed = time.perf_counter() - started
    codes = {r: int((codes_dir / str(r)).read_text()) for r in range(nproc) if (codes_dir / str(r)).exists()}
    shutil.rmtree(codes_dir)
    return {r: codes.get(r, first.get(r, 0)) for r in range(nproc)}, elapsed


def _worker(args: list[str], cwd: str, patch, codes_dir: str) -> None:
    os.chdir(cwd)
    rank = int(os.environ["RANK"])
    if patch is not None:
        patch(rank)
    from igm_cli.cli import app

    code = 1
    try:
        app(["train", *args])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        raise
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        (Path(codes_dir) / str(rank)).write_text(str(code))
