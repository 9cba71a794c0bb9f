"""FLOP counts of the paper-scale cost estimate (mtl_src.bench.paper_cost) on a tiny configuration."""

import torch

from mtl_src import benchmarks
from mtl_src.bench.paper_cost import (
    BENCHES, measure_primitives, method_class, stand_in_losses, step_flops, synthetic_batch,
)

DIGITS = next(b for b in BENCHES if b.key == "multimnist_full")


def _prims(n: int, device: str, real_losses: bool):
    torch.manual_seed(0)
    bench = benchmarks.make("multimnist_full", profile="paper", verify=False)
    model = bench.build_model().to(device)
    x, batch = synthetic_batch(DIGITS, bench, n, device)
    losses = (lambda outs: bench.losses(outs, batch)) if real_losses else stand_in_losses
    return measure_primitives(model, x, losses, n)


def test_flops_linear_in_batch_and_k_backwards_cost_more():
    p4, p8 = _prims(4, "cpu", True), _prims(8, "cpu", True)
    assert p4.K == 2 and p4.F > 0
    for part in ("F", "B", "Bsh", "Bh", "BZ", "BJ", "BW"):
        assert getattr(p8, part) == 2 * getattr(p4, part), part  # exact: conv / linear FLOPs scale with the batch
    assert p4.Bsh > p4.B > p4.F  # K = 2 backwards through the encoder cost more than one backward
    assert p4.BZ < p4.Bsh  # backwards to Z stop at the heads
    assert step_flops(p4, "shared") > step_flops(p4, "lw") > 0
    assert step_flops(p4, "stgu", "high") >= step_flops(p4, "stgu", "low")


def test_meta_stand_in_counts_equal_real_losses_on_cpu():
    real, meta = _prims(4, "cpu", True), _prims(4, "meta", False)
    assert (real.F, real.B, real.Bsh) == (meta.F, meta.B, meta.Bsh)


def test_method_cost_classes():
    assert method_class("ls") == method_class("pi:uw") == method_class("dtp") == "lw"
    assert method_class("mgda") == method_class("pi:nash_mtl") == method_class("pivrg") == "shared"
    assert method_class("mgda_ub") == method_class("aligned_mtl_ub") == "representation"
    assert method_class("famo") == "famo" and method_class("stgu") == "stgu"
