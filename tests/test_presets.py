import pytest
import torch
import yaml

from igm_cli.errors import PresetError
from igm_cli.models import build_model
from igm_cli.presets import Preset, preset_to_yaml, resolve_preset, shipped_presets

SHAPES = {
    "vector": [12],
    "spectrogram": [20, 16],
    "frames": [2, 3, 20, 20],
    "tokens": [3, 10],
    "image": [3, 20, 20],
}
TINY_ENCODERS = {
    "mlp": {"hidden": [8], "dim": 6},
    "resnet18": {"widths": [4, 8], "depths": [1, 1], "embedding": 4},
    "i3d": {"weights": "", "width_divisor": 16, "pool_frames": 1},
    "bert": {"weights": "null", "hidden": 8, "layers": 1, "heads": 2, "intermediate": 16, "vocab_size": 16},
    "resnet50": {"weights": "null", "widths": "[4,8]", "depths": "[1,1]", "embedding": 4, "classes": 10},
}


def tiny_shape(m) -> list[int]:
    """A stored sample shape for a modality's input kind (clips: one channel per mean value)."""
    return [3, len(m.input.mean), 20, 20] if m.input.kind == "clip" else SHAPES[m.input.kind]


@pytest.mark.parametrize("name", sorted(shipped_presets()))
def test_every_shipped_preset_validates_builds_and_runs_tiny(name):
    preset = resolve_preset(name)
    assert preset.name == name and preset.description
    sets = [f"modalities.{m.name}.input.size=16" for m in preset.modalities]
    for m in preset.modalities:
        sets += [f"modalities.{m.name}.encoder.{k}={v}" for k, v in TINY_ENCODERS[m.encoder.name].items()]
    tiny = resolve_preset(name, sets)
    shapes = {m.name: tiny_shape(m) for m in tiny.modalities}
    model = build_model(tiny, shapes, 5)
    assert model.modalities == preset.modality_names
    high = {m.name: 2 if m.input.kind == "tokens" else 255 for m in tiny.modalities}  # ids and mask in {0, 1}
    batch = {m: torch.randint(0, high[m], (2, *shape), dtype=torch.uint8) for m, shape in shapes.items()}
    logits = model(model.prepare(batch, train=True))
    assert all(z.shape == (2, 5) for z in logits.values())


def test_default_preset_is_mfeat_with_a_weak_and_a_strong_view():
    preset = resolve_preset()
    assert preset.dataset == "mfeat"
    assert preset.modality_names == ["fou", "kar"]


def test_unknown_key_is_an_error_naming_the_field():
    with pytest.raises(PresetError, match=r"gm\.taux: Extra inputs are not permitted"):
        resolve_preset("mfeat", ["gm.taux=1"])


def test_every_range_problem_is_reported_on_one_line():
    with pytest.raises(PresetError) as e:
        resolve_preset("mfeat", ["gm.tau=-1", "sam.rho=-0.1", "optimizer.lr=0"])
    message = str(e.value)
    assert "\n" not in message
    for field in ("gm.tau", "sam.rho", "optimizer.lr"):
        assert field in message
    assert "(got -1)" in message


@pytest.mark.parametrize(
    ("item", "path", "value"),
    [
        ("sam.rho=0", ("sam", "rho"), 0.0),
        ("gm.enabled=false", ("gm", "enabled"), False),
        ("baseline.epochs=", ("baseline", "epochs"), None),
        ("stages.epochs=[2,3,4]", ("stages", "epochs"), [2, 3, 4]),
        ("modalities.kar.encoder.dim=5", None, 5),
        ("modalities.1.encoder.dim=7", None, 7),
    ],
)
def test_set_accepts_falsy_empty_list_and_indexed_values(item, path, value):
    preset = resolve_preset("mfeat", [item])
    if path is None:
        assert preset.modalities[1].encoder.dim == value
    else:
        section, key = path
        assert getattr(getattr(preset, section), key) == value


def test_precedence_file_then_set_then_flags():
    preset = resolve_preset("mfeat", ["seed=5", "method=joint"], seed=7)
    assert preset.seed == 7
    assert preset.method == "joint"
    assert resolve_preset("mfeat", ["seed=5"], seed=None).seed == 5


def test_set_without_equals_and_unknown_list_item_are_errors():
    with pytest.raises(PresetError, match="expected key.path=value"):
        resolve_preset("mfeat", ["gm.tau"])
    with pytest.raises(PresetError, match="no list item"):
        resolve_preset("mfeat", ["modalities.nope.encoder.dim=3"])


def test_cross_field_rules():
    with pytest.raises(PresetError, match="baseline.modality"):
        resolve_preset("mfeat", ["baseline.modality=pix"])
    with pytest.raises(PresetError, match="needs at least 2"):
        resolve_preset("mfeat", ["modalities=[{name: fou}]"])
    assert resolve_preset("mfeat", ["modalities=[{name: fou}]", "method=unimodal"]).method == "unimodal"


def test_preset_from_path_and_yaml_round_trip(tmp_path):
    preset = resolve_preset("mfeat", ["gm.tau=2.5"])
    path = tmp_path / "mine.yaml"
    path.write_text(preset_to_yaml(preset))
    again = resolve_preset(str(path))
    assert again == preset
    assert Preset.model_validate(yaml.safe_load(preset_to_yaml(preset))) == preset


def test_unknown_preset_and_bad_yaml(tmp_path):
    with pytest.raises(PresetError, match="unknown preset 'nope'"):
        resolve_preset("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("gm: [unclosed")
    with pytest.raises(PresetError, match="cannot read preset"):
        resolve_preset(str(bad))
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("3")
    with pytest.raises(PresetError, match="must hold a mapping"):
        resolve_preset(str(scalar))


def test_field_docstrings_are_attached():
    assert "τ" in Preset.model_fields["gm"].annotation.model_fields["tau"].description
