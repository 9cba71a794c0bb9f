"""The step-cost benchmark runs every method (and torchjd's where it has one) without failing."""

import pytest

from mtl_src import methods
from mtl_src.bench.methods import PARTS, TORCHJD, bench


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_every_method_runs_in_the_step_benchmark():
    names = methods.available()
    med, failed = bench(K=3, names=names, rounds=1, warmup=0, batch=4, use_torchjd=True)
    assert failed == {}
    expected = {n for n in names if n != "connection_strength"} | {f"{n} [torchjd]" for n in TORCHJD}
    expected |= {"connection_strength [phase 1]", "connection_strength [phase 2]", "ls [task-BN]"}
    assert set(med) == expected
    for label, m in med.items():
        parts = sum(m[p] for p in PARTS)
        assert parts == pytest.approx(m["total"], rel=0.05, abs=2e-4), label  # the split accounts for the step
    assert med["ls"]["task grads"] == 0.0 and med["mgda"]["task grads"] > 0.0  # LS: one backward, no G
    assert med["mgda"]["aggregation"] > 0.0 and med["mgda [torchjd]"]["aggregation"] > 0.0
    assert med["connection_strength [phase 1]"]["optim."] > 0.0
