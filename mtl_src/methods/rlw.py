"""Random loss weighting (RLW; Lin et al., TMLR 2022, "Reasonable effectiveness of random weighting")."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from . import register
from .base import LossWeighting, StepContext


@register("rlw")
class RandomLossWeighting(LossWeighting):
    r"""Fresh random loss weights every step: :math:`\lambda = K\,\mathrm{softmax}(z)`,
    :math:`z \sim \mathcal N(0, I_K)`.

    RLW with its default (normal) distribution, as in LibMTL's implementation by the RLW authors
    (``dist='Normal'``: softmax of a standard normal sample). Lin et al. normalise the weights to sum to
    1 (the scale of the mean loss); we multiply by K so that they sum to K and E[lambda_i] = 1, the
    library's sum-of-losses convention.

    ``seed``: ``None`` (default) draws z from torch's global generator, so the trainer's seed makes a run
    reproducible and different seeds give different weight sequences; an int gives the method its own
    generator, re-seeded by :meth:`reset` (the same sequence in every run).

    Paper: Lin et al., "Reasonable effectiveness of random weighting" (TMLR 2022), the RLW update with
    normal sampling; PIVRG (Qin et al., CVPR 2025) App. C.1 restates it as the weighted sum
    :math:`\min_\theta \sum_i \lambda_i \ell_i(\theta)` with softmax-of-normal weights (unnumbered).
    The equation numbers of Lin et al. are not cited: the paper's text is not among this book's sources.
    """

    def __init__(self, seed: int | None = None):
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
                raise ValueError(f"rlw: seed must be None or a non-negative int, got {seed!r}")
        self.seed = seed
        self._gen: torch.Generator | None = None
        self.reset()

    def reset(self) -> None:
        self._gen = None if self.seed is None else torch.Generator().manual_seed(self.seed)

    def sample(self, K: int) -> Tensor:
        """One draw of lambda (K,), float64 (advances the generator)."""
        if K < 1:
            raise ValueError(f"rlw: K must be >= 1, got {K}")
        z = torch.randn(K, generator=self._gen, dtype=torch.float64)
        return K * torch.softmax(z, dim=0)

    def loss_weights(self, losses: Tensor, ctx: StepContext) -> Tensor:
        return self.sample(losses.shape[0])

    # torch.Generator does not pickle: checkpoints store its state instead
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self._gen is not None:
            state["_gen"] = self._gen.get_state()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        gen = state.get("_gen")
        if isinstance(gen, Tensor):
            g = torch.Generator()
            g.set_state(gen)
            state["_gen"] = g
        self.__dict__.update(state)
