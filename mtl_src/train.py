"""Trainers: the toy-problem trainer (full trajectories) and the benchmark trainer (tidy results).

Every trainer drives a method only through :meth:`~mtl_src.methods.Method.step`, so methods that own
several optimizer steps per batch need no special case here.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from . import methods as _methods
from .methods import Forward, Method, StepContext
from .problems import toy

__all__ = ["ToyRun", "train_toy", "toy_min_losses", "TOY_LOWER_BOUND", "resolve_device", "train", "RunResult", "RESULT_COLUMNS"]


def resolve_device(device: str | torch.device) -> torch.device:
    """A torch device, with one clear error when CUDA is asked for but absent."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {str(device)!r} requested but CUDA is not available here; use device='cpu'")
    return dev


@dataclass
class ToyRun:
    """Trajectories of one method on the toy problem from several starts."""

    method: str
    xs: np.ndarray  # (S, iterations + 1, 2)
    losses: np.ndarray  # (S, iterations + 1, 2)
    hyperparameters: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> np.ndarray:
        """End points (S, 2)."""
        return self.xs[:, -1]


def train_toy(
    method: str | Method,
    *,
    iterations: int = 35_000,
    lr: float = 1e-3,
    starts: torch.Tensor | np.ndarray | None = None,
    device: str = "cpu",
    record_every: int = 1,
    progress: bool = False,
    fast: bool = True,
    **hyperparameters: Any,
) -> ToyRun:
    """Run ``method`` on the two-task toy from each start with Adam(lr), recording every iterate.

    ``method`` is a registered name (``hyperparameters`` go to :func:`mtl_src.methods.make`) or a
    :class:`Method` instance. Each start is an independent run: x is the only (shared) parameter.

    Methods that need lower bounds of the losses (``min_losses`` of FAMO, SI, GradNorm) get the toy's
    :data:`TOY_LOWER_BOUND` (the FAMO authors' toy value, below the computed minima
    :func:`toy_min_losses`) unless given; so any registered name (or ``pi:<name>`` spec) runs.

    ``fast=True`` (default) runs aggregators on closed-form toy gradients with a numpy Adam identical
    to ``torch.optim.Adam`` (all starts at once, ~10x faster; tested equal to the generic path);
    ``fast=False``, and every method that owns its step, go through ``Method.step`` with autograd.
    """
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    if record_every < 1:
        raise ValueError(f"record_every must be >= 1, got {record_every}")
    if isinstance(method, str):
        hyperparameters = {**_toy_defaults(method, hyperparameters), **hyperparameters}
    m = _methods.make(method, **hyperparameters) if isinstance(method, str) else method
    dev = resolve_device(device)
    name = method if isinstance(method, str) else m.name
    if isinstance(m, _methods.Aggregator) and fast:
        xs, fs = _train_toy_aggregator(m, np.asarray(toy.START_POINTS if starts is None else starts, float), iterations, lr, record_every)
        return ToyRun(name, xs, fs, dict(hyperparameters))
    starts_t = toy.START_POINTS if starts is None else torch.as_tensor(starts)
    starts_t = starts_t.to(device=dev, dtype=torch.float64).reshape(-1, 2)
    n_rec = iterations // record_every + 1
    xs = np.empty((len(starts_t), n_rec, 2))
    fs = np.empty((len(starts_t), n_rec, 2))
    for s, x0 in enumerate(starts_t):
        m.reset()
        x = torch.nn.Parameter(x0.clone())
        extra = m.parameters()
        opt = torch.optim.Adam([{"params": [x]}] + ([{"params": extra}] if extra else []), lr=lr)

        def forward() -> Forward:
            # the representation Z is a copy of x (J = I): the UB variants equal the theta variants here
            z = x * 1.0
            return Forward(losses=toy.losses(z), representation=z)

        ctx = StepContext(forward=forward, shared=[x], optimizer=opt)
        with torch.no_grad():
            xs[s, 0] = x.cpu().numpy()
            fs[s, 0] = toy.losses(x).cpu().numpy()
        for it in tqdm(range(1, iterations + 1), disable=not progress, desc=f"{m.name} start {s}"):
            ctx.progress["iteration"] = it
            m.step(ctx)
            if it % record_every == 0:
                with torch.no_grad():
                    xs[s, it // record_every] = x.cpu().numpy()
                    fs[s, it // record_every] = toy.losses(x).cpu().numpy()
    return ToyRun(name, xs, fs, dict(hyperparameters))


#: Lower bound of both toy losses used by default for ``min_losses``: the FAMO authors' toy script sets
#: min_losses = (-21 scale, -21), i.e. (-21, -21) for the unscaled toy used here; :func:`toy_min_losses`
#: (tested) shows it is a strict lower bound.
TOY_LOWER_BOUND = -21.0


@functools.lru_cache(maxsize=1)
def toy_min_losses() -> tuple[float, float]:
    """The global minima of the two toy losses, computed (not typed in).

    Where x2 > 0 each loss is c1 (log(...) + 6) > log(5e-6) + 6 > -6.3; where x2 <= 0 it is
    c2 (quadratic - 20) >= -20. The minimum therefore lies in x2 < 0 (about -19.99, at x1 = +7 for f1
    and -7 for f2); it is found by L-BFGS-B from the best point of a grid on [-10, 10]^2.
    """
    from scipy.optimize import minimize

    g = np.linspace(-10.0, 10.0, 201)
    X = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    F, _ = toy.losses_and_jacobian_np(X)
    out = []
    for i in range(2):
        def fun(z: np.ndarray) -> tuple[float, np.ndarray]:
            f, J = toy.losses_and_jacobian_np(z[None])
            return float(f[0, i]), J[0, i]

        res = minimize(fun, X[np.argmin(F[:, i])], jac=True, method="L-BFGS-B",
                       options={"gtol": 1e-12, "ftol": 1e-15})
        out.append(min(float(res.fun), float(F[:, i].min())))
    return tuple(out)


def _toy_defaults(spec: str, given: dict[str, Any]) -> dict[str, Any]:
    """Hyperparameters the toy problem supplies when the caller does not: ``min_losses`` (FAMO, SI,
    GradNorm, and a PI wrapper around one of them) = :data:`TOY_LOWER_BOUND` for both tasks, since the
    toy losses are negative and those methods need a strict lower bound L_i > m_i."""
    name, first = _methods.parse_spec(spec)
    hp = {**first, **given}
    out: dict[str, Any] = {}
    if "min_losses" in _methods.hyperparameters(name) and "min_losses" not in hp:
        out["min_losses"] = [TOY_LOWER_BOUND, TOY_LOWER_BOUND]
    if name == "pi":
        base = hp.get("base", _methods.hyperparameters("pi")["base"])
        bkw = dict(hp.get("base_kwargs") or {})
        bname, _ = _methods.parse_spec(base)
        if "min_losses" in _methods.hyperparameters(bname) and "min_losses" not in bkw:
            bkw["min_losses"] = [TOY_LOWER_BOUND, TOY_LOWER_BOUND]
            out["base_kwargs"] = bkw
    return out


def _train_toy_aggregator(
    m: _methods.Aggregator, starts: np.ndarray, iterations: int, lr: float, record_every: int,
    before_step: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Aggregator on the toy: closed-form G at all starts, Adam (torch defaults) in numpy.

    ``before_step(it, f, aggs)`` (optional) runs before step ``it`` with the current losses f (S, 2)
    and the per-start method copies, e.g. to feed them per-epoch feedback."""
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    x = starts.reshape(-1, 2).astype(np.float64).copy()
    S = len(x)
    n_rec = iterations // record_every + 1
    xs = np.empty((S, n_rec, 2))
    fs = np.empty((S, n_rec, 2))
    m1 = np.zeros_like(x)
    m2 = np.zeros_like(x)
    d = np.empty_like(x)
    m.reset()
    aggs = [m] + [copy.deepcopy(m) for _ in range(S - 1)]  # one state per independent run
    f, G = toy.losses_and_jacobian_np(x)
    xs[:, 0], fs[:, 0] = x, f
    for it in range(1, iterations + 1):
        if before_step is not None:
            before_step(it, f, aggs)
        for s in range(S):
            d[s] = aggs[s].aggregate(torch.from_numpy(G[s])).numpy()
        m1 = beta1 * m1 + (1 - beta1) * d
        m2 = beta2 * m2 + (1 - beta2) * d * d
        step = lr / (1 - beta1**it)
        denom = np.sqrt(m2) / np.sqrt(1 - beta2**it) + eps
        x = x - step * m1 / denom
        f, G = toy.losses_and_jacobian_np(x)
        if it % record_every == 0:
            xs[:, it // record_every], fs[:, it // record_every] = x, f
    return xs, fs


# ------------------------------------------------------------------------------------------------
# The trainer for benchmarks
# ------------------------------------------------------------------------------------------------

RESULT_COLUMNS = ["benchmark", "method", "seed", "epoch", "split", "metric", "task", "value"]


@dataclass
class RunResult:
    """Tidy results of one run: one row per (evaluation, metric), plus losses and step timings.

    ``split`` is "train"/"val"/"test" for metrics, "train" for the mean training loss per task
    (metric ``loss``), and "timing" for the mean seconds per step of each phase (metric
    ``time_forward``, ``time_backward``, ``time_aggregation``, ``time_optimizer``, ``time_step``),
    and "diagnostics" for the epoch means of what the method reports per step (``StepResult.info``:
    task weights, number of task groups, Phase 1/2 share, ...).
    """

    rows: list[dict[str, Any]]
    hyperparameters: dict[str, Any] = field(default_factory=dict)

    def frame(self):
        import pandas as pd

        return pd.DataFrame(self.rows, columns=RESULT_COLUMNS)

    def to_csv(self, path) -> None:
        """Append the rows to ``path`` (written atomically: temp file + rename)."""
        import os
        import tempfile

        import pandas as pd

        path = os.fspath(path)
        df = self.frame()
        if os.path.exists(path):
            df = pd.concat([pd.read_csv(path), df], ignore_index=True)
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, suffix=".csv.tmp")
        os.close(fd)
        df.to_csv(tmp, index=False)
        os.replace(tmp, path)


def _seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    import random

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import random

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class _Timer:
    def __init__(self) -> None:
        self.total: dict[str, float] = {}

    def wrap(self, key: str, fn):
        import time

        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.total[key] = self.total.get(key, 0.0) + time.perf_counter() - t0

        return timed


def _make_optimizer(name: str, groups: list[dict], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'adam' or 'sgd', got {name!r}")


def _make_schedule(spec: str | None, opt: torch.optim.Optimizer, epochs: int):
    """None | "step:<every>:<gamma>" (StepLR per epoch) | "cosine" (over all epochs)."""
    if spec is None or spec == "none":
        return None
    if spec == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1))
    if spec.startswith("step:"):
        try:
            _, every, gamma = spec.split(":")
            return torch.optim.lr_scheduler.StepLR(opt, step_size=int(every), gamma=float(gamma))
        except ValueError:
            pass
    raise ValueError(f"lr_schedule must be None, 'cosine' or 'step:<every>:<gamma>', got {spec!r}")


def train(
    benchmark,
    method: str,
    *,
    epochs: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    lr_schedule: str | None = None,
    seed: int = 0,
    device: str = "cpu",
    eval_every: int = 1,
    eval_splits: tuple[str, ...] = ("test",),
    checkpoint: str | None = None,
    resume: bool = False,
    interrupt_after: int | None = None,
    progress: bool = False,
    **hyperparameters: Any,
) -> RunResult:
    """Train ``method`` on ``benchmark`` and return tidy results.

    Every ``eval_every`` epochs (and after the last) each split of ``eval_splits`` is evaluated.
    Methods that use per-epoch feedback (DWA, DTP, PIVRG, PI-*) get :class:`~mtl_src.methods.Feedback`
    with the epoch's mean training losses and, when the benchmark has a single-task baseline,
    per-task performance drops measured on "val" if the benchmark has it, else on "train".

    Checkpoints (``checkpoint=path``) are written atomically after every epoch with the model,
    optimizer, schedule, method state, RNG states and the rows so far; ``resume=True`` continues
    from one and gives the same final numbers as an uninterrupted run (tested).
    ``interrupt_after=e`` stops after epoch e as an interruption would (for tests and time slices).
    """
    import os

    from .benchmarks.base import Benchmark
    from .methods import Feedback, Method

    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    if batch_size < 1 or eval_every < 1:
        raise ValueError("batch_size and eval_every must be >= 1")
    dev = resolve_device(device)
    data = benchmark.datasets()
    unknown = [s for s in eval_splits if s not in data]
    if unknown:
        raise ValueError(f"benchmark {benchmark.name!r} has no split(s) {unknown}; it has {sorted(data)}")
    _seed_everything(seed)
    model = benchmark.build_model().to(dev)
    m = _methods.make(method, **hyperparameters)
    m.reset()
    extra = m.parameters()
    groups = [{"params": list(model.parameters())}] + ([{"params": extra}] if extra else [])
    opt = _make_optimizer(optimizer, groups, lr, weight_decay)
    sched = _make_schedule(lr_schedule, opt, epochs)
    rows: list[dict[str, Any]] = []
    start = 0
    if resume and checkpoint and os.path.exists(checkpoint):
        ck = torch.load(checkpoint, map_location=dev, weights_only=False)
        if ck["config"] != {"benchmark": benchmark.name, "method": method, "seed": seed, "epochs": epochs}:
            raise ValueError(f"checkpoint {checkpoint} belongs to another run: {ck['config']}")
        model.load_state_dict(ck["model"])
        m = ck["method"]
        if extra:  # the restored method owns new tensors: point the optimizer's group at them *before*
            opt.param_groups[1]["params"] = m.parameters()  # loading its state, which is keyed by position
        opt.load_state_dict(ck["optimizer"])
        if sched is not None:
            sched.load_state_dict(ck["schedule"])
        rows, start = ck["rows"], ck["epoch"]
        _set_rng_state(ck["rng"])
    wants_feedback = type(m).observe is not Method.observe
    fb_split = "val" if "val" in data else "train"
    collate = getattr(benchmark, "collate", None)  # e.g. graphs (QM9) batch with their own collate
    loaders = {s: DataLoader(data[s], batch_size=batch_size, shuffle=False, collate_fn=collate)
               for s in set(eval_splits) | {fb_split}}
    base = {"benchmark": benchmark.name, "method": method, "seed": seed}

    def record(epoch: int, split: str, values: dict[str, float]) -> None:
        task_of = {mt.name: mt.task for mt in benchmark.metrics}
        for k, v in values.items():
            rows.append({**base, "epoch": epoch, "split": split, "metric": k, "task": task_of.get(k, ""), "value": float(v)})

    shared, specific = model.shared_parameters(), model.task_parameters()
    import time as _time

    clock: dict[str, Any] = {}  # optimizer time via step hooks (wrapping opt.step would upset schedulers)
    opt.register_step_pre_hook(lambda *_: clock.__setitem__("t0", _time.perf_counter()))
    opt.register_step_post_hook(
        lambda *_: clock["timer"].total.__setitem__(
            "optimizer", clock["timer"].total.get("optimizer", 0.0) + _time.perf_counter() - clock["t0"]))
    for epoch in range(start, epochs):
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)  # resumable shuffle
        train_loader = DataLoader(data["train"], batch_size=batch_size, shuffle=True, generator=g, collate_fn=collate)
        model.train()
        timer = clock["timer"] = _Timer()
        loss_sum = torch.zeros(benchmark.K, dtype=torch.float64)
        info_sum: dict[str, float] = {}
        n_steps = 0
        for batch in tqdm(train_loader, disable=not progress, desc=f"{method} epoch {epoch + 1}/{epochs}"):
            batch = benchmark.to(batch, dev)

            def forward(batch=batch) -> Forward:
                z, outs = model(benchmark.inputs(batch))
                return Forward(benchmark.losses(outs, batch), z)

            ctx = StepContext(
                timer.wrap("forward", forward), shared, opt, specific,
                last_shared=model.last_shared_parameters(), model=model,
                progress={"epoch": epoch, "epochs": epochs, "iteration": n_steps,
                          "iterations": len(train_loader)},
            )
            if isinstance(m, _methods.Aggregator):
                m.aggregate = timer.wrap("aggregation", type(m).aggregate.__get__(m))
            step = timer.wrap("step", m.step)
            res = step(ctx)
            loss_sum += res.losses.double().cpu()
            for k, v in res.info.items():  # method diagnostics (weights, groups, phase), epoch means
                info_sum[k] = info_sum.get(k, 0.0) + float(v)
            n_steps += 1
        m.__dict__.pop("aggregate", None)  # drop the timing wrapper (instance attribute) before pickling
        if sched is not None:
            sched.step()
        mean_loss = loss_sum / max(n_steps, 1)
        record(epoch + 1, "train", {f"loss_{t}": float(l) for t, l in zip(benchmark.tasks, mean_loss)})
        if info_sum:
            record(epoch + 1, "diagnostics", {k: v / max(n_steps, 1) for k, v in info_sum.items()})
        t = timer.total
        t["backward"] = t.get("step", 0.0) - sum(t.get(k, 0.0) for k in ("forward", "aggregation", "optimizer"))
        for k in ("forward", "backward", "aggregation", "optimizer", "step"):
            rows.append({**base, "epoch": epoch + 1, "split": "timing", "metric": f"time_{k}", "task": "",
                         "value": t.get(k, 0.0) / max(n_steps, 1)})
        evaluated: dict[str, dict[str, float]] = {}
        if (epoch + 1) % eval_every == 0 or epoch + 1 == epochs:
            for s in eval_splits:
                evaluated[s] = benchmark.evaluate(model, loaders[s], dev)
                record(epoch + 1, s, evaluated[s])
        if wants_feedback:
            drops = kpis = None
            has_kpis = type(benchmark).kpis is not Benchmark.kpis  # the benchmark defines KPIs (DTP)
            if benchmark.stl_baseline is not None or has_kpis:
                vals = evaluated.get(fb_split) or benchmark.evaluate(model, loaders[fb_split], dev)
                kpis = benchmark.kpis(vals)
                if benchmark.stl_baseline is not None:
                    drops = torch.as_tensor(_task_drops(benchmark, vals))
            m.observe(Feedback(epoch=epoch, epochs=epochs, train_losses=mean_loss.float(), drops=drops,
                               kpis=kpis, source=fb_split))
        if checkpoint:
            _save_checkpoint(checkpoint, {
                "config": {"benchmark": benchmark.name, "method": method, "seed": seed, "epochs": epochs},
                "model": model.state_dict(), "optimizer": opt.state_dict(),
                "schedule": None if sched is None else sched.state_dict(), "method": m,
                "rows": rows, "epoch": epoch + 1, "rng": _rng_state(),
            })
        if interrupt_after is not None and epoch + 1 >= interrupt_after and epoch + 1 < epochs:
            break
    return RunResult(rows, {"method": method, "epochs": epochs, "lr": lr, "batch_size": batch_size,
                            "seed": seed, **hyperparameters})


def _task_drops(benchmark, values: dict[str, float]) -> list[float]:
    """Per-task mean relative drop (%) vs the single-task baseline, positive = worse (PIVRG's s_i)."""
    from .metrics import per_task_drops

    names = [mt.name for mt in benchmark.metrics]
    drops = per_task_drops({n: values[n] for n in names}, {n: benchmark.stl_baseline[n] for n in names},
                           {mt.name: mt.higher_is_better for mt in benchmark.metrics},
                           {mt.name: mt.task for mt in benchmark.metrics}, task_order=benchmark.tasks)
    return [float(v) for v in drops]


def _save_checkpoint(path: str, state: dict[str, Any]) -> None:
    import os
    import tempfile

    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, suffix=".pt.tmp")
    os.close(fd)
    torch.save(state, tmp)
    os.replace(tmp, path)
