"""Gradient aggregators mgda_ub, graddrop, imtl_g, nash_mtl, moco, fairgrad: defining equations,
torchjd as oracle, hyperparameter validation, state, and solver reports."""

import copy
import math
import pickle
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from mtl_src import methods
from mtl_src.autodiff import task_gradients
from mtl_src.methods import Forward, StepContext
from mtl_src.methods.fairgrad import solve_fair_weights
from mtl_src.methods.graddrop import graddrop_direction
from mtl_src.methods.imtl_g import imtl_g_weights
from mtl_src.methods.mgda import min_norm_weights

from conftest import random_G

NEW = ["mgda_ub", "graddrop", "imtl_g", "nash_mtl", "moco", "fairgrad"]


def _cos(a, b):
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def _stationary_G(rng, K=4, P=6):
    """Rows whose convex combination with positive weights vanishes (Pareto stationary)."""
    G = random_G(rng, K - 1, P)
    lam = torch.tensor(rng.uniform(0.5, 2.0, K - 1))
    return torch.cat([G, -(lam @ G).unsqueeze(0)])


# ---------------------------------------------------------------- registry and hyperparameters
def test_registered_with_the_documented_defaults():
    assert set(NEW) <= set(methods.available())
    hp = methods.hyperparameters
    assert hp("mgda_ub")["normalization"] == "none"
    assert hp("graddrop")["leak"] == 0.0 and hp("graddrop")["seed"] == 0
    assert hp("nash_mtl")["max_norm"] == 1.0 and hp("nash_mtl")["update_weights_every"] == 1
    assert hp("fairgrad")["alpha"] == 2.0 and hp("fairgrad")["max_norm"] == 1.0
    assert (hp("moco")["beta"], hp("moco")["gamma"], hp("moco")["rho"]) == (0.99, 0.1, 0.0)
    assert methods.make("mgda_ub").space == "representation"
    assert all(methods.make(n).space == "shared" for n in NEW if n != "mgda_ub")


@pytest.mark.parametrize("name,hp,msg", [
    ("mgda_ub", {"normalization": "L2"}, "normalization must be one of"),
    ("graddrop", {"leak": 1.5}, "leak must be in"),
    ("graddrop", {"leak": [0.1, -0.1]}, "leak must be in"),
    ("nash_mtl", {"max_norm": -1}, "max_norm must be >= 0"),
    ("nash_mtl", {"update_weights_every": 0}, "update_weights_every must be >= 1"),
    ("nash_mtl", {"w": [1.0, 0.0]}, "must be > 0"),
    ("nash_mtl", {"tol": 0}, "tol must be a positive number"),
    ("fairgrad", {"alpha": -1}, "alpha must be a finite number >= 0"),
    ("fairgrad", {"max_iter": 0}, "max_iter must be >= 1"),
    ("moco", {"beta": 0}, r"beta \(tracking step\) must be in \(0, 1\]"),
    ("moco", {"gamma": -0.1}, "gamma .* must be > 0"),
    ("moco", {"rho": float("nan")}, "rho must be a finite number >= 0"),
])
def test_invalid_hyperparameters_raise(name, hp, msg):
    with pytest.raises(ValueError, match=msg):
        methods.make(name, **hp)


def test_per_task_hyperparameters_are_checked_against_K(rng):
    with pytest.raises(ValueError, match="leak has 2 entries but there are 3 tasks"):
        methods.make("graddrop", leak=[0.1, 0.2])(random_G(rng, 3, 4))
    with pytest.raises(ValueError, match="preference w has 2 entries but there are 3 tasks"):
        methods.make("nash_mtl", w=[1.0, 2.0])(random_G(rng, 3, 4))


# ---------------------------------------------------------------- torchjd oracle
@pytest.fixture
def A():
    return pytest.importorskip("torchjd.aggregation")


def test_mgda_ub_is_K_times_torchjd_mgda_on_the_same_matrix(rng, A):
    for K in (2, 3, 5, 8):
        for _ in range(15):
            GZ = random_G(rng, K, int(rng.integers(K, 30)))
            ours, ref = methods.make("mgda_ub")(GZ), A.MGDA(epsilon=1e-7, max_iters=2_000)(GZ)
            # torchjd's Frank-Wolfe is not certified: ours is the min-norm point, never longer
            assert float(ours.norm()) / K <= float(ref.norm()) * (1 + 1e-9)
            if K <= 5:  # where its 2000 iterations reach the optimum
                assert _cos(ours, ref) >= 0.999
                assert math.isclose(float(ours.norm() / ref.norm()), K, rel_tol=1e-2)


