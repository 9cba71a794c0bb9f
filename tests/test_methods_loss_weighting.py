"""Loss weightings and single-task learning: each method's defining equation on hand-computable inputs,
its learning dynamics on tiny models, and clear errors for bad hyperparameters and bad feedback."""

import copy
import math
import warnings
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from mtl_src import methods
from mtl_src.methods import Feedback, Forward, StepContext

LW = ["manual", "si", "rlw", "dwa", "uw", "dtp", "gradnorm", "famo", "stl"]


# ---------------------------------------------------------------- a tiny shared-encoder network
class Net:
    """Linear encoder (3 -> 4) and K linear heads; squared-error losses on a fixed batch."""

    def __init__(self, K=2, seed=0, scales=None, lr=0.0, opt="sgd", weight_decay=0.0, dtype=torch.float64):
        g = torch.Generator().manual_seed(seed)
        self.enc = nn.Linear(3, 4).to(dtype)
        self.heads = nn.ModuleList([nn.Linear(4, 1).to(dtype) for _ in range(K)])
        with torch.no_grad():
            for p in list(self.enc.parameters()) + list(self.heads.parameters()):
                p.copy_(torch.randn(p.shape, generator=g, dtype=dtype))
        self.x = torch.randn(16, 3, generator=g, dtype=dtype)
        self.y = torch.randn(16, K, generator=g, dtype=dtype)
        self.scales = torch.ones(K, dtype=dtype) if scales is None else torch.as_tensor(scales, dtype=dtype)
        self.n_forward = 0
        params = list(self.enc.parameters()) + list(self.heads.parameters())
        if opt == "sgd":
            self.opt = torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
        else:
            self.opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)

    def forward(self):
        self.n_forward += 1
        z = self.enc(self.x)
        losses = torch.stack([((h(z).squeeze(-1) - self.y[:, i]) ** 2).mean() for i, h in enumerate(self.heads)])
        return Forward(self.scales * losses, representation=z)

    def ctx(self, method=None):
        if method is not None and method.parameters():
            self.opt.add_param_group({"params": method.parameters()})
        return StepContext(self.forward, list(self.enc.parameters()), self.opt, list(self.heads.parameters()),
                           last_shared=[self.enc.weight])

    def params(self):
        return list(self.enc.parameters()) + list(self.heads.parameters())

    def grads(self, ps=None):
        return torch.cat([p.grad.flatten() for p in (ps or self.params())])

    def grad_of(self, scalar):
        grads = torch.autograd.grad(scalar, self.params(), retain_graph=True)
        return torch.cat([g.flatten() for g in grads])


def _losses_ctx(losses):
    """A context whose forward returns fixed losses (for loss_weights / total_loss checks)."""
    t = torch.as_tensor(losses, dtype=torch.float64)
    p = torch.zeros(1, requires_grad=True, dtype=torch.float64)
    return StepContext(lambda: Forward(t + 0 * p.sum()), [p], torch.optim.SGD([p], lr=0.0))


# ---------------------------------------------------------------- manual
def test_manual_is_the_fixed_weighted_sum():
    net = Net(K=3)
    w = [1.0, 10.0, 50.0]
    methods.make("manual", w=w).step(net.ctx())
    expected = net.grad_of((torch.tensor(w, dtype=torch.float64) * net.forward().losses).sum())
    torch.testing.assert_close(net.grads(), expected)
    assert methods.make("manual").loss_weights(torch.ones(4), None).tolist() == [1.0] * 4
    assert methods.get("manual").NYUD == (1.0, 1.0, 10.0, 50.0)


def test_manual_validates_w():
    for bad in ([1.0, -1.0], [0.0, 0.0], [1.0, float("nan")], [], "ab"):
        with pytest.raises(ValueError, match="manual: w must be"):
            methods.make("manual", w=bad)
    with pytest.raises(ValueError, match="w has 4 entries but there are 2 tasks"):
        methods.make("manual", w=[1, 1, 10, 50]).step(Net(K=2).ctx())


