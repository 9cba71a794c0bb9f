"""The generic Aggregator step on a small shared-encoder network (theta- and Z-space)."""

import pytest
import torch
from torch import nn

from mtl_src import methods
from mtl_src.autodiff import task_gradients
from mtl_src.methods import Forward, StepContext


def _setup(K=3, seed=0):
    torch.manual_seed(seed)
    enc = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    heads = nn.ModuleList([nn.Linear(3, 1) for _ in range(K)])
    x, y = torch.randn(8, 4), torch.randn(8, K)

    def forward():
        z = enc(x)
        losses = torch.stack([((h(z).squeeze(-1) - y[:, i]) ** 2).mean() for i, h in enumerate(heads)])
        return Forward(losses, representation=z)

    opt = torch.optim.SGD(list(enc.parameters()) + list(heads.parameters()), lr=0.0)  # lr 0: inspect grads
    ctx = StepContext(forward, list(enc.parameters()), opt, specific=list(heads.parameters()))
    return enc, heads, forward, ctx


def _grads(ps):
    return torch.cat([p.grad.flatten() for p in ps])


@pytest.mark.parametrize("name", ["ls", "mgda", "pcgrad", "cagrad", "aligned_mtl", "imtl_g", "nash_mtl", "fairgrad"])
def test_shared_step_writes_the_aggregated_direction(name):
    enc, heads, forward, ctx = _setup()
    m = methods.make(name)
    m.step(ctx)
    G = task_gradients(forward().losses, list(enc.parameters()))
    torch.testing.assert_close(_grads(enc.parameters()), methods.make(name)(G))


# head k receives lambda_k grad L_k: the weighted loss the authors back-propagate (MGDA, IMTL-G, Nash-MTL in
# the nash-mtl code; Nash-MTL's lambda is the unclipped alpha), else the plain sum (PCGrad, CAGrad, FairGrad,
# Aligned-MTL and PIVRG overwrite only the shared gradient)
WEIGHTED_HEADS = {"mgda", "mgda_ub", "imtl_g", "nash_mtl"}
AGGREGATORS = [n for n in methods.available() if issubclass(methods.get(n), methods.Aggregator)]


@pytest.mark.parametrize("name", AGGREGATORS)
def test_heads_receive_the_authors_loss_weighting(name):
    enc, heads, forward, ctx = _setup()
    m = methods.make(name)
    m.step(ctx)
    out = forward()
    if name in WEIGHTED_HEADS:
        lam = m.head_weights()
        assert lam is not None and lam.shape == (3,)
        if name == "nash_mtl":  # unclipped: alpha_i (M alpha)_i = 1
            M = task_gradients(out.losses, list(enc.parameters()), retain_graph=True).double()
            M = M @ M.T
            torch.testing.assert_close(lam * (M @ lam), torch.ones(3, dtype=torch.float64), rtol=1e-6, atol=1e-6)
        else:
            torch.testing.assert_close(lam, m.last_weights)
        assert not torch.allclose(lam, torch.ones_like(lam))  # the check can tell the two conventions apart
        total = (lam.to(out.losses) * out.losses).sum()
    else:
        assert m.head_weights() is None
        total = out.losses.sum()
    ref = torch.autograd.grad(total, list(heads.parameters()))
    torch.testing.assert_close(_grads(heads.parameters()), torch.cat([g.flatten() for g in ref]))


def test_ub_step_is_J_transpose_times_aligned_representation_gradient():
    enc, _, forward, ctx = _setup()
    methods.make("aligned_mtl_ub").step(ctx)
    out = forward()
    GZ = task_gradients(out.losses, [out.representation], retain_graph=True)
    dZ = methods.make("aligned_mtl")(GZ)
    # explicit J (|Z| x P) by rows
    z = out.representation.flatten()
    params = list(enc.parameters())
    J = torch.stack([torch.cat([g.flatten() for g in torch.autograd.grad(z[j], params, retain_graph=True)]) for j in range(z.numel())])
    torch.testing.assert_close(_grads(params), J.T @ dZ)


def test_representation_method_without_representation_is_a_clear_error():
    enc, _, forward, ctx = _setup()
    ctx.forward = lambda: Forward(forward().losses)
    with pytest.raises(ValueError, match="must return Forward\\(losses, representation=Z\\)"):
        methods.make("aligned_mtl_ub").step(ctx)
