"""PCGrad: projecting conflicting gradients (Yu et al., NeurIPS 2020)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from . import register
from .base import GramianWeighting
from .fairgrad import _check_max_norm, clip_weights


@register("pcgrad")
class PCGrad(GramianWeighting):
    r"""Gradient surgery (Yu et al. 2020, Alg. 1): for each task i, in a random order of the others j,
    if :math:`\langle g_i^{PC}, g_j\rangle < 0` then
    :math:`g_i^{PC} \leftarrow g_i^{PC} - \frac{\langle g_i^{PC}, g_j\rangle}{\|g_j\|^2} g_j`;
    the update is :math:`d = \sum_i g_i^{PC}` (the sum, as in the paper and torchjd).

    Every :math:`g_i^{PC}` stays a combination of the rows of G, so we track its coefficients
    :math:`c_i` (G^T c_i = g_i^PC) using only the Gramian M: :math:`\langle g_i^{PC}, g_j\rangle = c_i^\top M_{:,j}`.
    Then alpha = sum_i c_i. Zero gradients are never projected on (they cannot conflict).

    ``seed``: seeds the random task orders (``None``: fresh entropy); :meth:`reset` restarts it.
    ``max_norm`` (default 0: off, as in the nash-mtl code whose numbers the tables report): clip the
    shared direction to this norm, the ``clip_grad_norm_(shared_parameters, max_norm)`` that the
    FairGrad/PIVRG code applies after every method's backward.
    """

    def __init__(self, seed: int | None = 0, max_norm: float = 0.0):
        self.seed = seed
        self.max_norm = _check_max_norm("pcgrad", max_norm)
        self.reset()

    def reset(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    def weights(self, M: Tensor) -> Tensor:
        A = M.double().cpu().numpy()
        K = A.shape[0]
        C = np.eye(K)
        diag = np.diag(A)
        for i in range(K):
            for j in self._rng.permutation(K):
                if j == i or diag[j] <= 0.0:
                    continue
                dot = C[i] @ A[:, j]
                if dot < 0.0:
                    C[i, j] -= dot / diag[j]
        return clip_weights(torch.as_tensor(C.sum(0), dtype=torch.float64), M, self.max_norm)
