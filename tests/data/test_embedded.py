import json

import numpy as np
import pytest

from igm_cli.data import embedded
from igm_cli.data.manifest import verify_prepared
from igm_cli.data.prepared import PreparedDataset
from igm_cli.errors import DataError, PresetError
from igm_cli.pipeline import check_compatible
from igm_cli.presets import resolve_preset


@pytest.fixture(scope="module")
def arrays():
    return embedded.build_arrays(("fou", "mor"))[0]


def test_split_is_stratified_fixed_and_disjoint(arrays):
    sizes = {s: len(a["labels"]) for s, a in arrays.items()}
    assert sizes == {"train": 1200, "val": 400, "test": 400}
    for split, a in arrays.items():
        assert np.bincount(a["labels"]).tolist() == [sizes[split] // 10] * 10
    again = embedded.build_arrays(("fou", "mor"))[0]
    assert all(np.array_equal(arrays[s]["fou"], again[s]["fou"]) for s in arrays)
    rows = {s: {tuple(r) for r in a["fou"]} for s, a in arrays.items()}
    assert not rows["train"] & rows["test"] and not rows["val"] & rows["test"]


def test_views_are_standardised_on_train_statistics(arrays):
    train = arrays["train"]["mor"]
    assert train.dtype == np.float32
    np.testing.assert_allclose(train.mean(0), 0, atol=1e-5)
    stds = train.std(0)
    assert np.all((np.abs(stds - 1) < 1e-3) | (stds == 0))
    assert not np.allclose(arrays["test"]["mor"].mean(0), 0, atol=1e-6)  # not re-centred on test


def test_prepare_writes_manifest_and_mmap_arrays(tmp_path):
    out = tmp_path / "mfeat"
    manifest = embedded.prepare(None, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mfeat"]  # no partial directory left
    doc = json.loads((out / "manifest.json").read_text())
    assert doc["dataset"] == "mfeat" and doc["classes"] == [str(i) for i in range(10)]
    assert doc["modalities"]["fac"] == {"shape": [216], "dtype": "float32"}
    assert doc["splits"]["val"]["class_counts"] == [40] * 10
    assert doc["preprocessing"]["split"]["seed"] == 0
    assert {"numpy", "torch", "igm"} <= set(doc["versions"])
    assert len(manifest.checksums) == 3 * 7
    data = PreparedDataset.open(out)
    assert isinstance(data.split("train").inputs["kar"], np.memmap)
    assert verify_prepared(out) == []


def test_missing_and_corrupt_prepared_data_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="manifest.json missing"):
        PreparedDataset.open(tmp_path / "nothing")
    out = tmp_path / "mfeat"
    embedded.prepare(None, out)
    (out / "val" / "zer.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DataError, match="corrupt prepared array"):
        PreparedDataset.open(out)
    (out / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="corrupt manifest"):
        PreparedDataset.open(out)


def test_preset_must_match_the_prepared_data():
    data = embedded.load_in_memory(("fou", "kar"))
    check_compatible(resolve_preset("mfeat"), data)
    with pytest.raises(PresetError, match="modalities: pix not in the prepared data"):
        check_compatible(resolve_preset("mfeat", ["modalities.kar.name=pix"]), data)
