"""A failure on one rank ends every rank, fast, with that rank's exit code and one line naming it."""

from __future__ import annotations

from igm_cli.distributed.launch import exit_code_of
from tests.distributed import patches
from tests.distributed.launcher import launch
from tests.helpers import TINY_SETS, set_args

ARGS = ["-q", *set_args([*TINY_SETS, "data.batch_size=48"])]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_a_rank_that_raises_ends_every_rank_with_its_exit_code(capfd):
    codes, seconds = launch(ARGS, patch=patches.diverge_rank1)
    assert codes == {0: 4, 1: 4}  # rank 0 learns rank 1's code from the rendezvous store
    assert seconds < 30  # seconds, not the collective timeout (600 s)
    (line,) = error_lines(capfd.readouterr().err)
    assert line.startswith("error: rank 1: training diverged: injected on this rank")


def test_a_killed_rank_ends_the_job_with_exit_5(capfd):
    codes, seconds = launch(ARGS, patch=patches.kill_rank1)
    assert codes[1] == -9
    assert codes[0] == 5
    assert seconds < 30
    (line,) = error_lines(capfd.readouterr().err)
    assert "rank 0: lost contact with another rank" in line


def test_the_launchers_exit_code_is_the_failing_ranks():
    said = []
    assert exit_code_of({0: 4, 1: 4}, said.append) == 4
    assert exit_code_of({0: 130, 1: 3}, said.append) == 3  # a stopped peer's 130 is not the cause
    assert exit_code_of({0: 130, 1: 130}, said.append) == 130
    assert not said
    assert exit_code_of({0: 5, 1: -9}, said.append) == 5
    assert said == ["rank 1 was killed by SIGKILL; the other ranks were stopped"]
