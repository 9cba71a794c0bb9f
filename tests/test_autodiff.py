import pytest
import torch
from torch import nn

from mtl_src.autodiff import (
    loss_parts,
    scale_losses,
    stack_losses,
    task_gradients,
    task_loss,
    weighted_sum,
    write_grad,
)


def _net(K=3, seed=0):
    torch.manual_seed(seed)
    enc = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 4))
    heads = nn.ModuleList([nn.Linear(4, 1) for _ in range(K)])
    x = torch.randn(16, 5)
    z = enc(x)
    losses = torch.stack([(h(z) ** 2).mean() * (i + 1) for i, h in enumerate(heads)])
    return enc, heads, z, losses


def test_loop_and_batched_agree_on_parameters():
    enc, _, _, losses = _net()
    params = list(enc.parameters())
    G_loop = task_gradients(losses, params, mode="loop", retain_graph=True)
    G_batched = task_gradients(losses, params, mode="batched")
    assert G_loop.shape == (3, sum(p.numel() for p in params))
    torch.testing.assert_close(G_loop, G_batched)


def test_loop_and_batched_agree_on_representation():
    _, _, z, losses = _net()
    G_loop = task_gradients(losses, [z], mode="loop", retain_graph=True)
    G_batched = task_gradients(losses, [z], mode="batched")
    assert G_loop.shape == (3, z.numel())
    torch.testing.assert_close(G_loop, G_batched)


def test_rows_are_the_individual_gradients():
    enc, _, _, losses = _net()
    params = list(enc.parameters())
    G = task_gradients(losses, params, retain_graph=True)
    for i in range(3):
        gi = torch.autograd.grad(losses[i], params, retain_graph=True)
        torch.testing.assert_close(G[i], torch.cat([g.flatten() for g in gi]))


def test_unused_parameter_gives_zero_columns():
    a = torch.randn(3, requires_grad=True)
    b = torch.randn(2, requires_grad=True)
    losses = torch.stack([(a**2).sum(), a.sum()])
    G = task_gradients(losses, [a, b])
    assert torch.equal(G[:, 3:], torch.zeros(2, 2))


def test_write_grad_roundtrip_and_shape_error():
    ps = [torch.zeros(2, 3, requires_grad=True), torch.zeros(4, requires_grad=True)]
    d = torch.arange(10.0)
    write_grad(ps, d)
    assert torch.equal(ps[0].grad.flatten(), d[:6]) and torch.equal(ps[1].grad, d[6:])
    write_grad(ps, d, accumulate=True)
    assert torch.equal(ps[1].grad, 2 * d[6:])
    with pytest.raises(ValueError, match="10 entries"):
        write_grad(ps, torch.zeros(9))


def test_bad_losses_shape():
    with pytest.raises(ValueError, match="1-D"):
        task_gradients(torch.zeros(2, 2, requires_grad=True), [torch.zeros(1, requires_grad=True)])


# ---------------------------------------------------------------- stacked losses that keep their parts
def _counting_net(K=4, seed=0):
    """Encoder + K heads; ``runs[k]`` counts how often head k's backward ran."""
    torch.manual_seed(seed)
    enc = nn.Sequential(nn.Linear(5, 8), nn.Tanh())
    heads = nn.ModuleList([nn.Linear(8, 1) for _ in range(K)])
    runs = [0] * K
    z = enc(torch.randn(16, 5))
    parts = []
    for k, h in enumerate(heads):
        o = h(z)
        o.register_hook(lambda g, k=k: runs.__setitem__(k, runs[k] + 1))
        parts.append((o**2).mean() * (k + 1))
    return enc, heads, z, parts, runs


def test_stack_losses_is_the_plain_stack_and_remembers_its_parts():
    _, _, _, parts, _ = _counting_net()
    L = stack_losses(parts)
    torch.testing.assert_close(L, torch.stack(parts))
    assert loss_parts(L) is not None and all(a is b for a, b in zip(loss_parts(L), parts))
    assert loss_parts(torch.stack(parts)) is None


@pytest.mark.parametrize("stacked", [False, True])
def test_task_gradients_run_each_head_once_from_the_parts(stacked):
    enc, _, _, parts, runs = _counting_net(K=4)
    params = list(enc.parameters())
    L = torch.stack(parts) if stacked else stack_losses(parts)
    G = task_gradients(L, params, retain_graph=True)
    # through a plain stack every backward also runs the other heads (on zeros): K^2 head runs;
    # from the parts each head runs once, for its own row
    assert runs == ([4] * 4 if stacked else [1] * 4)
    for k in range(4):
        gk = torch.autograd.grad(parts[k], params, retain_graph=True)
        torch.testing.assert_close(G[k], torch.cat([g.flatten() for g in gk]))


def test_parts_changed_in_place_are_not_used():
    enc, _, _, parts, runs = _counting_net(K=3)
    L = stack_losses(parts)
    L.mul_(2.0)  # the parts are stale now: the loop must use L itself
    assert loss_parts(L) is None
    params = list(enc.parameters())
    G = task_gradients(L, params, retain_graph=True)
    assert runs == [3, 3, 3]
    g0 = torch.autograd.grad(2.0 * parts[0], params, retain_graph=True)
    torch.testing.assert_close(G[0], torch.cat([g.flatten() for g in g0]))


def test_task_loss_weighted_sum_and_scale_losses_touch_only_the_selected_tasks():
    enc, heads, _, parts, runs = _counting_net(K=4)
    L = stack_losses(parts)
    w = torch.tensor([1.0, 2.0, 3.0, 4.0])
    torch.testing.assert_close(task_loss(L, 2), parts[2])
    total = weighted_sum(L, w, [1, 3])
    torch.testing.assert_close(total, 2.0 * parts[1] + 4.0 * parts[3])
    total.backward(retain_graph=True)
    assert runs == [0, 1, 0, 1]
    assert heads[0].weight.grad is None and heads[1].weight.grad is not None
    S = scale_losses(L, w)
    torch.testing.assert_close(S, w * L)
    task_gradients(S, list(enc.parameters()), retain_graph=True)
    assert runs == [1, 2, 1, 2]
    # without parts the same helpers give the same values (through the stack)
    P = torch.stack(parts)
    torch.testing.assert_close(weighted_sum(P, w, [1, 3]), total)
    torch.testing.assert_close(scale_losses(P, w), S)
    torch.testing.assert_close(weighted_sum(P, w), (w * P).sum())
    with pytest.raises(ValueError, match="empty"):
        weighted_sum(L, w, [])