# ---------------------------------------------------------------- si
def test_si_gradient_is_the_sum_of_gradients_over_losses():
    net = Net(K=3, scales=[1.0, 1e3, 1e-3])
    m = methods.make("si")
    m.step(net.ctx())
    L = net.forward().losses
    expected = sum(net.grad_of(L[i]) / float(L[i].detach()) for i in range(3))
    torch.testing.assert_close(net.grads(), expected)
    torch.testing.assert_close(m.last_weights, 1.0 / L.detach())
    # scale invariance: rescaling the losses leaves the update unchanged
    net2 = Net(K=3, scales=[7.0, 1.0, 1e5])
    methods.make("si").step(net2.ctx())
    torch.testing.assert_close(net2.grads(), net.grads())


def test_si_shifted_by_min_losses_and_errors():
    m = methods.make("si", min_losses=[-1.0, 0.5])
    total = m.total_loss(torch.tensor([0.0, 1.5], dtype=torch.float64), None)
    assert float(total) == pytest.approx(math.log(1.0) + math.log(1.0))
    with pytest.raises(ValueError, match=r"si: losses minus min_losses of tasks \[1\] are \[0\.0\]"):
        methods.make("si").total_loss(torch.tensor([1.0, 0.0]), None)
    with pytest.raises(ValueError, match=r"tasks \[0\]"):
        methods.make("si").total_loss(torch.tensor([-2.0, 1.0]), None)
    with pytest.raises(ValueError, match="min_losses has 3 entries but there are 2 tasks"):
        methods.make("si", min_losses=[0, 0, 0]).total_loss(torch.tensor([1.0, 2.0]), None)
    with pytest.raises(ValueError, match="min_losses must be"):
        methods.make("si", min_losses=float("nan"))


# ---------------------------------------------------------------- rlw
def test_rlw_weights_are_positive_sum_to_K_and_have_the_right_law():
    m = methods.make("rlw", seed=1)
    lam = torch.stack([m.sample(2) for _ in range(20_000)])
    assert bool((lam > 0).all())
    torch.testing.assert_close(lam.sum(1), torch.full((20_000,), 2.0, dtype=torch.float64))
    # lambda_1 = 2 sigmoid(z1 - z2), z1 - z2 ~ N(0, 2): E = 1 by symmetry, E[lambda_1^2] by quadrature
    u = np.linspace(-12, 12, 200_001)
    dens = np.exp(-u**2 / 4) / np.sqrt(4 * np.pi)
    second = float(np.trapezoid((2 / (1 + np.exp(-u))) ** 2 * dens, u))
    l1 = lam[:, 0].numpy()
    se = l1.std() / math.sqrt(len(l1))
    assert abs(l1.mean() - 1.0) < 4 * se
    assert abs((l1**2).mean() - second) < 4 * (l1**2).std() / math.sqrt(len(l1))
    lam5 = torch.stack([m.sample(5) for _ in range(4000)])
    assert abs(float(lam5.mean()) - 1.0) < 1e-12  # each draw sums to K exactly
    assert bool((lam5.mean(0) - 1).abs().max() < 0.05)


def test_rlw_seeding_reset_and_pickling():
    a, b = methods.make("rlw", seed=3), methods.make("rlw", seed=3)
    s1 = torch.stack([a.sample(3) for _ in range(5)])
    torch.testing.assert_close(s1, torch.stack([b.sample(3) for _ in range(5)]))
    a.reset()
    torch.testing.assert_close(torch.stack([a.sample(3) for _ in range(5)]), s1)
    c = pickle.loads(pickle.dumps(a))
    torch.testing.assert_close(c.sample(3), a.sample(3))  # same position in the stream
    assert not torch.equal(methods.make("rlw", seed=4).sample(3), methods.make("rlw", seed=3).sample(3))
    # seed=None: the global generator (the trainer's seed)
    torch.manual_seed(0)
    x = methods.make("rlw").sample(3)
    torch.manual_seed(0)
    torch.testing.assert_close(methods.make("rlw").sample(3), x)
    for bad in (-1, 1.5, True, "0"):
        with pytest.raises(ValueError, match="rlw: seed must be"):
            methods.make("rlw", seed=bad)


