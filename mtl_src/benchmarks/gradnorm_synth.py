"""The synthetic K-task regression of GradNorm (Chen et al., ICML 2018, Sec. 5.1).

Protocol: task i regresses f_i(x) = sigma_i * tanh((B + eps_i) x) (tanh element-wise), with inputs
x in R^250 and outputs in R^100. B (100 x 250) is shared by all tasks, eps_i (100 x 250) is
task-specific; the paper draws their entries i.i.d. from "N(0, 10)" and "N(0, 3.5)", which we read
as standard deviations 10 and 3.5, as the public re-implementations of the experiment do (GradNorm's
own code is not public). The scalars sigma_i set the output scale of each task, so the squared losses
differ by up to (max sigma / min sigma)^2: the imbalance GradNorm is built to fix. The model is the
paper's: a shared trunk of 4 fully-connected ReLU layers of 100 units and one affine head per task
(100 -> 100); the loss of each task is its mean squared error (mean over samples and the 100 outputs).

Data. Inputs are drawn uniformly from [-1, 1]^250 and scaled to unit norm (as the public
re-implementations do; the paper does not say). Targets may get additive Gaussian noise of standard
deviation ``noise * sigma_i`` (default 0: the paper's targets are noiseless). Everything is drawn from
one seeded generator and cached under ``<data_root>/gradnorm_synth/``; B, eps and sigma are stored
with the data (:meth:`GradNormSynth.arrays`) so that the targets can be recomputed.

sigma_i: explicit (``sigmas``), or by default log-spaced from 1 to ``sigma_max`` = 100
(sigma_i = sigma_max^(i / (K - 1))); for K = 2 this is the paper's (1, 100) pair, and for larger K
the scales span the same two orders of magnitude (four in the squared loss).

Metrics, for every task t (lower is better):
``loss_<t>`` the test MSE in the task's own units (what the trainer minimises) and
``rel_loss_<t>`` = loss_<t> / sigma_t^2, the MSE of the unit-scale function tanh((B + eps_t) x): scale
free, so tasks can be compared and averaged (predicting 0 gives about E[tanh^2] ~ 0.9; a perfect fit
gives ``noise^2``). KPIs for DTP: the fraction of the target energy explained,
clamp(1 - loss_t / mean(y_t^2 on train), 0, 1).

What differs from the paper: the paper samples fresh inputs at every step; here each split is a fixed
sample (``n_train``, ``n_test``) so that epochs, evaluation and caching are well defined. The paper's
training settings are not published; the "paper" profile follows the public re-implementations
(Adam, lr 1e-4, batch 200) with a large training sample (see :meth:`GradNormSynth.training`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ..autodiff import stack_losses
from ..data import cached_arrays, config_key, data_root
from . import register
from .base import Benchmark, Metric, MTLModel

__all__ = ["GradNormSynth", "default_sigmas", "targets"]

D_IN, D_OUT, HIDDEN, DEPTH = 250, 100, 100, 4


def default_sigmas(K: int, sigma_max: float = 100.0) -> np.ndarray:
    """sigma_i = sigma_max^(i / (K - 1)), i = 0..K-1: log-spaced from 1 to sigma_max ((1.,) for K = 1)."""
    if K == 1:
        return np.ones(1)
    return float(sigma_max) ** (np.arange(K) / (K - 1))


def targets(x: np.ndarray, B: np.ndarray, eps: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """f_i(x) = sigma_i tanh((B + eps_i) x) for all tasks: x (N, 250), B (100, 250), eps (K, 100, 250),
    sigma (K,) -> (N, K, 100)."""
    W = B[None] + eps  # (K, 100, 250)
    return sigma[None, :, None] * np.tanh(np.einsum("nd,kod->nko", x, W))


@register("gradnorm_synth")
class GradNormSynth(Benchmark):
    """K regression tasks sigma_i tanh((B + eps_i) x) with very different output scales."""

    _DEFAULTS = {"fast": {"n_train": 1000, "n_test": 500}, "paper": {"n_train": 20000, "n_test": 5000}}

    def __init__(
        self,
        profile: str = "fast",
        data_root: str | None = None,
        seed: int = 0,
        K: int = 10,
        sigmas: Sequence[float] | None = None,
        sigma_max: float = 100.0,
        n_train: int | None = None,
        n_test: int | None = None,
        noise: float = 0.0,
        B_std: float = 10.0,
        eps_std: float = 3.5,
    ):
        """``K`` tasks; ``sigmas`` (K positive floats) or None for :func:`default_sigmas` up to
        ``sigma_max``; ``n_train``/``n_test`` samples (None: the profile's default); ``noise``: target
        noise standard deviation relative to sigma_i; ``B_std``/``eps_std``: the paper's 10 and 3.5."""
        if profile not in self._DEFAULTS:
            raise ValueError(f"gradnorm_synth: unknown profile {profile!r}; use 'fast' or 'paper'")
        if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 1:
            raise ValueError(f"gradnorm_synth: K must be a positive int (the paper uses 2 and 10), got {K!r}")
        if sigmas is not None:
            sig = np.asarray(sigmas, dtype=np.float64).reshape(-1)
            if len(sig) != K or not np.isfinite(sig).all() or (sig <= 0).any():
                raise ValueError(f"gradnorm_synth: sigmas must be K={K} positive finite numbers, got {list(sigmas)}; "
                                 "pass sigmas=None for log-spaced scales from 1 to sigma_max")
        else:
            if not (np.isfinite(sigma_max) and sigma_max > 0):
                raise ValueError(f"gradnorm_synth: sigma_max must be positive, got {sigma_max!r} (the paper: 100)")
            sig = default_sigmas(int(K), sigma_max)
        defaults = self._DEFAULTS[profile]
        n_train = defaults["n_train"] if n_train is None else n_train
        n_test = defaults["n_test"] if n_test is None else n_test
        for key, n in (("n_train", n_train), ("n_test", n_test)):
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
                raise ValueError(f"gradnorm_synth: {key} must be a positive int (or None for the profile's default), got {n!r}")
        for key, v in (("noise", noise), ("B_std", B_std), ("eps_std", eps_std)):
            if not (np.isfinite(v) and v >= 0):
                raise ValueError(f"gradnorm_synth: {key} must be a finite number >= 0, got {v!r}")
        self.profile = profile
        self.data_root = data_root
        self.seed = int(seed)
        self.sigmas = sig
        self.n_train, self.n_test = int(n_train), int(n_test)
        self.noise, self.B_std, self.eps_std = float(noise), float(B_std), float(eps_std)
        self.tasks = [f"t{i}" for i in range(int(K))]
        self.metrics = ([Metric(f"loss_{t}", t, False) for t in self.tasks]
                        + [Metric(f"rel_loss_{t}", t, False) for t in self.tasks])
        self.stl_baseline = None
        self._arrays: dict[str, np.ndarray] | None = None
        self._datasets: dict[str, TensorDataset] | None = None

    # -------------------------------------------------------------------------------- data
    def config(self) -> dict[str, Any]:
        return {"name": "gradnorm_synth", "profile": self.profile, "seed": self.seed, "K": self.K,
                "sigmas": [float(s) for s in self.sigmas], "n_train": self.n_train, "n_test": self.n_test,
                "noise": self.noise, "B_std": self.B_std, "eps_std": self.eps_std, "d_in": D_IN, "d_out": D_OUT,
                "version": 1}

    def arrays(self) -> dict[str, np.ndarray]:
        """Cached arrays: ``B`` (100, 250), ``eps`` (K, 100, 250), ``sigma`` (K,), and per split s
        ``{s}_x`` (N, 250), ``{s}_y`` (N, K, 100) float32 (targets incl. noise)."""
        if self._arrays is None:
            path = data_root(self.data_root) / "gradnorm_synth" / f"{config_key(self.config())}.npz"
            self._arrays = cached_arrays(path, self._build)
        return self._arrays

    def _build(self) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, 2018])
        B = rng.normal(0.0, self.B_std, (D_OUT, D_IN))
        eps = rng.normal(0.0, self.eps_std, (self.K, D_OUT, D_IN))
        out: dict[str, np.ndarray] = {"B": B, "eps": eps, "sigma": self.sigmas.copy()}
        for s, n in (("train", self.n_train), ("test", self.n_test)):
            x = rng.uniform(-1.0, 1.0, (n, D_IN))
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            y = targets(x, B, eps, self.sigmas)
            if self.noise > 0:
                y += self.noise * self.sigmas[None, :, None] * rng.standard_normal(y.shape)
            out[f"{s}_x"] = x.astype(np.float32)
            out[f"{s}_y"] = y.astype(np.float32)
        return out

    def datasets(self) -> dict[str, TensorDataset]:
        """Splits of (x (250,) float32, y (K, 100) float32)."""
        if self._datasets is None:
            arr = self.arrays()
            self._datasets = {s: TensorDataset(torch.from_numpy(arr[f"{s}_x"]), torch.from_numpy(arr[f"{s}_y"]))
                              for s in ("train", "test")}
            self._energy = torch.from_numpy(arr["train_y"]).double().pow(2).mean(dim=(0, 2))
        return self._datasets

    # -------------------------------------------------------------------------------- model
    def build_model(self) -> MTLModel:
        layers: list[nn.Module] = []
        d = D_IN
        for _ in range(DEPTH):
            layers += [nn.Linear(d, HIDDEN), nn.ReLU()]
            d = HIDDEN
        return MTLModel(nn.Sequential(*layers), [nn.Linear(HIDDEN, D_OUT) for _ in self.tasks])

    def losses(self, outputs: list[torch.Tensor], batch: Any) -> torch.Tensor:
        y = batch[1]
        return stack_losses([((o - y[:, i]) ** 2).mean() for i, o in enumerate(outputs)])

    @torch.no_grad()
    def evaluate(self, model: MTLModel, loader: DataLoader, device: torch.device) -> dict[str, float]:
        was_training = model.training
        model.eval()
        sse = torch.zeros(self.K, dtype=torch.float64)
        n = 0
        try:
            for x, y in loader:
                _, outs = model(x.to(device))
                y = y.to(device)
                sse += torch.stack([((o - y[:, i]) ** 2).sum(dtype=torch.float64) for i, o in enumerate(outs)]).cpu()
                n += y.shape[0] * y.shape[2]
        finally:
            model.train(was_training)
        mse = sse / max(n, 1)
        rel = mse / torch.as_tensor(self.sigmas) ** 2
        return ({f"loss_{t}": float(v) for t, v in zip(self.tasks, mse)}
                | {f"rel_loss_{t}": float(v) for t, v in zip(self.tasks, rel)})

    def kpis(self, values: dict[str, float]) -> torch.Tensor:
        """clamp(1 - loss_t / mean(y_t^2 on train), 0, 1); NaN for a task whose loss is not in ``values``
        (the trainer probes ``kpis({})`` only to learn that KPIs are defined)."""
        self.datasets()
        loss = torch.tensor([values.get(f"loss_{t}", float("nan")) for t in self.tasks], dtype=torch.float64)
        return (1.0 - loss / self._energy).clamp(0.0, 1.0).float()

    def training(self) -> dict[str, Any]:
        """"paper": GradNorm does not publish its toy settings; the public re-implementations train with
        Adam, lr 1e-4, batch 200 on freshly drawn inputs. We keep those with 20,000 fixed training
        samples and 250 epochs (25,000 steps). "fast": Adam 1e-2, batch 50, 4 epochs of 1,000 samples: the book's profile: every method on two seeds must fit the CI budget (about a minute per chapter on 2 CPU cores), so it shows the pipeline and the table, not settled rankings."""
        if self.profile == "paper":
            return {"epochs": 250, "batch_size": 200, "lr": 1e-4, "optimizer": "adam", "weight_decay": 0.0,
                    "lr_schedule": None}
        return {"epochs": 4, "batch_size": 50, "lr": 1e-2, "optimizer": "adam", "weight_decay": 0.0,
                "lr_schedule": None}
