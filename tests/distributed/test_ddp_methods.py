"""Every method under 2 ranks equals its single-process run (uneven 49/48 split of each global batch)."""

from __future__ import annotations

import pytest

from igm_cli.pipeline import train
from igm_cli.presets import resolve_preset
from tests.distributed.launcher import launch
from tests.distributed.test_ddp_runs import only_run, tensors, worst_relative
from tests.helpers import TINY_SETS, set_args

UNEVEN = [*TINY_SETS, "data.batch_size=97", "baseline.epochs=1", "sam.baseline_rho=0.05"]  # 13 batches
METHODS = {
    "joint": ["method=joint"],  # two DDP wrappers, SAM's first pass under both no_sync()
    "unimodal": ["method=unimodal", "baseline.modality=kar"],
    "mla": ["method=mla"],  # gradients all-reduced by igm; x̄ of the global batch
    "dgl": ["method=dgl"],  # two backward passes: gradients all-reduced by igm
    "mie": ["method=mie", "mie.covariance=centred"],  # summed centred covariances
}


@pytest.mark.parametrize("method", list(METHODS))
def test_method_on_two_ranks_equals_one_process(tmp_path, method):
    sets = [*UNEVEN, *METHODS[method]]
    train(resolve_preset("mfeat", sets), runs_dir=tmp_path / "one")
    codes, _ = launch(["-q", "--runs-dir", str(tmp_path / "two"), *set_args(sets)])
    assert codes == {0: 0, 1: 0}
    one, two = tensors(only_run(tmp_path / "one")), tensors(only_run(tmp_path / "two"))
    assert worst_relative(two, one) <= 1e-5
