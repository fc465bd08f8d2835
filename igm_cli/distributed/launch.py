"""`igm train --nproc N`: the same job as `torchrun --standalone --nproc-per-node N -m igm_cli train ...`.

The launch goes through torch.distributed.run (its elastic agent, rendezvous and signal
forwarding); what this module adds is the exit: the job ends with the failing rank's exit
code, and a rank that died without saying why (a signal, e.g. the OOM killer) is named in
one line here, since it could not name itself.
"""

from __future__ import annotations

import logging
import os
import signal

from igm_cli.errors import EXIT_INTERRUPTED

from .failure import EXIT_RANK_LOST, LAUNCHED_ENV

INTERRUPT_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def launch_train(nproc: int, train_args: list[str], report) -> int:
    """Run `python -m igm_cli train *train_args` on `nproc` local ranks; returns the job's exit code.

    `report(message)` prints the one line naming a rank killed by a signal.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    os.environ[LAUNCHED_ENV] = "1"
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # torchrun's default, without its banner
    args = get_args_parser().parse_args(
        ["--standalone", f"--nproc-per-node={nproc}", "-m", "igm_cli", "train", *train_args]
    )
    quiet = logging.getLogger("torch.distributed")
    level, quiet.level = quiet.level, logging.CRITICAL  # the agent's own warnings are not ours to print
    try:
        run(args)
        return 0
    except ChildFailedError as e:
        return exit_code_of({rank: f.exitcode for rank, f in e.failures.items()}, report)
    except SignalException:  # Ctrl-C/SIGTERM: the agent passed it on; rank 0 said what was saved
        return EXIT_INTERRUPTED
    finally:
        quiet.setLevel(level)


def exit_code_of(codes: dict[int, int], report) -> int:
    """The job's exit code from its ranks' exit codes (negative: killed by that signal)."""
    killed = {r: -c for r, c in codes.items() if c < 0 and -c not in INTERRUPT_SIGNALS}
    if killed:
        rank = min(killed)
        report(f"rank {rank} was killed by {signal.Signals(killed[rank]).name}; the other ranks were stopped")
        return EXIT_RANK_LOST
    failed = {r: c for r, c in codes.items() if c > 0 and c != EXIT_INTERRUPTED}
    if failed:  # every rank ends with the failing rank's code (failure.py); stopped peers may say 130
        return failed[min(failed)]
    return EXIT_INTERRUPTED
