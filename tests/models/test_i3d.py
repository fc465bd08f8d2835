"""I3D: the public pytorch-i3d layout loads, `igm convert i3d` round-trips and refuses pickles; shapes, BN."""

import pytest
import torch
from typer.testing import CliRunner

from igm_cli.cli import app
from igm_cli.errors import CheckpointError
from igm_cli.models.i3d import I3D, InputTooShort, same_padding
from igm_cli.models.i3d_weights import load_i3d_weights

runner = CliRunner()

# The pytorch-i3d InceptionI3d layout written out independently: Unit3D name → (in, out, kernel).
STEM = [("Conv3d_1a_7x7", None, 64, 7), ("Conv3d_2b_1x1", 64, 64, 1), ("Conv3d_2c_3x3", 64, 192, 3)]
INCEPTION = [  # name, in, (b0, b1a, b1b, b2a, b2b, b3b)
    ("Mixed_3b", 192, (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", 256, (128, 128, 192, 32, 96, 64)),
    ("Mixed_4b", 480, (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", 512, (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", 512, (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", 512, (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", 528, (256, 160, 320, 32, 128, 128)),
    ("Mixed_5b", 832, (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", 832, (384, 192, 384, 48, 128, 128)),
]


def public_layout(in_channels: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict shaped like rgb_imagenet.pt / flow_imagenet.pt (2018: no num_batches_tracked)."""
    g = torch.Generator().manual_seed(seed)
    units = [(n, cin or in_channels, cout, k) for n, cin, cout, k in STEM]
    for name, cin, (b0, b1a, b1b, b2a, b2b, b3b) in INCEPTION:
        units += [(f"{name}.b0", cin, b0, 1), (f"{name}.b1a", cin, b1a, 1), (f"{name}.b1b", b1a, b1b, 3)]
        units += [(f"{name}.b2a", cin, b2a, 1), (f"{name}.b2b", b2a, b2b, 3), (f"{name}.b3b", cin, b3b, 1)]
    state = {}
    for name, cin, cout, k in units:
        state[f"{name}.conv3d.weight"] = torch.randn(cout, cin, k, k, k, generator=g) * 0.01
        state[f"{name}.bn.weight"] = torch.rand(cout, generator=g) + 0.5
        state[f"{name}.bn.bias"] = torch.randn(cout, generator=g)
        state[f"{name}.bn.running_mean"] = torch.randn(cout, generator=g)
        state[f"{name}.bn.running_var"] = torch.rand(cout, generator=g) + 0.5
    state["logits.conv3d.weight"] = torch.randn(400, 1024, 1, 1, 1, generator=g)
    state["logits.conv3d.bias"] = torch.randn(400, generator=g)
    return state


@pytest.fixture(scope="module")
def rgb_pt(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "rgb_imagenet.pt"
    state = public_layout(3)
    torch.save(state, path)
    return path, state


def test_convert_round_trips_and_loads_into_every_modality(rgb_pt, tmp_path):
    path, state = rgb_pt
    out = tmp_path / "i3d-rgb.safetensors"
    result = runner.invoke(app, ["convert", "i3d", str(path), str(out), "--json"])
    assert result.exit_code == 0, result.stderr
    assert '"in_channels": 3' in result.stdout and out.is_file()
    rgb, depth = I3D(3), I3D(1)
    assert load_i3d_weights(rgb, out) == []
    own = rgb.state_dict()
    for key, value in state.items():
        if not key.startswith("logits."):
            torch.testing.assert_close(own[key], value, rtol=0, atol=0)
    fresh_first = depth.state_dict()["Conv3d_1a_7x7.conv3d.weight"].clone()
    assert load_i3d_weights(depth, out) == ["Conv3d_1a_7x7.conv3d.weight"]
    torch.testing.assert_close(depth.state_dict()["Conv3d_1a_7x7.conv3d.weight"], fresh_first)
    torch.testing.assert_close(
        depth.state_dict()["Mixed_5c.b2b.conv3d.weight"], state["Mixed_5c.b2b.conv3d.weight"]
    )
    torch.testing.assert_close(
        depth.state_dict()["Conv3d_1a_7x7.bn.running_var"], state["Conv3d_1a_7x7.bn.running_var"]
    )
    trunk = sum(v.numel() for k, v in own.items() if not k.endswith("num_batches_tracked"))
    assert rgb.out_dim == 1024 and trunk == 12_301_824  # 12.3 M values; + 409,600 + 400 of logits.*


class Payload:
    """Unpickling this creates a marker file: what a malicious .pt could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_that_is_not_a_plain_state_dict_is_refused_without_running_it(tmp_path):
    marker, bad = tmp_path / "marker", tmp_path / "evil.pt"
    torch.save({"Conv3d_1a_7x7.conv3d.weight": torch.zeros(1), "x": Payload(marker)}, bad)
    result = runner.invoke(app, ["convert", "i3d", str(bad), str(tmp_path / "out.safetensors")])
    assert result.exit_code == 3 and "not a plain state dict (refused without running it)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()
    with open(bad, "rb") as f:  # the payload is real: full unpickling would have run it
        torch.serialization.load(f, weights_only=False)
    assert marker.exists()


def test_files_that_are_not_i3d_state_dicts_are_refused(tmp_path):
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    torch.save({"fc.weight": torch.zeros(2)}, tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    cases = [("list.pt", "does not hold a {name: tensor}"), ("other.pt", "not an I3D state dict")]
    cases += [("junk.pt", "not a plain state dict"), ("absent.pt", "does not exist")]
    for name, message in cases:
        result = runner.invoke(app, ["convert", "i3d", str(tmp_path / name), str(tmp_path / "o.safetensors")])
        assert result.exit_code == 3 and message in result.stderr, (name, result.stderr)


def test_weights_of_another_width_are_a_checkpoint_error(rgb_pt, tmp_path):
    out = tmp_path / "w.safetensors"
    assert runner.invoke(app, ["convert", "i3d", str(rgb_pt[0]), str(out)]).exit_code == 0
    with pytest.raises(CheckpointError, match="wrong shapes"):
        load_i3d_weights(I3D(3, width_divisor=16), out)
    with pytest.raises(CheckpointError, match="do not exist"):
        load_i3d_weights(I3D(3), tmp_path / "missing.safetensors")


def test_same_padding_and_shapes_follow_tensorflow():
    assert same_padding(224, 7, 2) == (2, 3) and same_padding(225, 7, 2) == (3, 3)
    assert same_padding(10, 3, 1) == (1, 1) and same_padding(7, 2, 2) == (0, 1)
    net = I3D(2, width_divisor=16, pool_frames=2)
    x = torch.randn(2, 9, 2, 20, 20)
    with torch.no_grad():
        assert net(x).shape == (2, net.out_dim)
    trunk = [
        net.Conv3d_1a_7x7,
        net.MaxPool3d_2a_3x3,
        net.Conv3d_2b_1x1,
        net.Conv3d_2c_3x3,
        net.MaxPool3d_3a_3x3,
    ]
    h = x.transpose(1, 2)
    for layer in trunk:
        h = layer(h)
    assert h.shape[2:] == (5, 3, 3)  # ceil(9/2), ceil(ceil(ceil(20/2)/2)/2)
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    assert bns and all(bn.eps == 1e-3 and bn.momentum == 0.01 for bn in bns)
    assert net.min_frames == 9 and I3D(3).min_frames == 57
    with pytest.raises(InputTooShort, match="at least 9 frames"):
        net(torch.randn(2, 8, 2, 20, 20))