# ---------------------------------------------------------------- dwa
def _fb(epoch=0, train_losses=None, kpis=None):
    return Feedback(epoch=epoch, epochs=10, train_losses=train_losses, kpis=kpis)


def test_dwa_weights_follow_eq_7():
    m = methods.make("dwa")
    ctx = _losses_ctx([1.0, 1.0, 1.0])
    L = torch.ones(3)
    assert m.loss_weights(L, ctx).tolist() == [1.0, 1.0, 1.0]
    e0, e1, e2 = torch.tensor([2.0, 1.0, 4.0]), torch.tensor([1.0, 0.9, 4.4]), torch.tensor([0.5, 0.9, 2.2])
    m.observe(_fb(0, e0))
    assert m.loss_weights(L, ctx).tolist() == [1.0, 1.0, 1.0]  # still 1 in the second epoch
    m.observe(_fb(1, e1))
    r = (e1 / e0).double()
    expected = 3 * torch.exp(r / 2) / torch.exp(r / 2).sum()
    torch.testing.assert_close(m.loss_weights(L, ctx), expected)
    assert float(expected[2]) > float(expected[1]) > float(expected[0])  # slowest descent, largest weight
    m.observe(_fb(2, e2))  # now the two most recent epochs
    r = (e2 / e1).double()
    torch.testing.assert_close(m.loss_weights(L, ctx), 3 * torch.softmax(r / 2, 0))
    # T -> large: weights -> 1
    big = methods.make("dwa", T=1e9)
    big.observe(_fb(0, e0))
    big.observe(_fb(1, e1))
    torch.testing.assert_close(big.loss_weights(L, ctx), torch.ones(3, dtype=torch.float64))
    m.reset()
    assert m.weights is None


def test_dwa_rejects_bad_feedback_and_hyperparameters():
    m = methods.make("dwa")
    with pytest.raises(ValueError, match=r"tasks \[1\] are NaN or inf"):
        m.observe(_fb(0, torch.tensor([1.0, float("nan")])))
    m.observe(_fb(0, None))  # feedback without epoch losses is ignored
    assert m._history == [] and m.weights is None
    with pytest.raises(ValueError, match="positive losses"):
        m.observe(_fb(0, torch.tensor([1.0, 0.0])))
    m.observe(_fb(0, torch.tensor([1.0, 2.0])))
    with pytest.raises(ValueError, match="got 3 epoch training losses but .* K = 2"):
        m.observe(_fb(1, torch.tensor([1.0, 2.0, 3.0])))
    with pytest.raises(ValueError, match="epoch losses had 2 tasks but the batch has 3"):
        m.loss_weights(torch.ones(3), None)
    for T in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="dwa: temperature T"):
            methods.make("dwa", T=T)


# ---------------------------------------------------------------- uw
def test_uw_total_loss_and_log_variance_gradient_are_eq_88():
    m = methods.make("uw", kinds=["regression", "classification"], init=0.3)
    L = torch.tensor([2.0, 0.7], dtype=torch.float64)
    s = m.parameters()[0]
    total = m.objective(L)
    s0 = 0.3
    expected = 0.5 * math.exp(-s0) * 2.0 + 0.5 * s0 + math.exp(-s0) * 0.7 + 0.5 * s0
    assert float(total.detach()) == pytest.approx(expected, rel=1e-12)
    (g,) = torch.autograd.grad(total, [s])
    torch.testing.assert_close(g, torch.tensor([0.5 - 0.5 * math.exp(-s0) * 2.0, 0.5 - math.exp(-s0) * 0.7],
                                               dtype=torch.float64))
    # in sigma form: 1/(2 sigma^2) L + log sigma, 1/sigma^2 L + log sigma
    sig = math.exp(s0 / 2)
    assert float(total.detach()) == pytest.approx(2.0 / (2 * sig**2) + math.log(sig) + 0.7 / sig**2 + math.log(sig))


