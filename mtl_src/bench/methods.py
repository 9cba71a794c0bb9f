"""Cost of one full training step of every method, relative to ``ls``.

    python -m mtl_src.bench.methods [--tasks 2 4 11 40] [--repeats 5] [--methods ls mgda ...]

A small CNN (two conv layers + a linear layer, 28x28 inputs, batch 32) with K linear heads. For each K
and method, the median over interleaved repetitions (methods in a fresh random order each round,
same process) of the wall time of one ``Method.step``, split into forward / backward (per-task
gradients and write-back) / aggregation / optimizer step, and the same for torchjd's
implementation where it has the method (``mtl_backward`` + ``jac_to_grad``). Ratios are printed
against ``ls``. Methods that need a model structure the CNN lacks (e.g. task-specific batch norms)
are reported as n/a with the reason.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections import defaultdict

import torch
from torch import nn

from mtl_src import methods
from mtl_src.methods import Forward, StepContext

TORCHJD = {"mgda": "MGDA", "pcgrad": "PCGrad", "cagrad": "CAGrad", "aligned_mtl": "AlignedMTL",
           "imtl_g": "IMTLG", "nash_mtl": "NashMTL", "fairgrad": "FairGrad", "graddrop": "GradDrop"}


class Timer:
    def __init__(self) -> None:
        self.t: dict[str, float] = defaultdict(float)

    def wrap(self, key: str, fn):
        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.t[key] += time.perf_counter() - t0

        return timed


def _model(K: int, seed: int = 0):
    torch.manual_seed(seed)
    enc = nn.Sequential(nn.Conv2d(1, 10, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(10, 20, 5), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(320, 50), nn.ReLU())
    heads = nn.ModuleList([nn.Linear(50, 10) for _ in range(K)])
    return enc, heads


def _one_step(name: str, K: int, x, y, torchjd_name: str | None = None) -> dict[str, float]:
    enc, heads = _model(K)
    timer = Timer()

    def forward() -> Forward:
        z = enc(x)
        return Forward(torch.stack([nn.functional.cross_entropy(h(z), y[:, i]) for i, h in enumerate(heads)]), z)

    opt = torch.optim.SGD(list(enc.parameters()) + list(heads.parameters()), lr=1e-3)
    opt.step = timer.wrap("optimizer", opt.step)
    t0 = time.perf_counter()
    if torchjd_name is None:
        m = methods.make(name)
        if isinstance(m, methods.Aggregator):
            m.aggregate = timer.wrap("aggregation", m.aggregate)
        ctx = StepContext(timer.wrap("forward", forward), list(enc.parameters()), opt,
                          specific=list(heads.parameters()), progress={"epoch": 0, "epochs": 1, "iteration": 1})
        m.step(ctx)
    else:
        import torchjd.aggregation as A
        from torchjd.autojac import jac_to_grad, mtl_backward

        kwargs = {"CAGrad": {"c": 0.4}, "FairGrad": {"alpha": 2.0}, "NashMTL": {"n_tasks": K}}.get(torchjd_name, {})
        agg = getattr(A, torchjd_name)(**kwargs)
        def forward_list():
            z = enc(x)
            return [nn.functional.cross_entropy(h(z), y[:, i]) for i, h in enumerate(heads)], z

        losses, z = timer.wrap("forward", forward_list)()
        opt.zero_grad()
        mtl_backward(losses, features=z, shared_params=list(enc.parameters()))
        timer.wrap("aggregation", jac_to_grad)(list(enc.parameters()), agg)
        opt.step()
    total = time.perf_counter() - t0
    t = dict(timer.t)
    t["backward"] = total - sum(t.values())
    t["total"] = total
    return t


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, nargs="+", default=[2, 4, 11, 40])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--methods", nargs="+", default=None)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--no-torchjd", action="store_true")
    args = ap.parse_args(argv)
    names = args.methods or methods.available()
    if "ls" not in names:
        names = ["ls", *names]
    torch.set_num_threads(max(1, torch.get_num_threads()))
    for K in args.tasks:
        x = torch.randn(args.batch, 1, 28, 28)
        y = torch.randint(0, 10, (args.batch, K))
        runs = [(n, None) for n in names]
        if not args.no_torchjd:
            runs += [(n, TORCHJD[n]) for n in names if n in TORCHJD]
        res: dict[tuple, list[dict]] = defaultdict(list)
        failed: dict[tuple, str] = {}
        for r in range(args.repeats + 1):
            random.Random(r).shuffle(runs)
            for key in runs:
                if key in failed:
                    continue
                try:
                    t = _one_step(key[0], K, x, y, key[1])
                except Exception as err:  # report, do not hide: printed as n/a with the reason
                    failed[key] = f"{type(err).__name__}: {str(err).splitlines()[0][:70]}"
                    continue
                if r:  # round 0 is warm-up
                    res[key].append(t)
        base = statistics.median(t["total"] for t in res[("ls", None)])
        print(f"\nK = {K}  (ls step: {base * 1e3:.1f} ms; columns: median ms, ratio = total / ls total)")
        print(f"{'method':<26}{'forward':>9}{'backward':>10}{'aggreg.':>9}{'optim.':>8}{'total':>9}{'ratio':>8}")
        for key in sorted(set(res) | set(failed), key=lambda k: (k[0], k[1] or "")):
            label = key[0] + (" [torchjd]" if key[1] else "")
            if key in failed:
                print(f"{label:<26} n/a ({failed[key]})")
                continue
            med = {c: statistics.median(t.get(c, 0.0) for t in res[key]) * 1e3
                   for c in ("forward", "backward", "aggregation", "optimizer", "total")}
            print(f"{label:<26}{med['forward']:>9.1f}{med['backward']:>10.1f}{med['aggregation']:>9.1f}"
                  f"{med['optimizer']:>8.1f}{med['total']:>9.1f}{med['total'] / (base * 1e3):>8.2f}")


if __name__ == "__main__":
    main()
