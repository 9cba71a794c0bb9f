"""Cost of one training step of every method in steady state, relative to ``ls``.

    python -m mtl_src.bench.methods [--tasks 2 4 11 40] [--rounds 5] [--warmup 3] [--methods ls mgda ...]

The network is the MultiMNIST LeNet of the embedded benchmark with K digit heads
(:func:`mtl_src.benchmarks.multimnist.lenet_encoder` and ``lenet_head``; 28x28 inputs, batch
``--batch`` = 64, SGD): one shared representation Z that every head reads, so torchjd's
``mtl_backward`` can run the same network. Connection Strength needs task-specific batch norms: it runs
on the task-BN variant of the same LeNet (:func:`~mtl_src.benchmarks.multimnist.lenet_task_bn`, a
:class:`mtl_src.nn.TaskBNTailModel`, whose tail runs once per task), and its ratio is printed against
``ls [task-BN]``, LS on that network.

Steady state, not first steps: every (method, implementation) keeps **one** model, optimizer and method
object for the whole run; ``--warmup`` untimed steps precede the timed ones, so stateful methods are
timed mid-run (Nash-MTL warm-started at its previous weights, MoCo/FAMO/DWA with their running
state). Methods whose defaults would leave the step untypical are configured so that the timed
step is the method's real work:

- ``stgu`` with ``warmup=0`` (its default 100 singleton warm-up iterations would otherwise be timed):
  affinity grouping and sequential group updates from the first step;
- ``connection_strength`` twice: ``[phase 1]`` (K sequential forward/backward/optimizer steps) and
  ``[phase 2]`` (projection per channel group); the task BN gains and running variances are drawn at
  random first, the mid-training state in which channels have distinct top-priority tasks (fresh BNs
  tie every channel, and Phase 2 is then the plain sum);
- ``manual`` with weights 1, ``stl`` on task 0, ``pi`` on its default base (LS);
- ``dtp``/``pi``/``dwa`` run without epoch feedback (their per-step cost does not depend on it).

Each round runs one step of every (method, implementation) in a fresh random order (interleaved, same
process, same batch). The step is split by exclusive wall time into ``forward`` (the model's forward
pass), ``task grads`` (:func:`mtl_src.autodiff.task_gradients`, the K per-task backward passes),
``aggregation`` (``Aggregator.aggregate``), ``backward`` (other backward passes: the heads, a loss
weighting's single backward, sequential updates), ``optim.`` (optimizer steps) and ``other``; nested
calls are charged to the innermost timed function. torchjd's implementation, where it has the
method, runs the same network: ``mtl_backward`` (the Jacobian w.r.t. the shared parameters, charged
to ``task grads``), ``jac_to_grad`` with its aggregator (``aggregation``), the optimizer step.

Printed per K: the median over ``--rounds`` rounds of each part (ms) and ``ratio`` = median total /
median total of ``ls``. Methods that fail are printed as n/a with the reason, never hidden.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import random
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mtl_src import methods
from mtl_src.autodiff import stack_losses
from mtl_src.methods import Forward, StepContext

TORCHJD = {"mgda": "MGDA", "pcgrad": "PCGrad", "cagrad": "CAGrad", "aligned_mtl": "AlignedMTL",
           "imtl_g": "IMTLG", "nash_mtl": "NashMTL", "fairgrad": "FairGrad", "graddrop": "GradDrop"}
PARTS = ("forward", "task grads", "aggregation", "backward", "optim.", "other")


_CURRENT: list["Timer"] = []  # the timer of the step being run (empty: the patched functions pass through)


def _timed(key: str, fn: Callable, skip_inside: str | None = None) -> Callable:
    """``fn`` charged to part ``key`` of the current timer (no-op outside a timed step, or inside
    part ``skip_inside``, e.g. autograd calls made by task_gradients itself)."""
    def timed(*a, **k):
        if not _CURRENT or (skip_inside is not None and _CURRENT[-1].inside(skip_inside)):
            return fn(*a, **k)
        with _CURRENT[-1].part(key):
            return fn(*a, **k)

    return timed


@contextlib.contextmanager
def _instrumented() -> Iterator[None]:
    """Install the timing wrappers once for a whole benchmark: ``task_gradients`` in every mtl_src
    module that imported it, ``torch.autograd.grad`` / ``backward``; restored on exit."""
    patched: list[tuple[Any, str, Any]] = []
    try:
        for mod in list(sys.modules.values()):
            if getattr(mod, "__name__", "").startswith("mtl_src.") and callable(getattr(mod, "task_gradients", None)):
                patched.append((mod, "task_gradients", mod.task_gradients))
                mod.task_gradients = _timed("task grads", mod.task_gradients)
        for fn in ("grad", "backward"):
            orig = getattr(torch.autograd, fn)
            patched.append((torch.autograd, fn, orig))
            setattr(torch.autograd, fn, _timed("backward", orig, skip_inside="task grads"))
        yield
    finally:
        for obj, attr, old in reversed(patched):
            setattr(obj, attr, old)


class Timer:
    """Exclusive wall time per part: time inside a nested timed call is charged to the inner part."""

    def __init__(self) -> None:
        self.t: dict[str, float] = defaultdict(float)
        self._stack: list[list[Any]] = []  # [part, start of the current exclusive slice]

    @contextlib.contextmanager
    def part(self, key: str) -> Iterator[None]:
        now = time.perf_counter()
        if self._stack:
            outer = self._stack[-1]
            self.t[outer[0]] += now - outer[1]
        self._stack.append([key, now])
        try:
            yield
        finally:
            key, start = self._stack.pop()
            now = time.perf_counter()
            self.t[key] += now - start
            if self._stack:
                self._stack[-1][1] = now

    def wrap(self, key: str, fn: Callable) -> Callable:
        def timed(*a, **k):
            with self.part(key):
                return fn(*a, **k)

        return timed

    def inside(self, key: str) -> bool:
        return any(k == key for k, _ in self._stack)


def build_model(K: int, seed: int = 0, task_bn: bool = False) -> nn.Module:
    """The MultiMNIST LeNet with K heads; ``task_bn``: its task-BN variant (see the module docstring)."""
    from mtl_src.benchmarks.base import MTLModel
    from mtl_src.benchmarks.multimnist import lenet_encoder, lenet_head, lenet_task_bn
    from mtl_src.nn import TaskBNTailModel

    torch.manual_seed(seed)
    if not task_bn:
        return MTLModel(lenet_encoder(28), [lenet_head() for _ in range(K)])
    trunk, tail = lenet_task_bn(28, K)
    return TaskBNTailModel(trunk, tail, [lenet_head() for _ in range(K)])


def _mid_training_bns(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for grp in model.task_bn_groups():
            for gamma, var in zip(grp.gamma, grp.running_var):
                gamma.copy_(torch.rand(gamma.shape, generator=g) * 1.5 + 0.25)
                var.copy_(torch.rand(var.shape, generator=g) + 0.5)


def _configured(name: str, K: int) -> tuple[str, dict[str, Any]]:
    """(label, hyperparameters) of the method as timed; see the module docstring."""
    if name == "stgu":
        return name, {"warmup": 0}
    if name == "manual":
        return name, {"w": [1.0] * K}
    if name == "stl":
        return name, {"task": 0}
    return name, {}


@dataclass
class Run:
    """One (method, implementation): its own model, optimizer and method state for the whole benchmark."""

    label: str
    name: str
    K: int
    hp: dict[str, Any] = field(default_factory=dict)
    torchjd: str | None = None
    mid_training: bool = False
    task_bn: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        self.model = build_model(self.K, self.seed, self.task_bn)
        if self.mid_training:
            _mid_training_bns(self.model, self.seed + 1)
        self.shared = self.model.shared_parameters()
        self.specific = self.model.task_parameters()
        self.method = None if self.torchjd else methods.make(self.name, **self.hp)
        for m in (self.method, getattr(self.method, "method", None)):  # the method, and pi's base
            if isinstance(m, methods.Aggregator):
                m.aggregate = _timed("aggregation", type(m).aggregate.__get__(m))
        extra = [] if self.method is None else self.method.parameters()
        groups = [{"params": list(self.model.parameters())}] + ([{"params": extra}] if extra else [])
        self.opt = torch.optim.SGD(groups, lr=1e-3)
        self.agg = None
        if self.torchjd:
            import torchjd.aggregation as A

            kwargs = {"CAGrad": {"c": 0.4}, "FairGrad": {"alpha": 2.0}, "NashMTL": {"n_tasks": self.K}}.get(self.torchjd, {})
            self.agg = getattr(A, self.torchjd)(**kwargs)
        self.iteration = 0

    def step(self, x: torch.Tensor, y: torch.Tensor, timer: Timer) -> None:
        model = self.model

        def losses_of(outs: list[torch.Tensor]) -> list[torch.Tensor]:
            return [nn.functional.cross_entropy(o, y[:, k]) for k, o in enumerate(outs)]

        opt_step = self.opt.step
        self.opt.step = timer.wrap("optim.", opt_step)
        try:
            if self.torchjd is None:
                def forward() -> Forward:
                    z, outs = model(x)
                    return Forward(stack_losses(losses_of(outs)), z)

                ctx = StepContext(timer.wrap("forward", forward), self.shared, self.opt, self.specific,
                                  last_shared=model.last_shared_parameters(), model=model,
                                  progress={"epoch": 5, "epochs": 10, "iteration": self.iteration, "iterations": 100})
                self.method.step(ctx)
            else:
                from torchjd.autojac import jac_to_grad, mtl_backward

                with timer.part("forward"):
                    z, outs = model(x)
                    losses = losses_of(outs)
                self.opt.zero_grad(set_to_none=True)
                with timer.part("task grads"):
                    mtl_backward(losses, features=z, shared_params=self.shared)
                with timer.part("aggregation"):
                    jac_to_grad(self.shared, self.agg)
                self.opt.step()
        finally:
            self.opt.step = opt_step
        self.iteration += 1

def bench(K: int, names: list[str], rounds: int, warmup: int, batch: int, use_torchjd: bool,
          seed: int = 0) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """Median exclusive time (s) per part and total for every run label; failures by label."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (batch, K), generator=g)
    specs: list[dict[str, Any]] = []
    for n in names:
        label, hp = _configured(n, K)
        if n == "connection_strength":
            specs += [dict(label=f"{n} [phase 1]", name=n, hp={"phase1_probability": 1.0}, task_bn=True),
                      dict(label=f"{n} [phase 2]", name=n, hp={"phase1_probability": 0.0, "require_task_bn": True},
                           mid_training=True, task_bn=True),
                      dict(label="ls [task-BN]", name="ls", task_bn=True)]
        else:
            specs.append(dict(label=label, name=n, hp=hp))
        if use_torchjd and n in TORCHJD:
            specs.append(dict(label=f"{n} [torchjd]", name=n, torchjd=TORCHJD[n]))
    runs: dict[str, Run] = {}
    failed: dict[str, str] = {}
    for s in specs:
        try:
            runs[s["label"]] = Run(K=K, seed=seed, **s)
        except Exception as err:  # reported as n/a with the reason
            failed[s["label"]] = f"{type(err).__name__}: {str(err).splitlines()[0][:90]}"
    times: dict[str, list[dict[str, float]]] = defaultdict(list)
    order = list(runs)
    with _instrumented():
        _rounds(runs, order, failed, times, x, y, warmup, rounds, seed)
    med = {label: {p: statistics.median(t[p] for t in ts) for p in (*PARTS, "total")}
           for label, ts in times.items() if label not in failed}
    return med, failed