@pytest.mark.parametrize("kind,opt", [("regression", lambda L: math.log(L)),
                                      ("classification", lambda L: math.log(2 * L))])
def test_uw_optimal_log_variance(kind, opt):
    m = methods.make("uw", kinds=[kind, kind])
    L = torch.tensor([0.05, 30.0], dtype=torch.float64)
    m.objective(L)  # sizes the log-variances
    s = m.parameters()[0]
    o = torch.optim.Adam([s], lr=0.05)
    for _ in range(1500):
        o.zero_grad()
        m.objective(L).backward()
        o.step()
    torch.testing.assert_close(s.detach(), torch.tensor([opt(0.05), opt(30.0)], dtype=torch.float64), atol=1e-3, rtol=0)
    (g,) = torch.autograd.grad(m.objective(L), [s])
    assert float(g.abs().max()) < 1e-3  # a stationary point


def test_uw_parameters_are_one_tensor_that_the_trainer_optimizer_steps():
    m = methods.make("uw")
    p = m.parameters()[0]
    assert p.numel() == 0  # K unknown until the first step
    net = Net(K=3, lr=0.1)
    ctx = net.ctx(m)  # the trainer's way: a parameter group made before training
    m.step(ctx)
    assert m.parameters()[0] is p and p.shape == (3,) and p.dtype == torch.float64
    assert not torch.equal(p.detach(), torch.full((3,), -0.5, dtype=torch.float64))  # it moved
    L = net.forward().losses.detach()
    # network gradient: lambda_i = exp(-s_i)/2 at the pre-step s = -0.5
    assert m.last_weights.tolist() == pytest.approx([math.exp(0.5) / 2] * 3)
    m.step(ctx)
    assert len(net.opt.param_groups) == 2
    # an optimizer without the tensor gets it as a new group
    m2, net2 = methods.make("uw"), Net(K=2, lr=0.1)
    m2.step(net2.ctx())
    assert any(q is m2.parameters()[0] for q in net2.opt.param_groups[-1]["params"])
    assert torch.isfinite(L).all()
    m2.reset()
    assert m2.parameters()[0].numel() == 0 and m2.parameters()[0] is not p


def test_uw_errors():
    for bad in (["regression", "ordinal"], "regression", []):
        with pytest.raises(ValueError, match="uw: kinds must"):
            methods.make("uw", kinds=bad)
    with pytest.raises(ValueError, match="init"):
        methods.make("uw", init=float("inf"))
    with pytest.raises(ValueError, match="kinds has 3 entries but there are 2 tasks"):
        methods.make("uw", kinds=["regression"] * 3).step(Net(K=2).ctx())
    m = methods.make("uw")
    m.step(Net(K=2).ctx())
    with pytest.raises(ValueError, match="log-variances have 2 entries but there are 3 tasks"):
        m.step(Net(K=3).ctx())


