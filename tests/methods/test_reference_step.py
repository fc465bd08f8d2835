"""recipe: reference — one step of ours against the released code's step re-computed independently.

The re-computation below is written from shared/reference/released-code.md §3–§4 and §6 in
plain torch (one-hot soft-target CE as the code's labels, two `autograd.grad` calls,
`p.data = p.data + ρ·g/‖g‖` never undone, `torch.svd` of R, the shape-matched `grad @ T`
loop, a fresh `torch.optim.SGD`); it imports nothing of our step, mixup or projection code.
The CREMA-D model at small widths, in float64 so that ≤ 1e-6 relative is a sharp test.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from igm_cli.engine.mixup import MixupDraw
from igm_cli.methods import get_method
from igm_cli.presets import resolve_preset

RESNET = {"widths": [8, 16], "depths": [1, 1], "embedding": 8}
SETS = [
    "recipe=reference",
    *(f"modalities.{m}.encoder.{k}={json.dumps(v)}" for m in ("audio", "video") for k, v in RESNET.items()),
    "modalities.video.input.size=16",
    "head.widths=[12,10]",  # head weight shapes (12,16), (10,12), (6,10): each matched once by shape
]
SHAPES = {"audio": [20, 16], "video": [1, 3, 16, 16]}
B, LR, MOMENTUM, WD, TAU, RATIO = 6, 0.05, 0.9, 1e-4, 0.4, 0.3


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def inputs(seed: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = {m: torch.randn(B, *([1] if m == "audio" else []), *s, generator=g, dtype=torch.float64)
         for m, s in SHAPES.items()}  # fmt: skip
    return x, torch.randint(0, 6, (B,), generator=g)


# ---------------------------------------------------------------- the released code, re-computed


def code_T(branch, batches) -> dict[tuple, torch.Tensor]:
    """compute_P_matrix + compute_cov/update_cov: R[W] += μᵀμ per batch on Linear inputs (eval,
    no grad); T = V diag(exp(−τ(S − lmin)/(lmax − lmin))) Vᵀ of torch.svd(R, some=False), by W's shape."""
    R = {}
    linears = [m for m in branch.head.modules() if isinstance(m, torch.nn.Linear)]

    def hook(module, args):
        mu = args[0].mean(0, keepdim=True)  # (1, d)
        R[module] = R.get(module, 0) + mu.T @ mu

    handles = [m.register_forward_pre_hook(hook) for m in linears]
    branch.eval()
    with torch.no_grad():
        for x in batches:
            branch(x)
    for h in handles:
        h.remove()
    T = {}
    for m, r in R.items():
        _, S, V = torch.svd(r, some=False)
        lmax, lmin = S.max(), S.min()
        T[tuple(m.weight.shape)] = V @ torch.diag(torch.exp(-TAU * (S - lmin) / (lmax - lmin))) @ V.T
    return T


def code_step(branch, x, y, lam, idx, rho, T):
    """train_withP for one batch (released-code.md §4 steps 1–8, §3.4, §6)."""
    branch.train()
    enc, cls = list(branch.encoder.parameters()), list(branch.head.parameters())
    optimizer = torch.optim.SGD([*enc, *cls], lr=LR, momentum=MOMENTUM, weight_decay=WD)
    onehot = F.one_hot(y, 6).double()  # the AV loaders' labels are one-hot FloatTensors
    x = lam * x + (1 - lam) * x[idx]  # mixup of the current modality's input only
    fea = branch.encoder(x)
    o = branch.head(fea)
    loss_ori = lam * F.cross_entropy(o, onehot, reduction="none") + (1 - lam) * F.cross_entropy(
        o, onehot[idx], reduction="none"
    )
    g_enc = torch.autograd.grad(loss_ori.mean(), enc, retain_graph=True)
    g_cls = torch.autograd.grad(loss_ori.mean(), cls, retain_graph=True)
    for p, g in [*zip(enc, g_enc, strict=True), *zip(cls, g_cls, strict=True)]:
        p.data = p.data + rho * g / torch.norm(g)  # never restored
    o_tmp = branch.head(fea)  # the features computed before the perturbation
    loss_tmp = F.cross_entropy(o_tmp, onehot, reduction="none")  # the un-mixed label
    loss = (1 - RATIO) * loss_ori.mean() + RATIO * loss_tmp.mean()
    optimizer.zero_grad()
    loss.backward()
    for m in branch.head.modules():
        if isinstance(m, torch.nn.Linear) and tuple(m.weight.shape) in T:
            m.weight.grad = m.weight.grad @ T[tuple(m.weight.shape)]
    grads = {n: p.grad.clone() for n, p in branch.named_parameters()}
    optimizer.step()
    return float(loss.detach()), grads


# ---------------------------------------------------------------- ours, as the Trainer drives it


def setup(rho: float):
    preset = resolve_preset("crema-d", [*SETS, f"sam.rho={rho}"])
    method = get_method(preset)
    torch.manual_seed(0)
    model = method.build_model(SHAPES, 6).double()
    return method, model


