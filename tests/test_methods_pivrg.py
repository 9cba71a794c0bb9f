"""PIVRG (performance-informed weights + Eq. 8) and the PI- wrapper of PIVRG Sec. 4.4."""

import copy
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from mtl_src import methods
from mtl_src.autodiff import task_gradients
from mtl_src.methods import Feedback, Forward, StepContext
from mtl_src.methods.pivrg import performance_weights

from conftest import random_G


def _feedback(drops, epoch=0):
    return Feedback(epoch=epoch, epochs=10, drops=None if drops is None else torch.tensor(drops, dtype=torch.float64))


# ---------------------------------------------------------------- performance weights (Eq. 5, Prop. 1)
def test_tau_rule_and_softmax_by_hand():
    s = torch.tensor([5.0, -3.0, 40.0])
    omega, tau = performance_weights(s, bound=2.0, tau_min=10.0)
    assert tau == pytest.approx(43.0 / math.log(2.0))  # spread 43 / ln 2 = 62.0 > tau_min
    e = torch.exp(s.double() / tau)
    torch.testing.assert_close(omega, 3 * e / e.sum())
    assert float(omega.max() / omega.min()) == pytest.approx(2.0)  # the bound is reached exactly
    omega, tau = performance_weights([1.0, 2.0, 3.0], bound=2.0, tau_min=10.0)
    assert tau == 10.0  # small spread: tau_min
    torch.testing.assert_close(omega, 3 * torch.softmax(torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64), 0))
    torch.testing.assert_close(performance_weights([7.0, 7.0])[0], torch.ones(2, dtype=torch.float64))


@settings(max_examples=200, deadline=None)
@given(K=st.integers(1, 40), spread=st.floats(0.0, 1e6), center=st.floats(-1e3, 1e3),
       bound=st.floats(1.01, 10.0), tau_min=st.floats(1e-3, 100.0), seed=st.integers(0, 2**31 - 1))
def test_properties_1_to_3_whatever_the_spread(K, spread, center, bound, tau_min, seed):
    s = center + spread * np.random.default_rng(seed).uniform(-0.5, 0.5, K)
    omega, tau = performance_weights(s, bound=bound, tau_min=tau_min)
    assert bool(torch.isfinite(omega).all())
    assert math.isclose(float(omega.sum()), K, rel_tol=1e-12)  # Property 2
    order = np.argsort(s, kind="stable")
    assert bool((np.diff(omega.numpy()[order]) >= -1e-12).all())  # Property 1: omega increases with s
    assert float(omega.max() / omega.min()) <= bound * (1 + 1e-12)  # Prop. 1
    assert float(omega.min()) >= 1 / bound * (1 - 1e-12) and float(omega.max()) <= bound * (1 + 1e-12)
    assert tau >= tau_min and tau >= (s.max() - s.min()) / math.log(bound) * (1 - 1e-12)


def test_performance_weights_reject_bad_input():
    with pytest.raises(ValueError, match=r"drops of tasks \[1\] are NaN or inf"):
        performance_weights([1.0, float("nan"), 2.0])
    with pytest.raises(ValueError, match="bound .* must be a finite number > 1"):
        methods.make("pivrg", bound=1.0)
    with pytest.raises(ValueError, match="tau_min must be a finite number > 0"):
        methods.make("pivrg", tau_min=0.0)
    with pytest.raises(ValueError, match="bound .* must be a finite number > 1"):
        methods.make("pi", bound=0.5)


# ---------------------------------------------------------------- PIVRG (Eq. 8)
def test_defaults():
    hp = methods.hyperparameters("pivrg")
    assert (hp["bound"], hp["tau_min"], hp["max_norm"]) == (2.0, 10.0, 1.0)
    hp = methods.hyperparameters("pi")
    assert (hp["base"], hp["bound"], hp["tau_min"], hp["base_kwargs"]) == ("ls", 2.0, 10.0, None)


@pytest.mark.parametrize("K", [1, 2, 3, 6, 12])
def test_pivrg_solves_eq_8_with_the_performance_weights(rng, K):
    for _ in range(10):
        G = random_G(rng, K, K + int(rng.integers(2, 20))) * torch.tensor(10 ** rng.uniform(-3, 3, (K, 1)))
        m = methods.make("pivrg", max_norm=0)
        m.observe(_feedback(rng.uniform(-20, 60, K)))
        d = m(G)
        x = m.last_weights / K  # d = K G^T x
        omega = m.omega
        torch.testing.assert_close((G @ G.T @ x) ** 2, omega / x, rtol=1e-7, atol=0)
        torch.testing.assert_close(d, K * (x @ G))
        # the KKT form: utilities g_i^T d / K = sqrt(omega_i / x_i)
        torch.testing.assert_close(G @ d / K, (omega / x).sqrt(), rtol=1e-7, atol=0)


