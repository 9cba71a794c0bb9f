"""Every method moves every shared parameter of the benchmarks' task-BN networks.

Regression test for a defect of the representation-space methods (MGDA-UB, Aligned-MTL-UB) on
:class:`mtl_src.nn.TaskBNTailModel`: the shared tail convs lie *after* Z, so J^T d_Z never reached them
and they were given zero gradients. The tail stayed at its random initialisation and both methods
collapsed to 0.36 / 0.38 test accuracy on MultiMNIST (LS 0.75).
"""

from __future__ import annotations

import pytest
import torch

from mtl_src import benchmarks, methods
from mtl_src.experiment import comparison_methods
from mtl_src.methods import Forward, StepContext
from mtl_src.nn import TaskBNTailModel

SPECS = comparison_methods(pi=True, controls=True)


def _one_step(spec: str, seed: int = 0):
    bench = benchmarks.make("multimnist", profile="fast", n_train=64, n_test=16)
    torch.manual_seed(seed)
    model = bench.build_model()
    assert isinstance(model, TaskBNTailModel)  # the network the fast and reference profiles train
    x, yl, yr = bench.datasets()["train"][:32]
    batch = (x, yl, yr)

    def forward() -> Forward:
        z, outs = model(x)
        return Forward(bench.losses(outs, batch), z)

    shared = model.shared_parameters()
    opt = torch.optim.SGD(list(model.parameters()), lr=0.1)
    m = methods.make(spec)
    before = [p.detach().clone() for p in shared]
    model.train()
    m.step(StepContext(forward, shared, opt, model.task_parameters(), last_shared=model.last_shared_parameters(),
                       model=model, progress={"epoch": 0, "epochs": 1, "iteration": 0, "iterations": 1}))
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: float((p.detach() - b).abs().max()) for p, b in zip(shared, before)}


@pytest.mark.parametrize("spec", SPECS)
def test_one_step_moves_every_shared_parameter_of_the_task_bn_lenet(spec):
    moved = _one_step(spec)
    frozen = [n for n, d in moved.items() if not d > 0]
    assert not frozen, f"{spec}: shared parameters left unchanged by a training step: {frozen}"
    assert any(n.startswith("tail.") for n in moved)  # the tail's shared conv is among the checked ones


def test_the_check_detects_a_frozen_tail(monkeypatch):
    """The property above fails for the old behaviour (zeros for every shared parameter Z does not reach)."""
    from mtl_src.methods import base

    original = base.Aggregator.step

    def old_step(self, ctx):
        if self.space != "representation":
            return original(self, ctx)
        out = ctx.forward()
        ctx.optimizer.zero_grad(set_to_none=True)
        from mtl_src.autodiff import task_gradients

        G = task_gradients(out.losses, [out.representation], retain_graph=True)
        dZ = self.aggregate(G).view_as(out.representation)
        grads = torch.autograd.grad(out.representation, list(ctx.shared), grad_outputs=dZ, retain_graph=True,
                                    allow_unused=True)
        for p, g in zip(ctx.shared, grads):
            p.grad = torch.zeros_like(p) if g is None else g.detach()
        heads = torch.autograd.grad(out.losses.sum(), list(ctx.specific), allow_unused=True)
        for p, g in zip(ctx.specific, heads):
            p.grad = None if g is None else g.detach()
        ctx.optimizer.step()
        return base.StepResult(out.losses.detach())

    monkeypatch.setattr(base.Aggregator, "step", old_step)
    moved = _one_step("mgda_ub")
    assert [n for n, d in moved.items() if d == 0] and all(n.startswith("tail.") for n, d in moved.items() if d == 0)
