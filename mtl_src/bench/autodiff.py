"""Ways of computing G on a small CNN with K heads (two-layer MLPs), K = 2, 4, 11, 40.

    python -m mtl_src.bench.autodiff [--device cpu] [--repeats 20]

- ``loop``: K calls of ``torch.autograd.grad``, each from the task's own loss (the losses come from
  :func:`mtl_src.autodiff.stack_losses`, as in every benchmark), so backward k runs head k only;
- ``stacked``: the same loop from ``L[k]`` of a plain ``torch.stack``: the stack's backward hands
  zeros to the other K - 1 heads, which autograd then runs (K^2 head backwards in all);
- ``batched``: one vmapped backward (``is_grads_batched``) of the stacked losses.

Prints the median time of each (same process, interleaved repetitions) and its ratio to ``loop``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from mtl_src.autodiff import stack_losses, task_gradients


def _model(K: int) -> tuple[nn.Module, nn.ModuleList]:
    enc = nn.Sequential(
        nn.Conv2d(1, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(),
    )
    heads = nn.ModuleList([nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)) for _ in range(K)])
    return enc, heads


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    print(f"device={dev} batch={args.batch} repeats={args.repeats}")
    modes = ("loop", "stacked", "batched")
    print(f"{'K':>3} {'space':>14} {'loop ms':>9} {'stacked ms':>11} {'batched ms':>11} "
          f"{'stacked/loop':>13} {'batched/loop':>13}")
    for K in (2, 4, 11, 40):
        torch.manual_seed(0)
        enc, heads = _model(K)
        enc, heads = enc.to(dev), heads.to(dev)
        x = torch.randn(args.batch, 1, 28, 28, device=dev)
        y = torch.randint(0, 10, (args.batch, K), device=dev)
        params = list(enc.parameters())
        for space in ("shared params", "representation"):
            times: dict[str, list[float]] = {m: [] for m in modes}
            for r in range(args.repeats + 1):
                for mode in modes[r % 3:] + modes[: r % 3]:  # rotate the order every round
                    z = enc(x)
                    parts = [nn.functional.cross_entropy(h(z), y[:, i]) for i, h in enumerate(heads)]
                    losses = torch.stack(parts) if mode == "stacked" else stack_losses(parts)
                    if dev.type == "cuda":
                        torch.cuda.synchronize()
                    t = time.perf_counter()
                    task_gradients(losses, params if space == "shared params" else [z],
                                   mode="loop" if mode == "stacked" else mode)
                    if dev.type == "cuda":
                        torch.cuda.synchronize()
                    if r:  # first round is warm-up
                        times[mode].append(time.perf_counter() - t)
            lo, st, ba = (statistics.median(times[m]) * 1e3 for m in modes)
            print(f"{K:>3} {space:>14} {lo:>9.2f} {st:>11.2f} {ba:>11.2f} {st / lo:>13.2f} {ba / lo:>13.2f}")


if __name__ == "__main__":
    main()