def test_pivrg_before_feedback_is_fairgrad_alpha_2_and_clips_by_default(rng):
    G = random_G(rng, 4, 10)
    torch.testing.assert_close(methods.make("pivrg", max_norm=0)(G), methods.make("fairgrad", alpha=2.0, max_norm=0)(G))
    m = methods.make("pivrg")
    m.observe(_feedback([30.0, -5.0, 0.0, 12.0]))
    d = m(G * 50)
    assert math.isclose(float(d.norm()), 1.0, rel_tol=1e-9)  # the authors' clip of the shared gradient


def test_pivrg_worse_tasks_get_larger_utility(rng):
    """omega_i > omega_j => task i's share of the improvement g_i^T d grows relative to omega = 1."""
    G = random_G(rng, 3, 12) + 2 * random_G(rng, 1, 12)  # a common descent direction exists
    base = methods.make("pivrg", max_norm=0)
    u0 = G @ base(G)
    m = methods.make("pivrg", max_norm=0, bound=3.0, tau_min=1.0)
    m.observe(_feedback([50.0, 0.0, 0.0]))
    u = G @ m(G)
    assert float(u[0] / u[1]) > float(u0[0] / u0[1]) and float(u[0] / u[2]) > float(u0[0] / u0[2])


def test_pivrg_feedback_handling(rng):
    m = methods.make("pivrg")
    assert m.omega is None
    m.observe(_feedback([10.0, 20.0]))
    omega = m.omega.clone()
    with pytest.warns(RuntimeWarning, match="no performance drops"):
        m.observe(_feedback(None, epoch=1))
    torch.testing.assert_close(m.omega, omega)  # unchanged
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m.observe(_feedback(None, epoch=2))  # warned once only
    with pytest.raises(ValueError, match="3 performance weights for 2 tasks"):
        m.observe(_feedback([1.0, 2.0, 3.0]))
        m(random_G(rng, 2, 5))
    m.reset()
    assert m.omega is None
    assert "omega_0" not in m.diagnostics()


# ---------------------------------------------------------------- the PI- wrapper
def _net(K=3, seed=0):
    torch.manual_seed(seed)
    enc = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    heads = nn.ModuleList([nn.Linear(3, 1) for _ in range(K)])
    x, y = torch.randn(8, 4), torch.randn(8, K) * torch.tensor([1.0, 3.0, 0.3])[:K]

    def forward():
        z = enc(x)
        losses = torch.stack([((h(z).squeeze(-1) - y[:, i]) ** 2).mean() for i, h in enumerate(heads)])
        return Forward(losses, representation=z)

    params = list(enc.parameters()) + list(heads.parameters())
    opt = torch.optim.SGD(params, lr=0.0)
    return params, forward, StepContext(forward, list(enc.parameters()), opt, specific=list(heads.parameters()))


def _grads(ps):
    return torch.cat([torch.zeros_like(p).flatten() if p.grad is None else p.grad.flatten() for p in ps])


def _step_grads(method, ctx, params, seed=0):
    torch.manual_seed(seed)
    res = method.step(ctx)
    return _grads(params), res


def test_pi_ls_without_feedback_is_ls():
    params, forward, ctx = _net()
    g_pi, res = _step_grads(methods.make("pi"), ctx, params)
    g_ls, _ = _step_grads(methods.make("ls"), ctx, params)
    torch.testing.assert_close(g_pi, g_ls)
    torch.testing.assert_close(res.losses, forward().losses.detach())


def test_pi_ls_is_the_omega_weighted_sum_and_reports_raw_losses():
    params, forward, ctx = _net()
    m = methods.make("pi", base="ls")
    m.observe(_feedback([40.0, -10.0, 5.0]))
    omega = m.omega
    g, res = _step_grads(m, ctx, params)
    out = forward()
    ref = torch.autograd.grad((omega.float() * out.losses).sum(), params, allow_unused=True)
    torch.testing.assert_close(g, torch.cat([r.flatten() for r in ref]))
    torch.testing.assert_close(res.losses, out.losses.detach())
    assert res.info["omega_0"] == pytest.approx(float(omega[0]))


@pytest.mark.parametrize("base", ["mgda", "cagrad", "aligned_mtl", "imtl_g"])
def test_pi_aggregator_scales_the_rows_of_G(rng, base):
    m = methods.make("pi", base=base)
    m.observe(_feedback([25.0, -5.0, 10.0, 0.0]))
    G = random_G(rng, 4, 9)
    torch.testing.assert_close(m.aggregate(G), methods.make(base)(m.omega.unsqueeze(1) * G))
    # and the step does the same on the network's shared parameters
    params, forward, ctx = _net()
    m = methods.make("pi", base=base)
    m.observe(_feedback([25.0, -5.0, 10.0]))
    g, _ = _step_grads(m, ctx, params)
    enc = ctx.shared
    Gs = task_gradients(m.omega.float() * forward().losses, enc)
    torch.testing.assert_close(g[: sum(p.numel() for p in enc)], methods.make(base)(Gs))