def test_imtl_g_is_K_times_torchjd_imtlg(rng, A):
    for K in (2, 3, 5, 8):
        for _ in range(15):
            G = random_G(rng, K, int(rng.integers(K, 30))) * torch.tensor(rng.uniform(0.1, 10, (K, 1)))
            ours, ref = methods.make("imtl_g")(G), A.IMTLG()(G)
            assert _cos(ours, ref) >= 0.999
            assert math.isclose(float(ours.norm() / ref.norm()), K, rel_tol=1e-6)


@pytest.mark.parametrize("leak", [None, [0.0, 0.3, 1.0]])
def test_graddrop_equals_torchjd_for_the_same_random_draw(rng, A, leak):
    """Same seed = same U (ours: a generator seeded with `seed`, torchjd: the global one)."""
    for seed in range(10):
        G = random_G(rng, 3, 50)
        torch.manual_seed(seed)
        ref = A.GradDrop(leak=None if leak is None else torch.tensor(leak, dtype=G.dtype))(G)
        ours = methods.make("graddrop", seed=seed, leak=0.0 if leak is None else leak)(G)
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


def test_fairgrad_is_K_times_torchjd_fairgrad_before_clipping(rng, A):
    compared = 0
    for alpha in (0.5, 1.0, 2.0, 5.0):
        for K in (2, 3, 5):
            for _ in range(8):
                G = random_G(rng, K, int(rng.integers(K + 2, 30)))
                M = (G @ G.T).numpy()
                ref_w = A.FairGrad(alpha=alpha).gramian_weighting(G @ G.T).numpy()
                if np.abs(M @ ref_w - ref_w ** (-1 / alpha)).max() > 1e-6 * (1 + np.abs(M @ ref_w).max()):
                    continue  # scipy's least_squares stopped early: nothing to compare with
                compared += 1
                ours, ref = methods.make("fairgrad", alpha=alpha, max_norm=0)(G), ref_w @ G.numpy()
                ref = torch.tensor(ref)
                assert _cos(ours, ref) >= 0.999
                assert math.isclose(float(ours.norm() / ref.norm()), K, rel_tol=1e-4)
    assert compared >= 80


def test_nash_mtl_is_torchjd_nash_mtl(rng, A):
    # torchjd's NashMTL solves with cvxpy + ECOS; the test extra (torchjd[cagrad,nash-mtl]) installs both,
    # so with torchjd present their absence is a broken environment: fail, never skip
    for mod in ("cvxpy", "ecos"):
        try:
            __import__(mod)
        except ImportError:
            pytest.fail(f"torchjd is installed but {mod!r} is not; install the test extra: pip install -e '.[test]'")
    compared = total = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # cvxpy: "problem is not DPP"
        for K in (2, 3, 5):
            for _ in range(10):
                G = random_G(rng, K, int(rng.integers(K + 2, 30))) * 10 ** rng.uniform(-2, 2)
                total += 1
                w_ref = A.NashMTL(n_tasks=K, max_norm=0.0).weighting(G).numpy()
                M = (G @ G.T).numpy()
                if np.abs(w_ref * (M @ w_ref) - 1).max() > 1e-3:
                    continue  # the CCP of the authors' code stopped at its start: no reference
                compared += 1
                for max_norm in (0.0, 1.0):
                    ours = methods.make("nash_mtl", max_norm=max_norm)(G)
                    ref = A.NashMTL(n_tasks=K, max_norm=max_norm)(G)
                    assert _cos(ours, ref) >= 0.999
                    assert math.isclose(float(ours.norm() / ref.norm()), 1.0, rel_tol=1e-3)
    assert compared >= 0.8 * total


# ---------------------------------------------------------------- Nash-MTL / FairGrad equations
@pytest.mark.parametrize("K", [1, 2, 3, 5, 10])
def test_nash_mtl_solves_the_bargaining_equation(rng, K):
    for _ in range(20):
        G = random_G(rng, K, K + int(rng.integers(1, 20))) * torch.tensor(10 ** rng.uniform(-3, 3, (K, 1)))
        m = methods.make("nash_mtl", max_norm=0)
        d = m(G)
        alpha = m.last_weights
        M = G @ G.T
        torch.testing.assert_close(alpha * (M @ alpha), torch.ones(K, dtype=G.dtype), rtol=1e-7, atol=0)
        assert math.isclose(float(d @ d), K, rel_tol=1e-7)  # ||d||^2 = sum_i alpha_i g_i^T d = K
        torch.testing.assert_close(G @ d, 1 / alpha, rtol=1e-7, atol=0)  # utilities g_i^T d = 1 / alpha_i