def our_step(method, model, x, y, draw, lr=LR):
    """The Trainer's sequence for one batch of stage 1 (video, T of audio)."""
    stage = method.schedule()[1]
    method.draw = lambda batch, device: draw
    model.eval()
    model.branch("video").train()
    params = list(model.branch("video").parameters())
    optimizer = torch.optim.SGD(params, lr=lr, momentum=MOMENTUM, weight_decay=WD)
    (substep,) = method.substeps(model, stage, params)
    optimizer.zero_grad(set_to_none=True)
    loss = substep.gradients(x, y, False)
    method.before_step(substep)
    grads = {n: p.grad.clone() for n, p in model.branch("video").named_parameters()}
    optimizer.step()
    return float(loss), grads


DRAW = MixupDraw(0.37, torch.tensor([3, 0, 5, 1, 4, 2]))  # a fixed mixup draw


@pytest.mark.parametrize("rho", [1e-2, 1e-10])
def test_reference_step_equals_the_released_code(rho):
    method, model = setup(rho)
    assert method.trainer_sam_rho == 0 and method.sam_rho == rho  # the perturbation is the step's own
    theirs = copy.deepcopy(model)
    # T of audio (the stage-1 source) from three training batches, then one video step under it
    audio_batches = [inputs(s)[0]["audio"] for s in (1, 2, 3)]
    method.projector.collect(model, "audio", audio_batches)
    T = code_T(theirs.branch("audio"), audio_batches)
    for name, linear in model.head_linears("audio"):
        assert rel(method.projector.T["audio"][name], T[tuple(linear.weight.shape)]) < 1e-10
    stage = method.schedule()[1]
    assert stage.active == ("video",) and stage.source == "audio"
    assert method.begin_stage(model, stage, None) == ["head.0", "head.2", "head.3"]
    x, y = inputs(9)
    loss, ours = our_step(method, model, x, y, DRAW)

    their_loss, their_grads = code_step(theirs.branch("video"), x["video"], y, DRAW.lam, DRAW.index, rho, T)
    assert abs(loss - their_loss) <= 1e-6 * abs(their_loss)
    mine = dict(model.branch("video").named_parameters())
    for n, p in theirs.branch("video").named_parameters():
        assert rel(ours[n], their_grads[n]) < 1e-6, n  # the gradient after T
        assert rel(mine[n].detach(), p.detach()) < 1e-6, n  # the weights after the step
    my_buffers = dict(model.branch("video").named_buffers())
    for n, buffer in theirs.branch("video").named_buffers():  # BN statistics: one forward, as the code
        assert torch.allclose(my_buffers[n].double(), buffer.double(), rtol=1e-6, atol=0), n
    pairs = zip(
        model.branch("audio").named_parameters(), theirs.branch("audio").named_parameters(), strict=True
    )
    assert all(torch.equal(p, q) for (_, p), (_, q) in pairs)  # the inactive branch is untouched


def test_the_perturbation_is_never_restored():
    """With lr 0 the optimizer moves nothing: what remains is θ + ρ·g/‖g‖ per tensor, g of the mixup loss."""
    rho = 1e-2
    method, model = setup(rho)
    x, y = inputs(4)
    branch = model.branch("video")
    theta = {n: p.detach().clone() for n, p in branch.named_parameters()}
    probe = copy.deepcopy(branch).train()
    xm = DRAW.lam * x["video"] + (1 - DRAW.lam) * x["video"][DRAW.index]
    o = probe(xm)
    loss = DRAW.lam * F.cross_entropy(o, y) + (1 - DRAW.lam) * F.cross_entropy(o, y[DRAW.index])
    names, params = zip(*probe.named_parameters(), strict=True)
    g = dict(zip(names, torch.autograd.grad(loss, params), strict=True))
    our_step(method, model, x, y, DRAW, lr=0.0)
    for n, p in branch.named_parameters():
        expected = theta[n] + rho * g[n] / g[n].norm()
        assert rel(p.detach() - theta[n], expected - theta[n]) < 1e-9, n


def test_the_share_of_entries_the_codes_perturbation_moves_is_counted():
    """float32, ρ = 1e-10: the count equals a direct comparison of θ + ρ·g/‖g‖ with θ (most entries stay)."""
    from igm_cli.methods.igm_reference import code_step

    torch.manual_seed(1)
    _, model = setup(1e-10)
    branch = model.float().branch("video").train()
    x, y = inputs(5)
    x = x["video"].float()
    probe = copy.deepcopy(branch)
    xm = DRAW.lam * x + (1 - DRAW.lam) * x[DRAW.index]
    o = probe(xm)
    loss = DRAW.lam * F.cross_entropy(o, y) + (1 - DRAW.lam) * F.cross_entropy(o, y[DRAW.index])
    params = list(probe.parameters())
    grads = torch.autograd.grad(loss, params)
    changed = sum(int(((p + 1e-10 * g / g.norm()) != p).sum()) for p, g in zip(params, grads, strict=True))
    total = sum(p.numel() for p in params)
    moved = torch.zeros(2, dtype=torch.float64)
    code_step(branch, x, y, DRAW, 1e-10, 0.3, moved)
    assert moved.tolist() == [changed, total]
    assert changed < 0.1 * total  # the released ρ moves few entries in float32 (tiny widths: ~1 %)
