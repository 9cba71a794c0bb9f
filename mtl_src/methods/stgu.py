"""Selective Task Group Updates (STGU; Jeong & Yoon, ICLR 2025)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ..autodiff import weighted_sum
from . import register
from .base import Method, StepContext, StepResult, preference
from .connection_strength import release_unreached

Grouping = tuple[tuple[int, ...], ...]

GROUPINGS = ("affinity", "random", "heterogeneous", "single", "singletons")
ORDERS = ("forward", "backward", "random")


def symmetric_affinity(A: Tensor) -> Tensor:
    """The similarity the tasks are grouped by: each column j of the tracked affinity A (row = source,
    column = target) divided by task j's self-affinity A_jj, then symmetrised,
    :math:`S = (\\tilde A + \\tilde A^\\top)/2` with :math:`\\tilde A_{ij} = A_{ij}/A_{jj}` (as the authors'
    code prepares it for clustering). Columns whose self-affinity is not positive are left unscaled
    (dividing by a non-positive A_jj would flip or blow up their signs)."""
    A = A.double()
    d = torch.diagonal(A)
    scale = torch.where(d > 0, d, torch.ones_like(d))
    At = A / scale[None, :]
    return (At + At.T) / 2


def threshold_groups(S: Tensor, threshold: float = 0.0) -> Grouping:
    """Partition the tasks so that every pair in a group has similarity > ``threshold``:
    complete-linkage agglomeration on S (K x K, symmetric). Start from singletons; repeatedly merge the
    two groups whose *least* similar cross pair is the most similar, while that value is > threshold.
    So two tasks share a group only if their affinity is positive (Sec. 3.3: group tasks with positive
    proximal affinity, split them when it is not). Deterministic; ties go to the lowest indices.
    Groups are returned sorted by their smallest task."""
    S = torch.as_tensor(S).double().cpu().numpy()
    K = S.shape[0]
    if S.shape != (K, K):
        raise ValueError(f"threshold_groups: S must be K x K, got {S.shape}")
    if not np.isfinite(S).all():
        raise ValueError("threshold_groups: the affinity matrix contains NaN or inf")
    groups = [[k] for k in range(K)]
    while len(groups) > 1:
        best, pair = threshold, None
        for a in range(len(groups)):
            for b in range(a + 1, len(groups)):
                link = S[np.ix_(groups[a], groups[b])].min()
                if link > best:
                    best, pair = link, (a, b)
        if pair is None:
            break
        a, b = pair
        groups[a] = sorted(groups[a] + groups[b])
        del groups[b]
    return tuple(sorted(tuple(g) for g in groups))


@register("stgu")
class STGU(Method):
    r"""Selective Task Group Updates (Jeong & Yoon, ICLR 2025; Def. 2, Eq. 3-5, Alg. 1).

    Each batch, the tasks are partitioned into groups :math:`G_1..G_M` which are updated one after
    the other: for group :math:`G_m` a forward pass, one backward of :math:`\sum_{i\in G_m} w_i L_i`
    (Eq. 3), one optimizer step. So a batch costs M optimizer steps and M + 1 forward passes.

    **Proximal inter-task affinity** (Alg. 1 lines 4-9). Let :math:`L^{-}` be the losses of the
    forward pass just before :math:`G_m`'s step (the one :math:`G_m` backpropagates) and
    :math:`L^{+}` those of the forward pass just after it (the one the next group backpropagates; after
    the last group an extra forward without grad). Both are on the same batch and differ only by
    :math:`G_m`'s own step, which is what Def. 2 measures; pairing with the losses before an earlier
    group's step would credit :math:`G_m` with that group's effect. With
    :math:`b_j = 1 - L^{+}_j / L^{-}_j`, for every source :math:`i \in G_m` and every target j:

    - :math:`j \notin G_m` (Eq. 4): :math:`B_{i\to j} = b_j`;
    - :math:`j \in G_m` (Eq. 5): :math:`B_{i\to j} = b_j` if :math:`b_i b_j \ge 0`, else
      :math:`B_{i\to j} = -\max(|b_i|, |b_j|)` (a loss going up while the other goes down means
      negative transfer);

    and the tracked affinity is the EMA :math:`\tilde B_{i\to j} \leftarrow (1-\beta)\tilde B_{i\to j}
    + \beta B_{i\to j}` (Alg. 1 lines 7, 9), :math:`\tilde B = 0` initially (:attr:`affinity`, row =
    source, column = target). A target whose loss :math:`L^{-}_j` is not positive is skipped (the ratio
    of Eq. 4-5 assumes positive losses, as the authors' code does).

    **Grouping** (``grouping``):

    - ``"affinity"`` (the method): singletons for the first ``warmup`` batches (Alg. 1 initialises
      M = K), then before every batch :func:`threshold_groups` on :func:`symmetric_affinity` of
      :math:`\tilde B` with threshold 0: tasks share a group iff every pair in it has positive
      affinity (Sec. 3.3). The authors' code clusters the same similarity with scikit-learn's
      AffinityPropagation instead; we use the rule the paper states, which needs no extra dependency;
    - ``"heterogeneous"`` (Tab. D.5 ablation): the same rule on the negated similarity, i.e. tasks with
      *negative* affinity are grouped;
    - ``"random"`` (Tab. D.5): a random partition into ``n_groups`` non-empty groups, drawn once per run;
    - ``"single"``: all tasks in one group (M = 1, plain gradient descent; Tab. 5);
    - ``"singletons"``: every task alone (M = K; Tab. 5).

    **Order** (``order``, Tab. 5): ``"random"`` (Alg. 1 line 1: the group sequence is shuffled every
    batch; default), ``"forward"`` (groups by increasing smallest task index), ``"backward"`` (reverse).

    Defaults: ``beta = 0.001`` (Tab. C.1, NYUD-v2 / PASCAL; 1e-4 for Taskonomy in the authors'
    configs), ``warmup = 100`` iterations of singleton updates (authors' configs, ``prepos``).
    ``w``: loss weights (default 1, the sum of losses). ``seed`` seeds the orders and random groups.
    Unlike the authors' code we do not divide the measured affinities by the group size (Eq. 4-5 do
    not) and we do not run a single group twice per batch.

    Diagnostics: ``StepResult.info`` holds ``n_groups`` and ``group_of_t{k}``; :attr:`groups` (the
    grouping used for the last batch), :attr:`affinity`, :attr:`n_groups_history` (one entry per
    batch), :attr:`grouping_counts` (how often each partition was used) and :attr:`co_grouping`
    (K x K: how many batches tasks i and j shared a group).
    """

    def __init__(
        self,
        grouping: str = "affinity",
        beta: float = 0.001,
        order: str = "random",
        warmup: int = 100,
        n_groups: int = 2,
        w: Sequence[float] | None = None,
        seed: int | None = 0,
    ):
        if grouping not in GROUPINGS:
            raise ValueError(f"stgu: grouping must be one of {GROUPINGS}, got {grouping!r}")
        if order not in ORDERS:
            raise ValueError(f"stgu: order must be one of {ORDERS}, got {order!r}")
        if not 0.0 < float(beta) < 1.0:
            raise ValueError(f"stgu: beta must be in (0, 1), got {beta}")
        if int(warmup) < 0:
            raise ValueError(f"stgu: warmup must be >= 0, got {warmup}")
        if int(n_groups) < 1:
            raise ValueError(f"stgu: n_groups must be >= 1, got {n_groups}")
        self.grouping = grouping
        self.beta = float(beta)
        self.order = order
        self.warmup = int(warmup)
        self.n_groups = int(n_groups)
        self.w = None if w is None else list(map(float, w))
        self.seed = seed
        self.reset()

    def reset(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        self._A: Tensor | None = None
        self._fixed: Grouping | None = None
        self._t = 0
        self.last_groups: Grouping | None = None
        self.n_groups_history: list[int] = []
        self.grouping_counts: Counter = Counter()
        self._co: Tensor | None = None

    # ------------------------------------------------------------------ state
    @property
    def affinity(self) -> Tensor | None:
        """The tracked proximal inter-task affinity :math:`\\tilde B` (K x K, row = source, column =
        target), a copy; None before the first step."""
        return None if self._A is None else self._A.clone()

    @affinity.setter
    def affinity(self, A: Tensor) -> None:
        A = torch.as_tensor(A, dtype=torch.float64)
        if A.dim() != 2 or A.shape[0] != A.shape[1] or not bool(torch.isfinite(A).all()):
            raise ValueError(f"stgu: the affinity must be a finite K x K matrix, got shape {tuple(A.shape)}")
        self._A = A.clone()

    @property
    def groups(self) -> Grouping | None:
        """The grouping used for the last batch (tuples of task indices)."""
        return self.last_groups

    @property
    def co_grouping(self) -> Tensor | None:
        """K x K counts of the batches in which tasks i and j were in the same group."""
        return None if self._co is None else self._co.clone()

    def _init(self, K: int) -> None:
        if self._A is None:
            self._A = torch.zeros(K, K, dtype=torch.float64)
        elif self._A.shape != (K, K):
            raise ValueError(f"stgu: the affinity is {tuple(self._A.shape)} but there are {K} task losses")
        if self._co is None:
            self._co = torch.zeros(K, K, dtype=torch.long)

    # ------------------------------------------------------------------ grouping and order
    def next_groups(self, K: int) -> Grouping:
        """The grouping for the next batch (see the class docstring)."""
        if self.grouping == "single":
            return (tuple(range(K)),)
        if self.grouping == "singletons":
            return tuple((k,) for k in range(K))
        if self.grouping == "random":
            if self._fixed is None or sum(map(len, self._fixed)) != K:
                M = min(self.n_groups, K)
                labels = np.concatenate([np.arange(M), self._rng.integers(0, M, K - M)])
                labels = self._rng.permutation(labels)
                self._fixed = tuple(sorted(tuple(int(k) for k in np.flatnonzero(labels == m)) for m in range(M)))
            return self._fixed
        if self._t < self.warmup or self._A is None:
            return tuple((k,) for k in range(K))
        S = symmetric_affinity(self._A)
        return threshold_groups(-S if self.grouping == "heterogeneous" else S)

    def ordered(self, groups: Grouping) -> list[tuple[int, ...]]:
        gs = sorted(groups, key=min)
        if self.order == "backward":
            return gs[::-1]
        if self.order == "random":
            return [gs[i] for i in self._rng.permutation(len(gs))]
        return gs

    # ------------------------------------------------------------------ affinity
    def update_affinity(self, group: Sequence[int], before: Tensor, after: Tensor) -> None:
        """Fold one group update into :math:`\\tilde B` (Eq. 4-5, Alg. 1 lines 6-9) from the losses just
        before (``before``) and just after (``after``) that group's optimizer step."""
        before, after = before.detach().double().cpu(), after.detach().double().cpu()
        K = before.shape[0]
        self._init(K)
        ok = (before > 0) & torch.isfinite(before) & torch.isfinite(after)
        b = torch.where(ok, 1.0 - after / torch.where(ok, before, torch.ones_like(before)), torch.zeros_like(before))
        members = set(int(i) for i in group)
        beta, A = self.beta, self._A
        for i in members:
            for j in range(K):
                if not bool(ok[j]):
                    continue
                if j in members and j != i:
                    if not bool(ok[i]):
                        continue
                    bi, bj = float(b[i]), float(b[j])
                    B = bj if bi * bj >= 0 else -max(abs(bi), abs(bj))
                else:
                    B = float(b[j])
                A[i, j] = (1 - beta) * A[i, j] + beta * B

    # ------------------------------------------------------------------ the step
    def step(self, ctx: StepContext) -> StepResult:
        out = ctx.forward()
        losses = out.losses
        K = losses.shape[0]
        _check_losses(losses)
        self._init(K)
        w = preference(self.w, K, self.name).to(losses)
        groups = self.next_groups(K)
        seq = self.ordered(groups)
        first = losses.detach()
        for m, group in enumerate(seq):
            ctx.optimizer.zero_grad(set_to_none=True)
            weighted_sum(losses, w, group).backward()  # the group's graphs only (autodiff.stack_losses)
            release_unreached(ctx.specific)  # only the group's own heads move (and the shared parameters)
            ctx.optimizer.step()
            before = losses.detach()
            if m + 1 < len(seq):
                losses = ctx.forward().losses
            else:
                with torch.no_grad():
                    losses = ctx.forward().losses
            _check_losses(losses)
            self.update_affinity(group, before, losses)
        self._t += 1
        self.last_groups = groups
        self.n_groups_history.append(len(groups))
        self.grouping_counts[groups] += 1
        for g in groups:
            ix = torch.tensor(g)
            self._co[ix[:, None], ix[None, :]] += 1
        info: dict[str, float] = {"n_groups": float(len(groups))}
        for m, g in enumerate(groups):
            info.update({f"group_of_t{k}": float(m) for k in g})
        group_of = {k: m for m, g in enumerate(groups) for k in g}
        for i in range(K):  # pair indicators: their epoch means are STGU Fig. 3's grouping frequencies
            for j in range(i + 1, K):
                info[f"together_t{i}_t{j}"] = float(group_of[i] == group_of[j])
        return StepResult(first, info)


def _check_losses(losses: Tensor) -> None:
    if not bool(torch.isfinite(losses).all()):
        raise ValueError(f"stgu: task losses {losses.detach().tolist()} contain NaN or inf")
