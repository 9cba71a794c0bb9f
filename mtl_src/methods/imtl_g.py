"""IMTL-G: impartial multi-task learning, gradient balance (Liu et al., ICLR 2021)."""

from __future__ import annotations

import torch
from torch import Tensor

from . import register
from .base import GramianWeighting

# |sum_i alpha_i| below this fraction of sum_i |alpha_i| (before normalisation) counts as zero
_VANISHING_SUM = 1e-12


def imtl_g_weights(M: Tensor) -> Tensor:
    r"""IMTL-G weights (sum 1) from the Gramian M = G G^T; zero rows get weight 0.

    With unit gradients u_i = g_i / ||g_i|| and C = U U^T (the cosine matrix), the direction
    d = U^T beta with C beta = 1 has the same projection <d, u_i> on every task; beta is the
    minimum-norm least-squares solution (eigen-decomposition of C, eigenvalues below
    lambda_max * K * eps(dtype) dropped as for Aligned-MTL), so rank-deficient C is handled and the
    direction is exact whenever the equal-projection direction exists. In terms of G,
    alpha_i = beta_i / ||g_i||, normalised to sum 1; if that sum vanishes (relative
    ``_VANISHING_SUM``) the weights are 0 (torchjd does the same with an absolute threshold).
    """
    K = M.shape[0]
    M64 = M.double()
    diag = torch.diagonal(M64)
    keep = diag > 0
    alpha = torch.zeros(K, dtype=torch.float64)
    if not bool(keep.any()):
        return alpha
    n = diag[keep].sqrt()
    C = M64[keep][:, keep] / torch.outer(n, n)
    C = ((C + C.T) / 2).clamp(-1.0, 1.0)
    C.fill_diagonal_(1.0)
    lam, V = torch.linalg.eigh(C)
    tol = float(lam.max()) * C.shape[0] * torch.finfo(M.dtype).eps
    inv = torch.where(lam > tol, 1.0 / lam.clamp_min(tol), torch.zeros_like(lam))
    beta = V @ (inv * (V.T @ torch.ones(C.shape[0], dtype=torch.float64)))
    a = beta / n
    total = float(a.sum())
    if abs(total) <= _VANISHING_SUM * float(a.abs().sum()):
        return alpha
    alpha[keep] = a / total
    return alpha


@register("imtl_g")
class IMTLG(GramianWeighting):
    r"""IMTL-G (Liu et al. 2021, Sec. 3.2, Eq. 6-8 and Alg. 1): :math:`d = K\,G^\top\alpha` with
    :math:`\mathbf 1^\top\alpha = 1` and equal projections of d on every unit gradient,
    :math:`d^\top u_1 = d^\top u_i` (:math:`u_i = g_i/\|g_i\|`). The paper's closed form, with
    :math:`D^\top = [g_1 - g_2, \dots, g_1 - g_K]` and :math:`U^\top = [u_1 - u_2, \dots, u_1 - u_K]`,

    .. math:: \alpha_{2:K} = g_1^\top U\,(D^\top U)^{-1},\qquad \alpha_1 = 1 - \textstyle\sum_{i\ge2}\alpha_i,

    is computed here from the Gramian only: :math:`\alpha \propto \mathrm{diag}(\|g_i\|)^{-1} C^{+}\mathbf 1`
    (:func:`imtl_g_weights`; identical when G has full row rank, and defined for rank-deficient G and
    zero rows, like torchjd's generalisation :math:`\alpha \propto M^{+}\sqrt{\mathrm{diag}(M)}`).

    The paper's weights sum to 1 (scale of the mean loss); we multiply by K (weights sum to K), so
    ``imtl_g`` = K x torchjd's ``IMTLG``. IMTL-G is invariant to rescaling a task's loss in its
    direction but not in its size: d has the scale of the *smallest* gradients. When the weights'
    normalising sum vanishes d = 0; when it is negative the common projection <d, u_i> is negative
    (every task's loss increases to first order) - a property of the method, not of this solver.

    Task-specific parameters: head k receives :math:`K\alpha_k \nabla L_k` (the authors' code
    back-propagates :math:`\sum_k \alpha_k L_k`), see :meth:`head_weights`.
    """

    def head_weights(self) -> Tensor | None:
        return self.last_weights

    def weights(self, M: Tensor) -> Tensor:
        return M.shape[0] * imtl_g_weights(M)