def test_nash_mtl_direction_ignores_task_scales_and_is_clipped_to_max_norm(rng):
    G = random_G(rng, 4, 12)
    scaled = G * torch.tensor([[1e-4], [1.0], [30.0], [1e5]])
    torch.testing.assert_close(methods.make("nash_mtl", max_norm=0)(scaled), methods.make("nash_mtl", max_norm=0)(G),
                               rtol=1e-7, atol=1e-9)
    d = methods.make("nash_mtl")(G)  # authors' default max_norm = 1: ||d|| = sqrt(K) > 1 is clipped
    assert math.isclose(float(d.norm()), 1.0, rel_tol=1e-9)
    torch.testing.assert_close(d, methods.make("nash_mtl", max_norm=0)(G) / 2.0)


def test_weighted_nash_mtl_solves_alpha_times_M_alpha_equals_w(rng):
    G = random_G(rng, 3, 9)
    w = [0.5, 1.0, 2.0]
    m = methods.make("nash_mtl", max_norm=0, w=w)
    m(G)
    a = m.last_weights
    torch.testing.assert_close(a * (G @ G.T @ a), torch.tensor(w, dtype=G.dtype), rtol=1e-7, atol=0)


def test_nash_mtl_reuses_weights_between_updates_and_reset_restarts(rng):
    Gs = [random_G(rng, 3, 8) for _ in range(4)]
    m = methods.make("nash_mtl", max_norm=0, update_weights_every=3)
    m(Gs[0])
    first = m.last_weights.clone()
    for G in Gs[1:3]:
        d = m(G)
        torch.testing.assert_close(m.last_weights, first)  # steps 2 and 3 re-use step 1's weights
        torch.testing.assert_close(d, first @ G)
    fresh = methods.make("nash_mtl", max_norm=0)
    m(Gs[3])  # step 4: a new solve (warm-started at the old weights: the same root)
    fresh(Gs[3])
    torch.testing.assert_close(m.last_weights, fresh.last_weights, rtol=1e-8, atol=0)
    m.reset()
    m(Gs[1])
    fresh = methods.make("nash_mtl", max_norm=0)
    fresh(Gs[1])
    torch.testing.assert_close(m.last_weights, fresh.last_weights)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, 5.0])
def test_fairgrad_residual_and_scale(rng, alpha):
    for K in (1, 2, 4, 8):
        G = random_G(rng, K, K + 10) * torch.tensor(10 ** rng.uniform(-2, 2, (K, 1)))
        m = methods.make("fairgrad", alpha=alpha, max_norm=0)
        d = m(G)
        x = m.last_weights / K  # d = K G^T x
        M = G @ G.T
        torch.testing.assert_close(M @ x, x ** (-1 / alpha), rtol=1e-7, atol=0)
        torch.testing.assert_close(d, K * (x @ G))
        assert m.last_solution.converged and m.last_solution.residual <= 1e-10


def test_fairgrad_special_cases(rng):
    G = random_G(rng, 3, 7)
    torch.testing.assert_close(methods.make("fairgrad", alpha=0.0, max_norm=0)(G), G.sum(0))  # LS
    # alpha = 1 is Nash-MTL (same x), times K
    torch.testing.assert_close(methods.make("fairgrad", alpha=1.0, max_norm=0)(G),
                               3 * methods.make("nash_mtl", max_norm=0)(G), rtol=1e-9, atol=1e-12)
    d = methods.make("fairgrad")(G * 1e3)  # default max_norm = 1 caps the update
    assert float(d.norm()) <= 1.0 + 1e-12