# ---------------------------------------------------------------- dtp
def test_dtp_focal_weights():
    ctx = _losses_ctx([1.0, 1.0, 1.0])
    m = methods.make("dtp", normalize=False)
    assert m.loss_weights(torch.ones(3), ctx).tolist() == [1.0, 1.0, 1.0]  # before any KPI
    m.observe(_fb(0, kpis=torch.tensor([0.6, 0.6, 0.6])))
    w = m.loss_weights(torch.ones(3), ctx)
    assert w.tolist() == pytest.approx([-(0.4**2) * math.log(0.6)] * 3)
    m.observe(_fb(1, kpis=torch.tensor([0.2, 0.6, 0.9])))
    kbar = 0.5 * torch.tensor([0.2, 0.6, 0.9], dtype=torch.float64) + 0.5 * 0.6
    torch.testing.assert_close(m.kpis, kbar)
    w = m.loss_weights(torch.ones(3), ctx)
    torch.testing.assert_close(w, -((1 - kbar) ** 2) * torch.log(kbar))
    assert float(w[0]) > float(w[1]) > float(w[2])  # the harder task gets more weight
    # normalised (default): same ratios, sum K; equal KPIs -> all 1
    n = methods.make("dtp")
    n.observe(_fb(0, kpis=torch.tensor([0.3, 0.3])))
    torch.testing.assert_close(n.loss_weights(torch.ones(2), ctx), torch.ones(2, dtype=torch.float64))
    n.observe(_fb(1, kpis=torch.tensor([0.1, 0.5])))
    wn = n.loss_weights(torch.ones(2), ctx)
    assert float(wn.sum()) == pytest.approx(2.0) and float(wn[0]) > 1.0 > float(wn[1])
    # KPIs of exactly 0 and 1 stay finite (clipped)
    c = methods.make("dtp", alpha=1.0)
    c.observe(_fb(0, kpis=torch.tensor([0.0, 1.0])))
    wc = c.loss_weights(torch.ones(2), ctx)
    assert bool(torch.isfinite(wc).all()) and float(wc[0]) > float(wc[1]) > 0
    # gamma = 0: plain -log kappa
    g0 = methods.make("dtp", gamma=0.0, alpha=1.0, normalize=False)
    g0.observe(_fb(0, kpis=torch.tensor([0.5, 0.25])))
    torch.testing.assert_close(g0.loss_weights(torch.ones(2), ctx),
                               torch.tensor([math.log(2), math.log(4)], dtype=torch.float64))


def test_dtp_errors():
    m = methods.make("dtp")
    with pytest.warns(RuntimeWarning, match=r"dtp: feedback of epoch 0 has no KPIs.*linear scalarisation"):
        m.observe(_fb(0))  # no KPIs: nothing changes, and DTP says it is LS
    assert m.kpis is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m.observe(_fb(1))  # once per run, not every epoch
    m.reset()
    with pytest.warns(RuntimeWarning, match="no KPIs"):
        m.observe(_fb(2))
    with pytest.raises(ValueError, match=r"KPIs of tasks \[0\] are NaN"):
        m.observe(_fb(0, kpis=torch.tensor([float("nan"), 0.5])))
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\].*tasks \[1\]"):
        m.observe(_fb(0, kpis=torch.tensor([0.5, 1.5])))
    m.observe(_fb(0, kpis=torch.tensor([0.5, 0.5])))
    with pytest.raises(ValueError, match="got 3 KPIs but .* K = 2"):
        m.observe(_fb(1, kpis=torch.tensor([0.5, 0.5, 0.5])))
    with pytest.raises(ValueError, match="2 KPIs but the batch has 3 tasks"):
        m.step(Net(K=3).ctx())
    for hp, msg in [({"gamma": -1}, "gamma"), ({"alpha": 0.0}, "alpha"), ({"alpha": 1.5}, "alpha"),
                    ({"clip": 0.0}, "clip"), ({"clip": 0.5}, "clip")]:
        with pytest.raises(ValueError, match=f"dtp: {msg}"):
            methods.make("dtp", **hp)


# ---------------------------------------------------------------- gradnorm
def test_gradnorm_step_and_its_weight_gradient():
    net = Net(K=2, scales=[1.0, 3.0])
    m = methods.make("gradnorm", weight_lr=0.01)
    m.step(net.ctx())
    L = net.forward().losses
    # the network got the gradient of sum_i w_i L_i with the pre-update weights w = 1
    torch.testing.assert_close(net.grads(), net.grad_of(L.sum()))
    w = m.weights
    assert float(w.sum()) == pytest.approx(2.0) and bool((w > 0).all())
    # at t = 0 all rates are 1: the target is the mean norm; the larger-norm task loses weight
    n = torch.stack([torch.autograd.grad(L[i], [net.enc.weight], retain_graph=True)[0].norm() for i in range(2)])
    big = int(torch.argmax(n))
    assert float(w[big]) < 1.0 < float(w[1 - big])
    # Adam's first step moves each weight by lr against sign(G_i - mean G), then renormalises
    raw = 1.0 - 0.01 * torch.sign(n - n.mean())
    torch.testing.assert_close(w, 2 * raw / raw.sum(), atol=1e-6, rtol=0)


