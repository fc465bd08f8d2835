"""A pool task for tests/data/test_prepare_hostile.py: records its pid, then sleeps."""

from __future__ import annotations

import os
import time


def nap(seconds: float) -> int:
    with open(os.environ["IGM_TEST_PIDS"], "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(seconds)
    return os.getpid()
