"""Wall time of one aggregation ``d = method.aggregate(G)`` of every aggregator at large K and P.

    python -m mtl_src.bench.aggregation [--K 40] [--P 1000000] [--repeats 5] [--dtype float32]

G is a random K x P matrix (rows with norms spanning two orders of magnitude and a shared component,
so tasks partly conflict). Each aggregator is timed on the same G, in a fresh random order each
round (interleaved, same process); the median over ``--repeats`` rounds is printed, with its ratio to
``ls`` (a plain sum over tasks, the floor every method pays). One warm-up call per method precedes
the timing. Stateful methods (MoCo, Nash-MTL) are timed from their state after the warm-up.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from mtl_src import methods


def random_G(K: int, P: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    common = torch.randn(P, generator=g, dtype=dtype)
    G = torch.randn(K, P, generator=g, dtype=dtype) + 0.5 * common
    scales = torch.logspace(-1, 1, K, dtype=dtype)
    return G * scales[:, None] / P**0.5


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--K", type=int, default=40)
    ap.add_argument("--P", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--methods", nargs="*", default=None)
    args = ap.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    names = args.methods or [n for n in methods.available() if issubclass(methods.get(n), methods.Aggregator)]
    G = random_G(args.K, args.P, dtype)
    aggs = {n: methods.make(n) for n in names}
    for a in aggs.values():  # warm-up
        a.aggregate(G)
    times: dict[str, list[float]] = {n: [] for n in names}
    order = list(names)
    for _ in range(args.repeats):
        random.shuffle(order)
        for n in order:
            t0 = time.perf_counter()
            aggs[n].aggregate(G)
            times[n].append(time.perf_counter() - t0)
    med = {n: statistics.median(t) for n, t in times.items()}
    ref = med.get("ls")
    print(f"one aggregation, K={args.K}, P={args.P:,}, {args.dtype}, torch threads={torch.get_num_threads()}, "
          f"median of {args.repeats} interleaved rounds")
    print(f"{'method':<16}{'seconds':>10}{'x ls':>8}")
    for n in sorted(med, key=med.get):
        ratio = f"{med[n] / ref:8.1f}" if ref else "     n/a"
        print(f"{n:<16}{med[n]:10.4f}{ratio}")


if __name__ == "__main__":
    main()
