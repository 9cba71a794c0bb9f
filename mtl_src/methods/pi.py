"""PI-*: PIVRG's performance-informed weights added to another method (PIVRG Sec. 4.4, Table 5)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from ..autodiff import scale_losses
from . import make, register
from .base import Aggregator, Feedback, Forward, Method, StepContext, StepResult
from .pivrg import check_performance_hp, performance_weights

_NOT_WRAPPABLE = ("pi", "pivrg")


@register("pi")
class PerformanceInformed(Method):
    r"""``pi(base)``: the base method run on the performance-weighted losses
    :math:`\mathcal L' = \omega \odot \mathcal L` (PIVRG Sec. 4.4), with
    :math:`\omega = K\,\mathrm{softmax}(s/\tau)` from the per-task performance drops s of each epoch's
    :class:`~mtl_src.methods.Feedback` and the temperature rule of Prop. 1
    (:func:`~mtl_src.methods.pivrg.performance_weights`; omega = 1 before the first feedback).

    How omega enters, generically over the :class:`Method` interface: the wrapper hands the base a
    ``forward`` that returns :math:`\omega\odot\mathcal L`. For a loss weighting (LS, RLW, DWA, UW, ...)
    that is exactly the paper's recipe; for an :class:`Aggregator` it scales the rows of G (and of G_Z)
    by omega; a strategy that owns its steps sees the scaled losses in every forward. The paper adds that
    gradient methods need a method-specific integration, and gives Nash-MTL's: replace the equal weights
    of the log-utilities by omega (row scaling would do nothing there - the Nash direction is invariant
    to task scales). A base that defines ``set_performance_weights(omega)`` integrates omega itself
    (``nash_mtl``: :math:`\alpha_i (GG^\top\alpha)_i = \omega_i`) and gets the unscaled losses.
    ``observe`` is forwarded to the base; ``parameters``/``reset`` too. The step reports the raw losses.

    Hyperparameters: ``base`` (a registered method name; not ``pi`` or ``pivrg``, which already use
    omega), ``bound`` = 2, ``tau_min`` = 10 (PIVRG's NYUv2 settings, the benchmark of Table 5) and
    ``base_kwargs`` (the base's hyperparameters; its defaults otherwise).
    """

    def __init__(self, base: str = "ls", bound: float = 2.0, tau_min: float = 10.0,
                 base_kwargs: dict[str, Any] | None = None):
        if base in _NOT_WRAPPABLE:
            raise ValueError(f"pi: base {base!r} cannot be wrapped (it is already performance-informed)")
        check_performance_hp("pi", bound, tau_min)
        if base_kwargs is not None and not isinstance(base_kwargs, dict):
            raise ValueError(f"pi: base_kwargs must be a dict of the base's hyperparameters, got {base_kwargs!r}")
        self.base = str(base)
        self.bound = float(bound)
        self.tau_min = float(tau_min)
        self.base_kwargs = dict(base_kwargs or {})
        self._method = make(self.base, **self.base_kwargs)
        self._omega: Tensor | None = None
        self._tau: float | None = None

    @property
    def method(self) -> Method:
        """The wrapped base method."""
        return self._method

    @property
    def omega(self) -> Tensor | None:
        """Current performance weights (None until the first feedback with drops: omega = 1)."""
        return self._omega

    def reset(self) -> None:
        self._omega = None
        self._tau = None
        self._method.reset()

    def parameters(self) -> list[Tensor]:
        return self._method.parameters()

    def observe(self, feedback: Feedback) -> None:
        if feedback.drops is not None:
            self._omega, self._tau = performance_weights(feedback.drops, self.bound, self.tau_min, self.name)
        self._method.observe(feedback)

    def _weights_for(self, K: int) -> Tensor:
        if self._omega is None:
            return torch.ones(K, dtype=torch.float64)
        if self._omega.numel() != K:
            raise ValueError(f"{self.name}: {self._omega.numel()} performance weights for {K} tasks")
        return self._omega

    def _integrates_itself(self) -> bool:
        return callable(getattr(self._method, "set_performance_weights", None))

    def step(self, ctx: StepContext) -> StepResult:
        raw: list[Tensor] = []
        own = self._integrates_itself()

        def forward() -> Forward:
            out = ctx.forward()
            omega = self._weights_for(out.losses.shape[0])
            if not raw:
                raw.append(out.losses.detach())
            if own:
                self._method.set_performance_weights(omega)
                return out
            return dataclasses.replace(out, losses=scale_losses(out.losses, omega))

        res = self._method.step(dataclasses.replace(ctx, forward=forward))
        if raw:
            res.losses = raw[0]
        if self._omega is not None:
            res.info.update({f"omega_{i}": float(w) for i, w in enumerate(self._omega)})
        return res

    def aggregate(self, G: Tensor) -> Tensor:
        """For an :class:`Aggregator` base: its direction for the performance-weighted task gradients."""
        if not isinstance(self._method, Aggregator):
            raise TypeError(f"{self.name}: base {self.base!r} is not an Aggregator; use step()")
        omega = self._weights_for(G.shape[0])
        if self._integrates_itself():
            self._method.set_performance_weights(omega)
            return self._method.aggregate(G)
        return self._method.aggregate(omega.to(G).unsqueeze(1) * G)