@pytest.mark.parametrize("name", ["nash_mtl", "fairgrad", "pivrg"])
def test_pareto_stationary_gives_zero_without_warning_and_zero_rows_are_ignored(rng, name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(10):
            d = methods.make(name)(_stationary_G(rng))
            assert float(d.norm()) == 0.0
        G = random_G(rng, 3, 8)
        with_zero = torch.cat([G[:1], torch.zeros(1, 8), G[1:]])
        m = methods.make(name, max_norm=0)
        torch.testing.assert_close(m(with_zero), methods.make(name, max_norm=0)(G) * (4 / 3 if name != "nash_mtl" else 1))
        assert float(m.last_weights[1]) == 0.0


def test_solver_failure_is_reported_not_swallowed(rng):
    G = random_G(rng, 6, 20) * torch.tensor(10 ** rng.uniform(-6, 6, (6, 1)))
    with pytest.warns(methods.SolverWarning, match="stopped after 1 iterations"):
        d = methods.make("fairgrad", alpha=5.0, max_iter=1)(G)
    assert bool(torch.isfinite(d).all())
    sol = solve_fair_weights((G @ G.T).numpy(), 5.0, max_iter=200)
    assert sol.converged and not sol.stationary


# ---------------------------------------------------------------- IMTL-G
@pytest.mark.parametrize("K", [2, 3, 5, 8])
def test_imtl_g_equal_projections_on_unit_gradients(rng, K):
    for _ in range(20):
        G = random_G(rng, K, K + int(rng.integers(1, 20))) * torch.tensor(10 ** rng.uniform(-3, 3, (K, 1)))
        m = methods.make("imtl_g")
        d = m(G)
        assert math.isclose(float(m.last_weights.sum()), K, rel_tol=1e-9)
        proj = (G / G.norm(dim=1, keepdim=True)) @ d
        torch.testing.assert_close(proj, proj[:1].expand(K), rtol=1e-6, atol=1e-12 * float(d.norm()))


def test_imtl_g_matches_the_papers_closed_form(rng):
    """alpha_{2:K} = g_1^T U (D^T U)^{-1}, alpha_1 = 1 - sum (D, U: differences to task 1)."""
    for K in (2, 3, 6):
        G = random_G(rng, K, 15) * torch.tensor(rng.uniform(0.1, 10, (K, 1)))
        Uv = G / G.norm(dim=1, keepdim=True)
        D, Ud = G[0] - G[1:], Uv[0] - Uv[1:]
        a_rest = G[0] @ Ud.T @ torch.linalg.inv(D @ Ud.T)
        alpha = torch.cat([1 - a_rest.sum().unsqueeze(0), a_rest])
        torch.testing.assert_close(imtl_g_weights(G @ G.T), alpha, rtol=1e-8, atol=1e-10)


def test_imtl_g_rank_deficient_and_zero_rows(rng):
    g = random_G(rng, 2, 6)
    # a duplicated task: the same directions as the two distinct tasks
    d = methods.make("imtl_g")(torch.cat([g, g[:1]]))
    proj = (g / g.norm(dim=1, keepdim=True)) @ d
    torch.testing.assert_close(proj[0], proj[1])
    # a zero row gets weight 0, the others are IMTL-G of the rest (times K = 3 instead of 2)
    m = methods.make("imtl_g")
    d0 = m(torch.cat([g, torch.zeros(1, 6)]))
    assert float(m.last_weights[2]) == 0.0
    torch.testing.assert_close(d0, 1.5 * methods.make("imtl_g")(g))
    assert methods.make("imtl_g")(torch.zeros(3, 6)).abs().max() == 0


# ---------------------------------------------------------------- MGDA-UB
def test_mgda_ub_normalizations(rng):
    G = random_G(rng, 4, 10) * torch.tensor([[0.1], [1.0], [5.0], [20.0]])
    M = (G @ G.T).numpy()
    n = np.sqrt(np.diag(M))
    L = np.array([0.5, 2.0, 1.0, 3.0])
    expected = {"l2": n, "loss": L, "loss+": L * n}
    for norm, gn in expected.items():
        m = methods.make("mgda_ub", normalization=norm)
        m.set_losses(torch.tensor(L))
        lam = min_norm_weights(M / np.outer(gn, gn))
        # the normalisation only chooses lambda; the weights multiply the raw gradients
        torch.testing.assert_close(m(G), 4 * torch.tensor(lam) @ G, rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="needs the task losses; call set_losses"):
        methods.make("mgda_ub", normalization="loss+")(G)
    with pytest.raises(ValueError, match="must be finite and > 0"):
        methods.make("mgda_ub", normalization="loss").set_losses(torch.tensor([1.0, 0.0, 1.0, 1.0]))


def _net(K=3, seed=0):
    torch.manual_seed(seed)
    enc = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    heads = nn.ModuleList([nn.Linear(3, 1) for _ in range(K)])
    x, y = torch.randn(8, 4), torch.randn(8, K)

    def forward():
        z = enc(x)
        losses = torch.stack([((h(z).squeeze(-1) - y[:, i]) ** 2).mean() for i, h in enumerate(heads)])
        return Forward(losses, representation=z)

    opt = torch.optim.SGD(list(enc.parameters()) + list(heads.parameters()), lr=0.0)
    return enc, heads, forward, StepContext(forward, list(enc.parameters()), opt, specific=list(heads.parameters()))


def _grads(ps):
    return torch.cat([p.grad.flatten() for p in ps])


@pytest.mark.parametrize("normalization", ["none", "loss+"])
def test_mgda_ub_step_backpropagates_the_representation_direction(normalization):
    enc, _, forward, ctx = _net()
    methods.make("mgda_ub", normalization=normalization).step(ctx)
    out = forward()
    GZ = task_gradients(out.losses, [out.representation], retain_graph=True)
    ref = methods.make("mgda_ub", normalization=normalization)
    ref.set_losses(out.losses)
    dZ = ref(GZ).view_as(out.representation)
    expected = torch.autograd.grad(out.representation, list(enc.parameters()), grad_outputs=dZ)
    torch.testing.assert_close(_grads(enc.parameters()), torch.cat([g.flatten() for g in expected]))


@pytest.mark.parametrize("name", ["graddrop", "imtl_g", "nash_mtl", "moco", "fairgrad", "pivrg"])
def test_shared_step_writes_the_aggregated_direction(name):
    enc, heads, forward, ctx = _net()
    m = methods.make(name)
    m.step(ctx)
    G = task_gradients(forward().losses, list(enc.parameters()))
    torch.testing.assert_close(_grads(enc.parameters()), methods.make(name)(G))
    out = forward()
    lam = m.head_weights()  # the authors' head weighting (tests/test_step.py checks which methods weight)
    total = out.losses.sum() if lam is None else (lam.to(out.losses) * out.losses).sum()
    ref = torch.autograd.grad(total, list(heads.parameters()))
    torch.testing.assert_close(_grads(heads.parameters()), torch.cat([g.flatten() for g in ref]))


# ---------------------------------------------------------------- GradDrop
def test_graddrop_mask_logic_by_hand():
    G = torch.tensor([[1.0, -2.0, 3.0, 0.0], [2.0, 1.0, -1.0, 0.0]], dtype=torch.float64)
    U = torch.tensor([0.5, 0.5, 0.9, 0.3], dtype=torch.float64)
    # purity P = (1, 1/3, 3/4, 1/2): keep + | keep - | keep - | nothing to keep
    torch.testing.assert_close(graddrop_direction(G, U), torch.tensor([3.0, -2.0, -1.0, 0.0], dtype=torch.float64))
    leak = torch.tensor([0.5, 0.5])
    torch.testing.assert_close(graddrop_direction(G, U, leak), torch.tensor([3.0, -1.5, 0.5, 0.0], dtype=torch.float64))
    torch.testing.assert_close(graddrop_direction(G, U, torch.ones(2)), G.sum(0))


def test_graddrop_properties(rng):
    G = random_G(rng, 3, 200)
    agree = G.abs()  # all tasks agree in sign everywhere: nothing is dropped
    torch.testing.assert_close(methods.make("graddrop")(agree), agree.sum(0))
    torch.testing.assert_close(methods.make("graddrop", leak=1.0)(G), G.sum(0))
    g = random_G(rng, 1, 9)
    torch.testing.assert_close(methods.make("graddrop")(g), g[0])
    # scale equivariance (no epsilon in the purity): tiny gradients keep their sign dropout
    torch.testing.assert_close(methods.make("graddrop", seed=3)(G * 1e-12), 1e-12 * methods.make("graddrop", seed=3)(G))
    # each coordinate keeps either the positive or the negative entries, never both
    d = methods.make("graddrop")(G)
    pos, neg = G.clamp(min=0).sum(0), G.clamp(max=0).sum(0)
    assert bool(((d - pos).abs() < 1e-12).logical_or((d - neg).abs() < 1e-12).all())


def test_graddrop_seed_reset_copy_and_pickle(rng):
    G = random_G(rng, 3, 100)
    m = methods.make("graddrop", seed=7)
    d1, d2 = m(G), m(G)
    assert not torch.equal(d1, d2)  # fresh draws each step
    twin = copy.deepcopy(m)
    restored = pickle.loads(pickle.dumps(m))
    d3 = m(G)
    torch.testing.assert_close(twin(G), d3)
    torch.testing.assert_close(restored(G), d3)
    m.reset()
    torch.testing.assert_close(m(G), d1)
    assert not torch.equal(methods.make("graddrop", seed=8)(G), d1)


# ---------------------------------------------------------------- MoCo
def test_moco_two_steps_by_hand():
    m = methods.make("moco", beta=0.5, gamma=0.1, rho=0.0)
    G1 = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    # Y1 = 0.5 G1; lambda1 = Pi((1/2, 1/2) - 0.1 Y1 Y1^T (1/2, 1/2)) = Pi(0.4875, 0.45) = (0.51875, 0.48125)
    torch.testing.assert_close(m(G1), torch.tensor([0.51875, 0.9625], dtype=torch.float64))
    np.testing.assert_allclose(m.state[1], [0.51875, 0.48125])
    G2 = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    # Y2 = 0.5 Y1 + 0.5 G2 = [[0.25, 0.5], [0.5, 0.5]]; lambda2 = (0.52337890625, 0.47662109375)
    torch.testing.assert_close(m(G2), torch.tensor([0.738310546875, 1.0], dtype=torch.float64))
    torch.testing.assert_close(m.state[0], torch.tensor([[0.25, 0.5], [0.5, 0.5]], dtype=torch.float64))
    assert m.state[2] == 2


def test_moco_decaying_steps_and_regularisation(rng):
    beta, bs, gamma, gs, rho = 0.8, 0.5, 0.05, 0.3, 0.2
    m = methods.make("moco", beta=beta, beta_sigma=bs, gamma=gamma, gamma_sigma=gs, rho=rho)
    K, P = 3, 5
    Y, lam = np.zeros((K, P)), np.full(K, 1 / K)
    for t in range(6):
        G = rng.standard_normal((K, P))
        Y = Y - beta / (t + 1) ** bs * (Y - G)
        v = lam - gamma / (t + 1) ** gs * (Y @ Y.T + rho * np.eye(K)) @ lam
        # projection onto the simplex by bisection on the shift (independent of the library's sort)
        lo, hi = v.min() - 1, v.max()
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if np.maximum(v - mid, 0).sum() > 1 else (lo, mid)
        lam = np.maximum(v - (lo + hi) / 2, 0)
        d = m(torch.tensor(G))
        np.testing.assert_allclose(d.numpy(), K * lam @ Y, rtol=1e-9, atol=1e-12)


def test_moco_state_reset_and_shape_check(rng):
    m = methods.make("moco")
    G = random_G(rng, 3, 4)
    first = m(G)
    assert not torch.allclose(m(G), first)  # stateful: Y and lambda moved
    m.reset()
    torch.testing.assert_close(m(G), first)
    with pytest.raises(ValueError, match=r"tracked gradients have shape \(3, 4\).*call reset\(\)"):
        m(random_G(rng, 3, 5))
    # extreme scales keep lambda on the simplex
    m = methods.make("moco")
    for _ in range(3):
        m(random_G(rng, 5, 4) * torch.tensor(10 ** rng.uniform(-8, 8, (5, 1))))
    lam = m.state[1]
    assert np.all(lam >= 0) and math.isclose(lam.sum(), 1.0, rel_tol=1e-12)


@pytest.mark.parametrize("name", ["cagrad", "pcgrad", "graddrop"])
def test_max_norm_clips_the_shared_direction_and_defaults_off(name):
    g = torch.Generator().manual_seed(3)
    G = torch.randn(4, 50, generator=g, dtype=torch.float64) * 10.0
    free = methods.make(name)(G)
    assert float(free.norm()) > 1.0  # the default (0) does not clip
    clipped = methods.make(name, max_norm=1.0)(G)
    assert float(clipped.norm()) == pytest.approx(1.0, rel=1e-9)
    torch.testing.assert_close(clipped, free / free.norm())  # same direction, same draws
    loose = methods.make(name, max_norm=1e6)(G)
    torch.testing.assert_close(loose, free)
    with pytest.raises(ValueError, match="max_norm must be >= 0"):
        methods.make(name, max_norm=-1.0)
