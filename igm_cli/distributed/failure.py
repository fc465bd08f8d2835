"""One rank fails, every rank ends: with the failing rank's exit code and one line naming it.

The failing rank publishes `rank, exit code, kind, message` in torchrun's rendezvous store
before it exits; its peers, whose next collective then fails (a closed connection, or the
collective timeout of world.py when a rank hangs), read it and exit with the same code,
silently, so the job prints the one line of the rank that failed. A peer lost without a
record (a killed process, a timeout) is exit 5, named by the surviving rank.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

import torch.distributed as dist

from igm_cli.errors import IgmError, Interrupted

from .world import World

EXIT_RANK_LOST = 5
LAUNCHED_ENV = "IGM_LAUNCHED"  # set by `igm train --nproc`: it names a killed rank itself


class RankFailed(IgmError):
    """Another rank of the job failed (its code) or was lost (exit 5)."""

    exit_code = EXIT_RANK_LOST
    kind = "rank"

    def __init__(
        self, message: str, exit_code: int = EXIT_RANK_LOST, kind: str = "rank", quiet: bool = False
    ):
        super().__init__(message)
        self.exit_code, self.kind, self.quiet = exit_code, kind, quiet


def _key() -> str:
    run = os.environ.get("TORCHELASTIC_RUN_ID", "none")
    return f"igm/failure/{run}/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"


def _store() -> dist.Store | None:
    try:
        host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
        return dist.TCPStore(host, port, is_master=False, timeout=timedelta(seconds=10))
    except (KeyError, ValueError, RuntimeError):
        return None


def publish(world: World, code: int, kind: str, message: str) -> None:
    """Record this rank's failure (the first one recorded wins)."""
    store = _store()
    if store is not None:
        store.compare_set(_key(), "", f"{world.rank}\t{code}\t{kind}\t{message}")


def recorded(wait_s: float = 0.5) -> tuple[int, int, str, str] | None:
    """The failure a rank published, if any (waits briefly: it is written just before that rank exits)."""
    store = _store()
    if store is None:
        return None
    deadline = time.monotonic() + wait_s
    while True:
        if store.check([_key()]):
            rank, code, kind, message = store.get(_key()).decode().split("\t", 3)
            return int(rank), int(code), kind, message
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)


def peer_failure(world: World, error: BaseException) -> RankFailed:
    """What a rank whose collective failed reports: the failing rank's record, or a lost peer."""
    record = recorded()
    if record is not None:
        rank, code, kind, message = record
        return RankFailed(f"rank {rank}: {message}", code, kind, quiet=True)
    detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return RankFailed(
        f"rank {world.rank}: lost contact with another rank, which was killed or hangs ({detail[:200]})",
        quiet=LAUNCHED_ENV in os.environ,
    )


@contextmanager
def rank_errors(world_of: Callable[[], World | None]) -> Iterator[None]:
    """Name the rank in errors of a torchrun job and turn a lost peer into that peer's error."""
    try:
        yield
    except Interrupted as e:  # every rank stops together; rank 0 says what was saved
        world = world_of()
        if world is None or not world.distributed:
            raise
        lost = _communication_cause(e)
        if lost is not None:  # the launcher's SIGTERM arrived while a failed collective unwound
            _ignore_stop_signals()
            raise peer_failure(world, lost) from None
        if not world.is_writer:
            e.quiet = True
        raise
    except RankFailed:
        raise
    except IgmError as e:
        world = world_of()
        if world is None or not world.distributed:
            raise
        _ignore_stop_signals()
        publish(world, e.exit_code, e.kind, str(e))
        e.args = (f"rank {world.rank}: {e}",)
        raise
    except Exception as e:
        world = world_of()
        if world is None or not world.distributed:
            raise
        if is_communication_error(e):  # a collective failed: a peer is gone or hangs
            _ignore_stop_signals()  # the launcher's SIGTERM to the survivors must not turn this into 130
            raise peer_failure(world, e) from None
        first = str(e).splitlines()[0] if str(e) else ""  # a bug on this rank: its traceback; peers exit 1
        publish(world, 1, "error", f"{type(e).__name__}: {first}")
        raise


def _communication_cause(error: BaseException) -> BaseException | None:
    """A communication error this exception was raised while handling, if any."""
    seen = error.__context__
    while seen is not None:
        if is_communication_error(seen):
            return seen
        seen = seen.__context__
    return None


def _ignore_stop_signals() -> None:
    """This rank is ending with a failure: a stop signal now would only change its exit code."""
    if threading.current_thread() is threading.main_thread():
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)


COMMUNICATION_MARKERS = (
    "connection closed",
    "connection reset",
    "broken pipe",
    "timed out",
    "timeout",
    "nccl",
)


def is_communication_error(error: BaseException) -> bool:
    """c10d's errors, and the RuntimeErrors gloo raises when a peer's connection breaks."""
    if isinstance(error, dist.DistError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and (
        "gloo" in text or any(m in text for m in COMMUNICATION_MARKERS)
    )
