"""Estimated GPU hours of the papers' tables at full scale, from FLOP counts measured on the CPU.

    python -m mtl_src.bench.paper_cost [--tflops 40] [--seeds 3] [--no-cpu-time]

No GPU was used. What is **measured** (exact counts, ``torch.utils.flop_counter.FlopCounterMode``:
matmul / convolution FLOPs, forward and backward; element-wise ops, losses and the optimizer are not
counted) is, for each paper-scale benchmark, on the benchmark's own model (``build_model()`` of the
``paper`` profile) at the paper input size and the paper batch size:

- ``F``: one forward pass; ``B``: one backward of the summed losses w.r.t. every parameter;
- ``Bsh``: the K per-task backward passes w.r.t. the shared parameters, through the project's
  :func:`mtl_src.autodiff.task_gradients` (what every shared-space :class:`~mtl_src.methods.Aggregator`
  calls), and ``Bh``: the heads' backward that follows it;
- ``BZ``: the K per-task backwards w.r.t. the shared representation Z, and ``BJ``: the one backward
  J^T d_Z through the encoder (the representation-space "UB" methods);
- ``BW``: the K per-task backwards w.r.t. the encoder's last layer (GradNorm's W).

The image / dense models run on the ``meta`` device (shapes only, no arithmetic), so the counts are
taken at the full paper batch without computing anything; their losses there are a stand-in
(the mean of each head's output) because the benchmarks' losses branch on data, which the meta
device has none of. The stand-in changes no counted FLOP (the losses are element-wise): the CPU
check below runs the benchmark's *real* losses on real tensors at a small batch and prints the ratio
of its F + B count to the meta count scaled linearly to that batch (1.000 = identical). QM9's
message-passing network uses data-dependent graph ops, so it is counted on the CPU on a seeded random
sample of real molecules (``--qm9-sample`` of them, parsed from the qm9pack wheel, nothing
downloaded), and scaled to the paper batch of 120 by the number of directed edges of the complete
graph (the per-edge edge network carries almost all the FLOPs): the mean of n(n-1) over all 130,831
molecules, from qm9pack's atom counts. FLOPs are linear in the batch for every network here, so every
count is reported at the paper batch.

Per training step each method costs, in these parts (the class is read from the method's code:
:class:`~mtl_src.methods.LossWeighting`, :class:`~mtl_src.methods.Aggregator` and its ``space``;
LS, an aggregator whose own step is one backward, is a loss weighting; the ``pi:`` wrapper costs
what its base does): loss weightings F + B; FAMO 2F + B (its no-grad
forward after the step); GradNorm F + BW + B; shared-space aggregators F + Bsh + Bh + 2K^2 P (the
last term, the K x K Gramian of P shared parameters, is analytical, not measured); representation
aggregators F + BZ + BJ + Bh + 2K^2 |Z|; Connection Strength 1/2 (K F + K B) + 1/2 (F + Bsh + Bh +
2K^2 P) (its Phase-1 probability falls linearly from 1 to 0 over training, so half the steps are
each; Phase 2 counted with task BNs, i.e. the K backwards); STGU 2F + B (one group) to (K + 1) F +
K B (K singleton groups): its grouping depends on the run, so totals with STGU are a low-high range.
Single-task baselines cost F + B per step. Every epoch also evaluates the test split (one forward
per test sample).

Total FLOPs of a table = sum over its methods of (train samples / batch) x step FLOPs x epochs
(plus evaluation) x seeds. Two tables per benchmark: the printed paper table (its methods; Aligned-MTL
Tables 2 and 3, PIVRG Tables 1-3, see ``TABLES`` below) and the book's chapter with ``methods="all"``
(:func:`mtl_src.experiment.comparison_methods`, 28 methods incl. PI-*) plus the K single-task runs of
the Delta m baseline. Seeds: the paper profile's 3 (:data:`mtl_src.experiment.PROFILE_SEEDS`).

GPU hours = FLOPs / ``--tflops`` (an **assumed** sustained throughput; default 40 TFLOP/s, about a
quarter of an A100's 156 TFLOP/s TF32 peak). That assumption is the main uncertainty. Small models
(the LeNet of MultiMNIST: under 1 GFLOP per step) cannot keep a GPU busy: their steps are bound by
kernel launches, the data loader and per-task Python loops, so their real hours are far higher than
the FLOP-based number, which is a **lower bound** for them.

``--cpu-time`` (default on): the CPU wall time of one forward + backward of the summed real losses at
a small batch (after one untimed step), with its measured FLOP count, as a sanity check of the counts
(achieved CPU GFLOP/s; noisy on a shared machine). The whole script takes 30 s (idle) to 2 minutes (shared) on a
2-core CPU (the CPU steps of ResNet-18, SegNet and QM9's K backwards are the slow parts; ``--no-cpu-time``
skips every CPU step except QM9's count).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from mtl_src import benchmarks
from mtl_src import methods as _methods
from mtl_src.autodiff import stack_losses, task_gradients

__all__ = ["Primitives", "count_flops", "measure_primitives", "step_flops", "method_class", "BENCHES",
           "TABLES", "main"]

PARTS = ("F", "B", "Bsh", "Bh", "BZ", "BJ", "BW")


@dataclass
class Primitives:
    """Measured FLOPs of one batch (see the module docstring) + the sizes the analytical terms need."""

    batch: int
    K: int
    P_shared: int
    Z_numel: int  # per batch
    F: float
    B: float
    Bsh: float
    Bh: float
    BZ: float
    BJ: float
    BW: float

    def scaled(self, factor: float, batch: int) -> "Primitives":
        """The counts at another batch (FLOPs are linear in the batch); sizes per batch likewise."""
        return Primitives(batch, self.K, self.P_shared, int(round(self.Z_numel * factor)),
                          *(getattr(self, p) * factor for p in PARTS))


def count_flops(fn: Callable[[], Any]) -> int:
    """Total FLOPs that ``fn()`` executes, counted by ``FlopCounterMode`` (matmuls and convolutions)."""
    with FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())


def stand_in_losses(outputs: Sequence[Tensor]) -> Tensor:
    """One scalar per head (its output's mean): no counted FLOPs, like the benchmarks' losses."""
    return stack_losses([o.float().mean() for o in outputs])


def measure_primitives(model: benchmarks.MTLModel, x: Any, losses: Callable[[list[Tensor]], Tensor],
                       batch: int) -> Primitives:
    """Count F, B, Bsh, Bh, BZ, BJ, BW of ``model`` on input ``x`` (a fresh forward before each backward)."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    shared, specific = model.shared_parameters(), model.task_parameters()
    last = model.last_shared_parameters()
    out: dict[str, float] = {}
    Zn: list[int] = []

    def fwd() -> tuple[Tensor, Tensor]:
        z, outs = model(x)
        Zn[:] = [z.numel()]
        return z, losses(outs)

    res: list[Any] = []
    out["F"] = count_flops(lambda: res.append(fwd()))
    K = int(res[-1][1].shape[0])
    _, L = fwd()
    out["B"] = count_flops(lambda: torch.autograd.grad(L.sum(), params, allow_unused=True))
    _, L = fwd()
    out["Bsh"] = count_flops(lambda: task_gradients(L, shared, retain_graph=True))
    out["Bh"] = count_flops(lambda: torch.autograd.grad(L.sum(), specific, allow_unused=True))
    z, L = fwd()
    out["BZ"] = count_flops(lambda: task_gradients(L, [z], retain_graph=True))
    dz = torch.zeros_like(z)
    out["BJ"] = count_flops(lambda: torch.autograd.grad(z, shared, grad_outputs=dz, allow_unused=True))
    _, L = fwd()
    out["BW"] = count_flops(lambda: task_gradients(L, last))
    return Primitives(batch, K, sum(p.numel() for p in shared), Zn[0], **out)


# ------------------------------------------------------------------------------------------------
# per-method cost of one step, from the method's class
# ------------------------------------------------------------------------------------------------

def method_class(spec: str) -> str:
    """Cost class of a method spec: lw, famo, gradnorm, shared, representation, connection_strength,
    stgu (``pi:X`` costs what X does; ``stl`` is a loss weighting)."""
    name, kw = _methods.parse_spec(spec)
    if name == "pi":
        return method_class(kw.get("base", "ls"))
    if name in ("famo", "gradnorm", "connection_strength", "stgu"):
        return name
    if name in ("ls", "stl", "manual"):  # LS is a GramianWeighting whose own step is one backward
        return "lw"
    cls = _methods.get(name)
    if issubclass(cls, _methods.Aggregator):
        return "representation" if cls.space == "representation" else "shared"
    if issubclass(cls, _methods.LossWeighting):
        return "lw"
    raise ValueError(f"paper_cost: no cost model for method {spec!r} ({cls.__name__})")


def step_flops(p: Primitives, kind: str, stgu: str = "low") -> float:
    """FLOPs of one training step of a method of cost class ``kind`` (``stgu``: "low" one group,
    "high" K singleton groups)."""
    K = p.K
    gram_sh, gram_z = 2.0 * K * K * p.P_shared, 2.0 * K * K * p.Z_numel
    shared = p.F + p.Bsh + p.Bh + gram_sh
    if kind == "lw":
        return p.F + p.B
    if kind == "famo":
        return 2 * p.F + p.B
    if kind == "gradnorm":
        return p.F + p.BW + p.B
    if kind == "shared":
        return shared
    if kind == "representation":
        return p.F + p.BZ + p.BJ + p.Bh + gram_z
    if kind == "connection_strength":
        return 0.5 * (K * p.F + K * p.B) + 0.5 * shared
    if kind == "stgu":
        return 2 * p.F + p.B if stgu == "low" else (K + 1) * p.F + K * p.B
    raise ValueError(f"unknown cost class {kind!r}")


# ------------------------------------------------------------------------------------------------
# the benchmarks at paper scale and the tables
# ------------------------------------------------------------------------------------------------

@dataclass
class Bench:
    key: str
    name: str
    kw: dict[str, Any]
    n_train: int
    n_test: int
    #: input / label layout of the synthetic batch: "digits", "celeba", "dense" or "graph" (real QM9 molecules)
    family: str


#: train / test sizes: the benchmarks' docstrings (official splits; the paper profile uses all of them)
BENCHES: list[Bench] = [
    Bench("multimnist_full", "multimnist_full", {}, 60_000, 10_000, "digits"),
    Bench("multifashion", "multifashion", {}, 60_000, 10_000, "digits"),
    Bench("celeba (ResNet-18)", "celeba", {"model": "resnet18"}, 162_770, 19_962, "celeba"),
    Bench("celeba (9-layer CNN)", "celeba", {"model": "cnn9"}, 162_770, 19_962, "celeba"),
    Bench("cityscapes", "cityscapes", {}, 2_975, 500, "dense"),
    Bench("nyuv2", "nyuv2", {}, 795, 654, "dense"),
    Bench("qm9", "qm9", {}, 110_831, 10_000, "graph"),
]

_ALIGNED_7 = ("mgda", "mgda_ub", "pcgrad", "gradnorm", "uw", "aligned_mtl", "aligned_mtl_ub")
_PIVRG_NAMES = {"LS": "ls", "SI": "si", "RLW": "rlw", "DWA": "dwa", "UW": "uw", "MGDA": "mgda", "PCGrad": "pcgrad",
                "GradDrop": "graddrop", "CAGrad": "cagrad", "IMTL-G": "imtl_g", "MoCo": "moco", "Nash-MTL": "nash_mtl",
                "FAMO": "famo", "FairGrad": "fairgrad", "PIVRG": "pivrg"}


def _pivrg(key: str) -> tuple[str, ...]:
    from mtl_src.paper_tables import TABLES as PT

    return tuple(_PIVRG_NAMES[m] for m in PT[key].methods)


#: benchmark key -> (printed table, its methods); the rows of Aligned-MTL Table 2 (MultiMNIST) and
#: Table 3 (CelebA, ResNet-18) as printed; PIVRG's from :data:`mtl_src.paper_tables.TABLES`
TABLES: dict[str, tuple[str, Callable[[], tuple[str, ...]]]] = {
    "multimnist_full": ("Aligned-MTL T2", lambda: _ALIGNED_7),
    "celeba (ResNet-18)": ("Aligned-MTL T3", lambda: _ALIGNED_7),
    "celeba (9-layer CNN)": ("PIVRG T2", lambda: _pivrg("pivrg_t2_celeba")),
    "cityscapes": ("PIVRG T2", lambda: _pivrg("pivrg_t2_cityscapes")),
    "nyuv2": ("PIVRG T1", lambda: _pivrg("pivrg_t1")),
    "qm9": ("PIVRG T3", lambda: _pivrg("pivrg_t3")),
}


def synthetic_batch(b: Bench, bench: Any, n: int, device: str) -> tuple[Any, Any]:
    """(model input, batch) of ``n`` samples in the shapes the benchmark's loader yields."""
    g = torch.Generator().manual_seed(0)

    def rnd(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=g).to(device) if device != "meta" else torch.empty(*shape, device="meta")

    def ints(lo: int, hi: int, *shape: int) -> Tensor:
        if device == "meta":
            return torch.empty(*shape, dtype=torch.int64, device="meta")
        return torch.randint(lo, hi, shape, generator=g)

    if b.family == "digits":
        batch = (rnd(n, 1, 28, 28), ints(0, 10, n), ints(0, 10, n))
    elif b.family == "celeba":
        s = bench.image_size
        batch = (rnd(n, 3, s, s), ints(0, 2, n, 40))
    elif b.family == "dense":
        H, W = bench.resolution
        batch = [rnd(n, 3, H, W), ints(-1, bench.CLASSES, n, H, W).float(), rnd(n, 1, H, W)]
        if b.name == "nyuv2":
            normal = rnd(n, 3, H, W) * 2 - 1
            batch.append(normal / normal.norm(dim=1, keepdim=True) if device != "meta" else normal)
        batch = tuple(batch)
    else:
        raise ValueError(b.family)
    return batch[0], batch


def _paper_bench(b: Bench, **extra: Any) -> Any:
    return benchmarks.make(b.name, profile="paper", **b.kw, **extra)


def _qm9_batch(n: int, seed: int = 0) -> tuple[Any, Any, float]:
    """A real QM9 batch of ``n`` random molecules (paper model settings), and the factor that scales
    its counts to the paper batch of 120 by complete-graph edges (mean n(n-1) over all molecules)."""
    from mtl_src.benchmarks.qm9 import read_raw

    atoms = read_raw(None)["N_atoms"].to_numpy().astype(float)
    mean_edges = float((atoms * (atoms - 1)).mean())
    tmp = tempfile.mkdtemp(prefix="paper_cost_qm9_")
    bench = benchmarks.make("qm9", profile="paper", data_root=tmp, seed=seed, n_train=n, n_val=0, n_test=0)
    ds = bench.datasets()["train"]
    batch = bench.collate([ds[i] for i in range(n)])
    edges = int(batch.edge_index.shape[1])
    return bench, batch, 120 * mean_edges / edges


def measure_bench(b: Bench, cpu_time: bool, qm9_sample: int, time_batch: dict[str, int]) -> dict[str, Any]:
    """Primitives at the paper batch, and the CPU check (FLOP agreement, wall time) at a small batch."""
    torch.manual_seed(0)
    info: dict[str, Any] = {}
    if b.family == "graph":
        bench, batch, factor = _qm9_batch(qm9_sample)
        bs = bench.training()["batch_size"]
        model = bench.build_model()
        small = measure_primitives(model, batch, lambda outs: bench.losses(outs, batch), qm9_sample)
        prim = small.scaled(factor, bs)
        info["scaling"] = f"{qm9_sample} real molecules, x{factor:.2f} by edges"
        t_in, t_batch, t_n, t_losses = batch, batch, qm9_sample, (lambda outs: bench.losses(outs, batch))
        meta_small = small.F + small.B
    else:
        bench = _paper_bench(b, verify=False)
        bs = bench.training()["batch_size"]
        model = bench.build_model().to("meta")
        x, _ = synthetic_batch(b, bench, bs, "meta")
        prim = measure_primitives(model, x, stand_in_losses, bs)
        info["scaling"] = "meta device at the paper batch"
        t_n = min(time_batch.get(b.family, 4), bs)
        t_in, t_batch = synthetic_batch(b, bench, t_n, "cpu")
        t_losses = lambda outs: bench.losses(outs, t_batch)  # noqa: E731
        meta_small = (prim.F + prim.B) * t_n / bs
    info.update(bench=bench, prim=prim, epochs=bench.training()["epochs"], batch=bs)
    if cpu_time or b.family == "graph":
        cpu_model = bench.build_model()
        params = [p for p in cpu_model.parameters() if p.requires_grad]

        def step() -> None:
            _, outs = cpu_model(t_in)
            torch.autograd.grad(t_losses(outs).sum(), params, allow_unused=True)

        counted = count_flops(step)  # real losses, real tensors (also the warm-up)
        walls = []
        for _ in range(3 if counted < 20e9 else 1):  # the minimum of 3 steps where they are cheap
            t = time.perf_counter()
            step()
            walls.append(time.perf_counter() - t)
        agreement = None if b.family == "graph" else counted / meta_small  # QM9: the count itself
        info.update(cpu_batch=t_n, cpu_s=min(walls), cpu_flops=counted, agreement=agreement)
    return info


def table_flops(info: dict[str, Any], b: Bench, specs: Sequence[str], seeds: int, stl: bool,
                stgu: str = "low") -> float:
    """Total FLOPs of training ``specs`` (and the K single-task runs if ``stl``) x ``seeds``."""
    p: Primitives = info["prim"]
    steps = b.n_train / info["batch"]
    per_epoch_eval = p.F / info["batch"] * b.n_test
    runs = [step_flops(p, method_class(s), stgu) for s in specs]
    if stl:
        runs += [step_flops(p, "lw")] * p.K
    per_run = [(steps * r + per_epoch_eval) * info["epochs"] for r in runs]
    return seeds * sum(per_run)


def _ratio(a: float | None) -> str:
    return "meta count not applicable  " if a is None else f"ratio to the meta count {a:.4f}"


def _h(x: float) -> str:
    """GPU hours with 2 significant digits at least (small models give fractions of an hour)."""
    return f"{x:.2g}" if x < 10 else f"{x:,.0f}"


def main(argv: list[str] | None = None) -> None:
    from mtl_src.experiment import PROFILE_SEEDS, comparison_methods

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tflops", type=float, default=40.0,
                    help="assumed sustained GPU throughput in TFLOP/s (default 40: ~25%% of an A100's TF32 peak)")
    ap.add_argument("--seeds", type=int, default=len(PROFILE_SEEDS["paper"]))
    ap.add_argument("--qm9-sample", type=int, default=12, help="molecules of the QM9 count (scaled to 120)")
    ap.add_argument("--no-cpu-time", dest="cpu_time", action="store_false",
                    help="skip the CPU wall-time / real-loss check (QM9 is always counted on the CPU)")
    ap.add_argument("--only", nargs="*", default=None, help="benchmark keys to run (default: all)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    every = comparison_methods(pi=True)
    time_batch = {"digits": 256, "celeba": 4, "dense": 1}
    print(f"FLOPs measured with FlopCounterMode (matmul/conv, forward+backward) at the paper batch; "
          f"GPU hours ASSUMED at {args.tflops:g} TFLOP/s sustained; seeds = {args.seeds}.")
    print(f"chapter 'all' = {len(every)} methods ({', '.join(every)}) + K single-task runs; STGU range: "
          "1 group (low) .. K groups (high)\n")
    hdr = (f"{'benchmark':<21} {'K':>3} {'batch':>5} {'ep':>4} {'steps/ep':>8} {'GF fwd':>9} {'GF LS':>9} "
           f"{'GF agg':>10} {'table':<15} {'n':>3} {'GPU-h table':>11} {'GPU-h chapter all':>19}")
    rows, checks = [], []
    for b in BENCHES:
        if args.only and b.key not in args.only:
            continue
        t = time.perf_counter()
        info = measure_bench(b, args.cpu_time, args.qm9_sample, time_batch)
        p: Primitives = info["prim"]
        to_h = 1.0 / (args.tflops * 1e12 * 3600)
        tab = TABLES.get(b.key)
        if tab is not None:
            tname, specs = tab[0], tab[1]()
            tab_h = f"{_h(table_flops(info, b, specs, args.seeds, stl=False) * to_h):>11}"
            n = f"{len(specs):>3}"
        else:
            tname, tab_h, n = "(none)", f"{'-':>11}", f"{'-':>3}"
        lo = table_flops(info, b, every, args.seeds, stl=True, stgu="low") * to_h
        hi = table_flops(info, b, every, args.seeds, stl=True, stgu="high") * to_h
        rows.append(f"{b.key:<21} {p.K:>3} {info['batch']:>5} {info['epochs']:>4} "
                    f"{math.ceil(b.n_train / info['batch']):>8} {p.F / 1e9:>9.2f} {step_flops(p, 'lw') / 1e9:>9.2f} "
                    f"{step_flops(p, 'shared') / 1e9:>10.2f} {tname:<15} {n} {tab_h} {f'{_h(lo)} - {_h(hi)}':>19}")
        if "cpu_s" in info:
            checks.append(f"{b.key:<21} {info['scaling']:<38} CPU batch {info['cpu_batch']:>3}: "
                          f"{info['cpu_flops'] / 1e9:9.2f} GFLOP fwd+bwd (real losses), "
                          f"{_ratio(info['agreement'])}, {info['cpu_s'] * 1e3:8.1f} ms "
                          f"({info['cpu_flops'] / info['cpu_s'] / 1e9:5.1f} GFLOP/s)   [{time.perf_counter() - t:.1f} s]")
        else:
            checks.append(f"{b.key:<21} {info['scaling']}   [{time.perf_counter() - t:.1f} s]")
    print(hdr)
    print("\n".join(rows))
    print("\nGF fwd / GF LS / GF agg: GFLOPs per step of the forward, of a loss weighting (F + B) and of a "
          "shared-space gradient aggregator (F + K backwards + heads + Gramian).")
    print("\nchecks:")
    print("\n".join(checks))
    print(f"\ntotal runtime {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