def test_gradnorm_targets_follow_the_training_rates():
    m = methods.make("gradnorm", alpha=2.0)
    m._setup(torch.tensor([2.0, 4.0, 1.0], dtype=torch.float64))
    r = m.rates(torch.tensor([1.0, 4.0, 1.0], dtype=torch.float64))
    Lt = torch.tensor([0.5, 1.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(r, Lt / Lt.mean())
    torch.testing.assert_close(m.rates(torch.zeros(3, dtype=torch.float64)), torch.ones(3, dtype=torch.float64))


def test_gradnorm_equalises_the_weighted_gradient_norms():
    """Two tasks share a linear layer; task 1's gradient is 100x task 0's (its loss is scaled by 100)."""
    net = Net(K=2, scales=[1.0, 100.0], lr=0.0)  # frozen network: only the weights move
    m = methods.make("gradnorm", weight_lr=0.05, alpha=0.0)
    ctx = net.ctx()
    ratios = []
    for _ in range(150):
        m.step(ctx)
        G = m._last_norms
        ratios.append(float(G[1] / G[0]))
    assert ratios[0] > 50
    assert ratios[-1] < 1.5 and ratios[-1] > 1 / 1.5  # equalised
    w = m.weights
    assert float(w[0]) > float(w[1]) and float(w.sum()) == pytest.approx(2.0)


def test_gradnorm_asymmetry_sets_the_target_norm_ratio():
    """With training rates r = (1.6, 0.4) and alpha = 1 the weighted norms settle at G_1 / G_0 = 0.25."""
    net = Net(K=2, lr=0.0)
    m = methods.make("gradnorm", weight_lr=0.02, alpha=1.0)
    L = net.forward().losses.detach()
    m._setup(L * torch.tensor([1.0, 4.0], dtype=torch.float64))  # as if task 1 had started 4x higher
    torch.testing.assert_close(m.rates(L), torch.tensor([1.6, 0.4], dtype=torch.float64))
    ctx = net.ctx()
    for _ in range(200):
        m.step(ctx)
    G = m._last_norms
    assert float(G[1] / G[0]) == pytest.approx(0.25, rel=0.15)


def test_gradnorm_errors():
    for hp, msg in [({"alpha": -1}, "alpha"), ({"weight_lr": 0}, "weight_lr"), ({"min_losses": "x"}, "min_losses")]:
        with pytest.raises(ValueError, match=f"gradnorm: {msg}"):
            methods.make("gradnorm", **hp)
    net = Net(K=2)
    net.scales = torch.tensor([1.0, 0.0], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"initial losses minus min_losses of tasks \[1\]"):
        methods.make("gradnorm").step(net.ctx())
    m = methods.make("gradnorm", min_losses=-1.0)
    m.step(net.ctx())
    net.scales = torch.tensor([1.0, -1e6], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"tasks \[1\]"):
        m.step(net.ctx())
    with pytest.raises(ValueError, match="got 3 task losses but .* K = 2"):
        m.step(Net(K=3).ctx())


# ---------------------------------------------------------------- famo
def test_famo_first_step_by_hand():
    net = Net(K=3, scales=[1.0, 10.0, 0.1])
    m = methods.make("famo")
    ctx = net.ctx()
    L = net.forward().losses.detach()
    n0 = net.n_forward
    res = m.step(ctx)
    assert net.n_forward - n0 == 2  # the step plus the forward after the update
    # z = 1/3 at the start: weights K z_i / (c D_i) = 1 / (c D_i) with c = sum_j (1/3) / D_j
    D = L + 1e-8
    lam = 1.0 / ((1 / 3) * (1 / D).sum() * D)
    expected = sum(float(lam[i]) * net.grad_of(net.forward().losses[i]) for i in range(3))
    torch.testing.assert_close(net.grads(), expected)
    assert [res.info[f"lambda_{i}"] for i in range(3)] == pytest.approx(lam.tolist(), rel=1e-12)
    # lr 0 for the network: the losses do not change, delta = 0, xi stays 0
    torch.testing.assert_close(m.logits, torch.zeros(3, dtype=torch.float64))


def test_famo_raises_the_weight_of_the_slowest_task():
    """Two tasks; task 1's loss barely decreases (its head is frozen and its target is far)."""
    net = Net(K=2, lr=0.05)
    net.heads[1].weight.requires_grad_(False)
    net.heads[1].bias.requires_grad_(False)
    with torch.no_grad():
        net.y[:, 1] += 50.0
    m = methods.make("famo")
    ctx = net.ctx()
    for _ in range(30):
        m.step(ctx)
    w = m.weights
    assert float(w[1]) > float(w[0]) and float(w.sum()) == pytest.approx(2.0)


def test_famo_errors():
    for hp, msg in [({"w_lr": 0}, "w_lr"), ({"gamma": -1}, "gamma"), ({"min_losses": [float("inf")]}, "min_losses")]:
        with pytest.raises(ValueError, match=f"famo: {msg}"):
            methods.make("famo", **hp)
    net = Net(K=2)
    net.scales = torch.tensor([1.0, -1.0], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"famo: losses minus min_losses \(\+1e-8\) of tasks \[1\]"):
        methods.make("famo").step(net.ctx())
    methods.make("famo", min_losses=[0.0, -1e3]).step(net.ctx())
    m = methods.make("famo")
    m.step(Net(K=2).ctx())
    with pytest.raises(ValueError, match="got 3 task losses but .* K = 2"):
        m.step(Net(K=3).ctx())


# ---------------------------------------------------------------- stl
def test_stl_moves_only_what_its_task_reaches():
    net = Net(K=3, lr=0.1, opt="adam", weight_decay=0.1)  # decay would move any parameter with a grad
    before = [p.detach().clone() for p in net.params()]
    m = methods.make("stl:1")
    assert m.task == 1
    ctx = net.ctx()
    for _ in range(3):
        res = m.step(ctx)
    assert res.losses.shape == (3,)
    moved = [not torch.equal(b, p.detach()) for b, p in zip(before, net.params())]
    enc, h0, h1, h2 = moved[:2], moved[2:4], moved[4:6], moved[6:8]
    assert all(enc) and all(h1) and not any(h0) and not any(h2)
    assert net.heads[0].weight.grad is None
    assert m.last_weights.tolist() == [0.0, 1.0, 0.0]


def test_stl_errors():
    for bad in (-1, 1.5, "a", True):
        with pytest.raises(ValueError, match="stl: task must be"):
            methods.make("stl", task=bad)
    with pytest.raises(ValueError, match="task index 3 is out of range for K = 2"):
        methods.make("stl", task=3).step(Net(K=2).ctx())


# ---------------------------------------------------------------- all of them
@pytest.mark.parametrize("name", LW)
def test_nan_losses_are_a_clear_error(name):
    net = Net(K=2)
    net.scales = torch.tensor([1.0, float("nan")], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"NaN"):
        methods.make(name).step(net.ctx())


@pytest.mark.parametrize("name", LW)
def test_state_survives_pickling_and_steps_are_finite(name):
    net = Net(K=3, lr=0.01, opt="adam", dtype=torch.float32)
    m = methods.make(name)
    ctx = net.ctx(m)
    for _ in range(3):
        res = m.step(ctx)
    assert bool(torch.isfinite(res.losses).all()) and all(math.isfinite(v) for v in res.info.values())
    m.observe(Feedback(0, 2, train_losses=torch.tensor([1.0, 2.0, 3.0]), kpis=torch.tensor([0.1, 0.5, 0.9])))
    m.observe(Feedback(1, 2, train_losses=torch.tensor([0.9, 2.0, 1.0]), kpis=torch.tensor([0.2, 0.5, 0.9])))
    twin = pickle.loads(pickle.dumps(m))
    copy.deepcopy(m)
    assert type(twin) is type(m) and repr(twin) == repr(m)


@pytest.mark.parametrize("name", LW)
def test_many_tasks_and_extreme_scales(name):
    K = 40
    scales = torch.tensor(10.0 ** np.linspace(-8, 8, K))
    net = Net(K=K, scales=scales, lr=1e-3, opt="adam")
    m = methods.make(name)
    ctx = net.ctx(m)
    for _ in range(2):
        res = m.step(ctx)
    assert all(bool(torch.isfinite(p).all()) for p in net.params())
    assert all(math.isfinite(v) for v in res.info.values())


@pytest.mark.parametrize("name,hp", [("uw", {}), ("rlw", {}), ("dwa", {}), ("famo", {}),
                                     ("gradnorm", {"weight_lr": 0.01})])
def test_resume_gives_the_same_final_numbers(tmp_path, name, hp):
    from test_trainer import TinyRegression

    from mtl_src.train import train

    ck = tmp_path / "ck.pt"
    kw = dict(epochs=4, batch_size=16, lr=1e-2, seed=3, **hp)
    full = train(TinyRegression(), name, **kw)
    train(TinyRegression(), name, checkpoint=str(ck), interrupt_after=2, **kw)
    resumed = train(TinyRegression(), name, checkpoint=str(ck), resume=True, **kw)
    a = full.frame().query("split != 'timing'").reset_index(drop=True)
    b = resumed.frame().query("split != 'timing'").reset_index(drop=True)
    assert a[["epoch", "split", "metric"]].equals(b[["epoch", "split", "metric"]])
    np.testing.assert_array_equal(a.value.to_numpy(), b.value.to_numpy())


def test_dwa_gets_its_epoch_losses_from_the_trainer(monkeypatch):
    from test_trainer import TinyRegression

    import mtl_src.methods as M
    from mtl_src.train import train

    made = []
    orig = M.make
    monkeypatch.setattr(M, "make", lambda name, **hp: made.append(orig(name, **hp)) or made[-1])
    df = train(TinyRegression(), "dwa", epochs=3, batch_size=16, lr=1e-2).frame()
    loss = df[df.metric.str.startswith("loss_")].pivot(index="epoch", columns="metric", values="value")
    r = torch.tensor(loss.loc[3].to_numpy() / loss.loc[2].to_numpy())  # epochs 1, 2 (0-based)
    torch.testing.assert_close(made[0].weights, 3 * torch.softmax(r / 2, 0).double(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["si", "famo", "gradnorm"])
def test_log_and_ratio_methods_train_the_toy_with_its_lower_bound(name):
    """The toy's losses reach -20 (and are exactly 0 at the start (0, 0)): these methods need m = -21,
    the shift FAMO's authors use for it. By name the toy trainer supplies it (TOY_LOWER_BOUND); a method
    built with the default m = 0 fails on the toy with an error that says what to do."""
    from mtl_src import methods
    from mtl_src.train import TOY_LOWER_BOUND, train_toy

    run = train_toy(name, iterations=100, record_every=10, min_losses=-21.0)
    assert np.isfinite(run.xs).all() and (run.losses[:, -1].sum(1) < run.losses[:, 0].sum(1)).sum() >= 4
    by_name = train_toy(name, iterations=100, record_every=10)
    assert by_name.hyperparameters["min_losses"] == [TOY_LOWER_BOUND] * 2
    np.testing.assert_allclose(by_name.xs, run.xs)
    with pytest.raises(ValueError, match="min_losses"):
        train_toy(methods.make(name), iterations=5)