def test_pi_nash_mtl_bargains_with_omega_and_row_scaling_would_do_nothing(rng):
    G = random_G(rng, 3, 10)
    nash = methods.make("nash_mtl", max_norm=0)
    omega = torch.tensor([1.5, 0.6, 0.9], dtype=torch.float64)
    # why the paper needs a Nash-specific integration: the Nash direction ignores task scales
    torch.testing.assert_close(nash(omega.unsqueeze(1) * G), methods.make("nash_mtl", max_norm=0)(G))
    m = methods.make("pi", base="nash_mtl", base_kwargs={"max_norm": 0})
    m.observe(_feedback([30.0, -20.0, 0.0]))
    d = m.aggregate(G)
    alpha = d @ torch.linalg.pinv(G)
    torch.testing.assert_close(alpha * (G @ G.T @ alpha), m.omega, rtol=1e-7, atol=0)
    # in a step, too: the weights integrate omega, the losses are not scaled
    params, forward, ctx = _net()
    m = methods.make("pi", base="nash_mtl", base_kwargs={"max_norm": 0})
    m.observe(_feedback([30.0, -20.0, 0.0]))
    g, _ = _step_grads(m, ctx, params)
    Gs = task_gradients(forward().losses, ctx.shared)
    ref = methods.make("nash_mtl", max_norm=0, w=m.omega.tolist())(Gs)
    torch.testing.assert_close(g[: Gs.shape[1]], ref, rtol=1e-5, atol=1e-7)


def test_pi_forwards_observe_parameters_reset_and_base_kwargs():
    m = methods.make("pi", base="cagrad", base_kwargs={"c": 0.0})
    assert m.method.c == 0.0
    params, forward, ctx = _net()
    g, _ = _step_grads(m, ctx, params)
    g_ls, _ = _step_grads(methods.make("ls"), ctx, params)
    torch.testing.assert_close(g, g_ls)  # CAGrad with c = 0 is LS

    seen = []

    class Spy(methods.LossWeighting):
        name = "spy"

        def __init__(self):
            self.s = torch.zeros(3, requires_grad=True)

        def loss_weights(self, losses, ctx):
            seen.append(losses.clone())
            return torch.ones_like(losses)

        def observe(self, feedback):
            seen.append(feedback)

        def parameters(self):
            return [self.s]

        def reset(self):
            seen.append("reset")

    m = methods.make("pi")
    m._method = Spy()
    fb = _feedback([5.0, 0.0, -5.0])
    m.observe(fb)
    assert seen[-1] is fb and m.parameters() == [m._method.s]
    m.step(ctx)
    torch.testing.assert_close(seen[-1], m.omega.float() * forward().losses.detach())  # the base sees omega * L
    m.reset()
    assert seen[-1] == "reset" and m.omega is None


@pytest.mark.parametrize("name", [n for n in methods.available()
                                  if isinstance(methods.make(n), methods.LossWeighting)])
def test_pi_loss_weighting_bases_see_the_weighted_losses(name):
    """Any registered loss weighting: pi(base) = base run on omega * L (same random state)."""
    params, forward, ctx = _net()
    m = methods.make("pi", base=name)
    m.observe(_feedback([20.0, -4.0, 9.0]))
    omega = m.omega.float()
    twin = copy.deepcopy(m.method)
    g, _ = _step_grads(m, ctx, params, seed=5)
    twin_ctx = StepContext(lambda: Forward(omega * forward().losses, None), ctx.shared, ctx.optimizer, ctx.specific)
    g_ref, _ = _step_grads(twin, twin_ctx, params, seed=5)
    torch.testing.assert_close(g, g_ref)


def test_pi_rejects_bad_bases():
    with pytest.raises(ValueError, match="already performance-informed"):
        methods.make("pi", base="pivrg")
    with pytest.raises(ValueError, match="already performance-informed"):
        methods.make("pi", base="pi")
    with pytest.raises(ValueError, match="unknown method 'mgd'"):
        methods.make("pi", base="mgd")
    with pytest.raises(TypeError, match="has no hyperparameter 'c'"):
        methods.make("pi", base="mgda", base_kwargs={"c": 1.0})
    with pytest.raises(ValueError, match="base_kwargs must be a dict"):
        methods.make("pi", base_kwargs=[1])
    with pytest.raises(TypeError, match="not an Aggregator"):
        class _NotAgg(methods.Method):
            def step(self, ctx):
                raise AssertionError
        m = methods.make("pi")
        m._method = _NotAgg()
        m.aggregate(torch.ones(2, 2))