def _rounds(runs, order, failed, times, x, y, warmup, rounds, seed) -> None:
    for r in range(warmup + rounds):
        random.Random(seed * 1000 + r).shuffle(order)
        for label in order:
            if label in failed:
                continue
            timer = Timer()
            gc.collect()
            gc.disable()  # no collector pauses inside a timed step
            _CURRENT.append(timer)
            t0 = time.perf_counter()
            try:
                with timer.part("other"):
                    runs[label].step(x, y, timer)
            except Exception as err:
                failed[label] = f"{type(err).__name__}: {str(err).splitlines()[0][:90]}"
                continue
            finally:
                _CURRENT.pop()
                gc.enable()
            total = time.perf_counter() - t0
            if r >= warmup:
                t = {p: timer.t.get(p, 0.0) for p in PARTS}
                t["total"] = total
                times[label].append(t)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, nargs="+", default=[2, 4, 11, 40])
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds (median over them)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps of every run first")
    ap.add_argument("--methods", nargs="+", default=None)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--no-torchjd", action="store_true")
    args = ap.parse_args(argv)
    names = args.methods or methods.available()
    unknown = [n for n in names if n not in methods.available()]
    if unknown:
        ap.error(f"unknown methods {unknown}; available: {', '.join(methods.available())}")
    if "ls" not in names:
        names = ["ls", *names]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"{args.warmup} warm-up + {args.rounds} timed rounds, steady state (one model per method)")
    for K in args.tasks:
        med, failed = bench(K, names, args.rounds, args.warmup, args.batch, not args.no_torchjd)
        base = med["ls"]["total"]
        print(f"\nK = {K}  (ls step: {base * 1e3:.1f} ms; median ms per part; ratio = total / ls total)")
        print(f"{'method':<30}" + "".join(f"{p:>12}" for p in (*PARTS, "total")) + f"{'ratio':>8}")
        for label in sorted(set(med) | set(failed)):
            if label in failed:
                print(f"{label:<30} n/a ({failed[label]})")
                continue
            m = med[label]
            ref = med["ls [task-BN]"]["total"] if label.startswith("connection_strength") and "ls [task-BN]" in med else base
            print(f"{label:<30}" + "".join(f"{m[p] * 1e3:>12.1f}" for p in (*PARTS, "total"))
                  + f"{m['total'] / ref:>8.2f}")


if __name__ == "__main__":
    main()
