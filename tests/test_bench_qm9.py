"""The real QM9 benchmark (qm9pack csv files): counts, units, splits, standardisation, graphs, training."""

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("rdkit")
pytest.importorskip("torch_geometric")

from mtl_src import benchmarks  # noqa: E402
from mtl_src.autodiff import loss_parts  # noqa: E402
from mtl_src.benchmarks import qm9 as Q  # noqa: E402
from mtl_src.benchmarks.base import MTLModel  # noqa: E402
from mtl_src.data import MissingDataError  # noqa: E402
from mtl_src.train import train  # noqa: E402

SMALL = dict(n_molecules=300, n_train=200, n_val=50, n_test=50, complete=True)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # tiny graphs: intra-op threads only add overhead (and stall on a busy machine)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    b = benchmarks.make("qm9", data_root=str(tmp_path_factory.mktemp("qm9")), **SMALL)
    b.datasets()
    return b


def test_registered_with_the_contract(bench):
    assert "qm9" in benchmarks.available()
    assert bench.tasks == ["mu", "alpha", "homo", "lumo", "r2", "zpve", "U0", "U", "H", "G", "cv"]
    assert [m.name for m in bench.metrics] == [f"mae_{t}" for t in bench.tasks]
    assert not any(m.higher_is_better for m in bench.metrics)
    assert bench.stl_baseline is None and bench.kpis({}) is None
    assert set(bench.datasets()) == {"train", "val", "test"}
    for profile in ("fast", "paper"):
        t = benchmarks.make("qm9", profile=profile, data_root="/nonexistent-not-touched").training()
        assert set(t) == {"epochs", "batch_size", "lr", "optimizer", "weight_decay", "lr_schedule"}
    assert benchmarks.make("qm9", profile="paper").training()["epochs"] == 300


def test_the_csv_holds_the_130831_characterised_molecules():
    df = Q.read_raw()
    assert len(df) == Q.N_MOLECULES == 130_831
    idx = df["Index"].to_numpy()
    assert idx.min() == 1 and idx.max() == 133_885 and len(np.unique(idx)) == len(idx)
    assert 133_885 - len(df) == 3_054  # the uncharacterised molecules are absent
    assert not df[Q._RAW_COLUMNS].isna().any().any()
    # the two cages whose GDB SMILES is not the bond graph of the relaxed geometry use its own bonds
    Chem, rdb = Q._rdkit()
    for smi in ("CC1C2C3C4=CCC13C24", "CN1C2C3C4=CCC13C24"):
        row = df.index[df["SMILES"] == smi][0]
        el = Q._elements(df["Elements"][row])
        xyz = np.array(df["XYZ_Ang"][row].replace("[", "").replace("]", "").split(","), float).reshape(-1, 3)
        feats, bonds, fallback = Q._graph(smi, el, xyz, Chem, rdb)
        assert fallback and feats.shape == (len(el), 4)
        assert all(np.linalg.norm(xyz[i] - xyz[j]) < 1.8 for i, j, _ in bonds)
        h = [k for k, e in enumerate(el) if e == "H"]
        assert all(sum(k in b[:2] for b in bonds) == 1 for k in h)


# torch_geometric's QM9 y[0] (methane, gdb_1) at the 11 target indices [0,1,2,3,5,6,12,13,14,15,11]
METHANE_PYG = [0.0, 13.21, -10.5499, 3.1865, 35.3641, 1.2177, -17.1722, -17.2868, -17.3897, -16.1519, 6.469]


def test_units_match_torch_geometric_on_methane():
    df = Q.read_raw(3)
    assert df["SMILES"][0] == "C"
    y = Q.to_pyg_units(df[Q._RAW_COLUMNS].to_numpy(), [Q._elements(e) for e in df["Elements"]])
    np.testing.assert_allclose(y[0], METHANE_PYG, atol=2e-3)
    # water: HOMO -0.2928 Ha = -7.9675 eV; atomization U0 = -76.404702 - O - 2 H (Hartree) in eV
    assert y[2, 2] == pytest.approx(-0.2928 * 27.211386246, abs=1e-6)
    u0 = (-76.404702 - (-75.064579) - 2 * (-0.500273)) * 27.211386246
    assert y[2, 6] == pytest.approx(u0, abs=1e-6)


def test_atom_reference_energies_agree_with_torch_geometric():
    from torch_geometric.datasets.qm9 import atomrefs

    for k in range(4):  # PyG targets 7..10 = U0, U, H, G; columns H, C, N, O, F (eV)
        ours = np.array([Q.ATOM_REF_HARTREE[e][k] for e in Q.ELEMENTS]) * Q.HAR2EV
        np.testing.assert_allclose(ours, atomrefs[7 + k], atol=2e-4)


def test_shapes_dtypes_and_ranges(bench):
    d = bench.datasets()
    assert {k: len(v) for k, v in d.items()} == {"train": 200, "val": 50, "test": 50}
    g = d["train"].graph(0)
    n = g.x.shape[0]
    assert g.x.shape == (n, 11) and g.x.dtype == torch.float32
    assert g.edge_index.shape == (2, n * (n - 1)) and g.edge_index.dtype == torch.long  # complete graph
    assert g.edge_attr.shape == (n * (n - 1), 5) and g.y.shape == (1, 11)
    a = bench.arrays()
    assert set(np.unique(a["z"])) <= {1, 6, 7, 8, 9}
    assert a["y"].dtype == np.float64 and np.isfinite(a["y"]).all()
    y = a["y"]
    assert (y[:, 0] >= 0).all() and (y[:, 1] > 0).all() and (y[:, 4] > 0).all() and (y[:, 10] > 0).all()
    assert (y[:, 2] < 0).all() and (y[:, 6:10] < 0).all()  # HOMO below vacuum, molecules are bound
    assert (y[:, 3] > y[:, 2]).all()  # LUMO above HOMO
    batch = bench.collate([d["train"][i] for i in range(5)])
    assert batch.num_graphs == 5 and batch.y.shape == (5, 11)
    assert batch.x.shape[0] == sum(d["train"].graph(i).x.shape[0] for i in range(5))


def _reference_graph(a, r, complete=True):
    """Molecule r of the parsed arrays, built the slow obvious way (dense bond matrix)."""
    s, e = a["atom_off"][r], a["atom_off"][r + 1]
    n = int(e - s)
    z = a["z"][s:e].astype(int)
    pos = a["pos"][s:e].astype(np.float64)
    bonds = a["bonds"][a["bond_off"][r]:a["bond_off"][r + 1]].astype(int)
    B = np.full((n, n), -1)
    B[bonds[:, 0], bonds[:, 1]] = bonds[:, 2]
    B[bonds[:, 1], bonds[:, 0]] = bonds[:, 2]
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j and (complete or B[i, j] >= 0)]
    attr = np.zeros((len(pairs), 5))
    for k, (i, j) in enumerate(pairs):
        if B[i, j] >= 0:
            attr[k, B[i, j]] = 1
        attr[k, 4] = np.linalg.norm(pos[i] - pos[j])
    x = np.zeros((n, 11))
    for i in range(n):
        x[i, [1, 6, 7, 8, 9].index(z[i])] = 1
        x[i, 5] = z[i]
        x[i, 10] = sum(1 for j in range(n) if B[i, j] >= 0 and z[j] == 1)
    x[:, 6:10] = a["atom_feats"][s:e]
    return x, np.array(pairs).T, attr


@pytest.mark.parametrize("complete", [True, False])
def test_vectorised_batch_equals_per_molecule_graphs(bench, complete):
    ds = bench.datasets()["val"]
    ds = type(ds)(ds.mols, ds.rows, np.zeros((ds.rows.max() + 1, 11)), complete)
    ks = [3, 0, 7, 7, 12]
    batch = ds.batch(ks)
    xs, eis, attrs, off = [], [], [], 0
    for k in ks:
        x, ei, attr = _reference_graph(bench.arrays(), ds.rows[k], complete)
        xs.append(x), eis.append(ei + off), attrs.append(attr)
        off += len(x)
    np.testing.assert_allclose(batch.x.numpy(), np.concatenate(xs))
    np.testing.assert_array_equal(batch.edge_index.numpy(), np.concatenate(eis, axis=1))
    np.testing.assert_allclose(batch.edge_attr.numpy(), np.concatenate(attrs), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(batch.batch.numpy(), np.repeat(np.arange(5), [len(x) for x in xs]))


def test_splits_are_disjoint_and_follow_the_paper_protocol(bench):
    a = bench.arrays()
    tr, va, te = (set(a["index"][a[f"split_{s}"]]) for s in ("train", "val", "test"))
    assert len(tr) == 200 and len(va) == 50 and len(te) == 50
    assert not (tr & va) and not (tr & te) and not (va & te)
    paper = benchmarks.make("qm9", profile="paper")
    rows = paper.split_rows(Q.N_MOLECULES)  # no parsing needed
    assert {k: len(v) for k, v in rows.items()} == {"test": 10_000, "val": 10_000, "train": 110_831}
    assert len(np.unique(np.concatenate(list(rows.values())))) == Q.N_MOLECULES


def test_standardisation_uses_train_statistics_only(bench):
    a = bench.arrays()
    y = a["y"]
    tr = a["split_train"]
    np.testing.assert_allclose(bench.target_mean, y[tr].mean(0), rtol=1e-12)
    np.testing.assert_allclose(bench.target_std, y[tr].std(0, ddof=1), rtol=1e-12)
    assert not np.allclose(bench.target_mean, y.mean(0))  # the whole pool would give other numbers
    ytr = bench.datasets()["train"].y.double()
    np.testing.assert_allclose(ytr.mean(0).numpy(), 0, atol=1e-5)
    np.testing.assert_allclose(ytr.std(0).numpy(), 1, atol=1e-5)
    yte = bench.datasets()["test"].y.double().numpy()
    np.testing.assert_allclose(yte, (y[a["split_test"]] - bench.target_mean) / bench.target_std, atol=1e-5)


def test_graphs_are_sane(bench):
    from rdkit import Chem

    a = bench.arrays()
    assert not a["fallback"].any()  # every SMILES maps onto its geometry in this subset
    for ds in bench.datasets().values():
        for k in range(len(ds)):
            r = ds.rows[k]
            s, e = a["atom_off"][r], a["atom_off"][r + 1]
            z = a["z"][s:e].astype(int)
            mol = Chem.AddHs(Chem.MolFromSmiles(str(a["smiles"][r])))
            assert sorted(z) == sorted(at.GetAtomicNum() for at in mol.GetAtoms())  # formula from SMILES
            g = ds.graph(k)
            ei, attr = g.edge_index.numpy(), g.edge_attr.numpy()
            assert (ei[0] != ei[1]).all()
            pairs = {(i, j): tuple(v) for i, j, v in zip(ei[0], ei[1], attr)}
            assert all(pairs[(j, i)] == v for (i, j), v in pairs.items())  # symmetric, same features
            bonded = attr[:, :4].sum(1)
            assert set(np.unique(bonded)) <= {0.0, 1.0}
            assert int(bonded.sum()) // 2 == mol.GetNumBonds()
            lengths = attr[bonded == 1, 4]
            assert lengths.min() > 0.9 and lengths.max() < 1.8  # bonds are short in the geometry
            h_deg = np.bincount(ei[0][bonded == 1], minlength=len(z))[z == 1]
            assert (h_deg == 1).all()  # every H has exactly one bond
            assert g.x[:, 10].sum() == (z == 1).sum()  # each H counted once as a neighbour


def test_smiles_atom_order_differing_from_the_coordinates_is_mapped():
    Chem, rdb = Q._rdkit()
    df = Q.read_raw(300)
    row = df.index[df["SMILES"] == "C#CC#N"][0]  # xyz order C, C, C, H, N: SMILES order C, C, C, N
    el = Q._elements(df["Elements"][row])
    xyz = np.array(df["XYZ_Ang"][row].replace("[", "").replace("]", "").split(","), float).reshape(-1, 3)
    feats, bonds, fallback = Q._graph("C#CC#N", el, xyz, Chem, rdb)
    assert not fallback
    n_idx = el.index("N")
    triples = {tuple(sorted(b[:2])) for b in bonds if b[2] == 2}
    assert any(n_idx in t for t in triples)  # the C#N triple bond ends on the N of the coordinates
    for i, j, _ in bonds:
        assert np.linalg.norm(xyz[i] - xyz[j]) < 1.5


def test_metric_is_mae_in_the_papers_units(bench):
    """A model off by c (standardised units) on every target has MAE = c * std, energies in meV."""
    c = torch.linspace(0.1, 1.1, 11)

    class Echo(nn.Module):
        def forward(self, data):
            return data.y

    class Pick(nn.Module):
        def __init__(self, k):
            super().__init__()
            self.k = k

        def forward(self, z):
            return z[:, self.k: self.k + 1] + c[self.k]

    model = MTLModel(Echo(), [Pick(k) for k in range(11)])
    loader = torch.utils.data.DataLoader(bench.datasets()["test"], batch_size=16, collate_fn=bench.collate)
    vals = bench.evaluate(model, loader, torch.device("cpu"))
    assert model.training
    for k, t in enumerate(bench.tasks):
        scale = 1000.0 if t in ("homo", "lumo", "zpve", "U0", "U", "H", "G") else 1.0
        assert vals[f"mae_{t}"] == pytest.approx(float(c[k]) * bench.target_std[k] * scale, rel=1e-4)


def test_model_shapes_and_representation(bench):
    torch.manual_seed(0)
    model = bench.build_model()
    batch = bench.collate([bench.datasets()["train"][i] for i in range(7)])
    z, outs = model(bench.inputs(batch))
    assert z.shape == (7, bench.dim) and len(outs) == 11 and all(o.shape == (7, 1) for o in outs)
    losses = bench.losses(outs, batch)
    assert loss_parts(losses) is not None  # stack_losses: per-task backwards skip the other heads
    assert losses.shape == (11,) and torch.isfinite(losses).all()
    # a permutation of the molecules in the batch permutes Z (graph-level readout, no leakage)
    batch2 = bench.collate([bench.datasets()["train"][i] for i in reversed(range(7))])
    model.eval()
    with torch.no_grad():
        z1, _ = model(batch)
        z2, _ = model(batch2)
    torch.testing.assert_close(z1, z2.flip(0), atol=1e-5, rtol=1e-4)


def test_ls_trains_one_epoch_and_evaluates_every_metric(bench):
    # the fast profile's bond graph (the complete graph's forward is covered above); data from the cache
    b = benchmarks.make("qm9", data_root=bench.data_root, **{**SMALL, "complete": False})
    res = train(b, "ls", epochs=1, batch_size=50, lr=1e-3, eval_splits=("val", "test"))
    df = res.frame()
    for split in ("val", "test"):
        got = df[df.split == split].set_index("metric").value
        assert set(got.index) == {m.name for m in bench.metrics}
        assert np.isfinite(got).all() and (got > 0).all()
    loss = df[df.metric.str.startswith("loss_")]
    assert len(loss) == 11 and np.isfinite(loss.value).all()


def test_same_seed_same_data_and_cache(tmp_path, bench):
    b1 = benchmarks.make("qm9", data_root=str(tmp_path / "a"), **SMALL)
    b2 = benchmarks.make("qm9", data_root=str(tmp_path / "a"), **SMALL)  # from the cache
    ref = bench.arrays()
    for b in (b1, b2):
        a = b.arrays()
        assert set(a) == set(ref)
        for k in ref:
            np.testing.assert_array_equal(a[k], ref[k])
    assert len(list((tmp_path / "a" / "qm9").glob("*.npz"))) == 1
    g1, g2 = b1.datasets()["train"].graph(3), bench.datasets()["train"].graph(3)
    assert torch.equal(g1.x, g2.x) and torch.equal(g1.edge_attr, g2.edge_attr) and torch.equal(g1.y, g2.y)
    other = benchmarks.make("qm9", data_root=str(tmp_path / "b"), seed=1, **SMALL)
    assert not np.array_equal(np.sort(other.split_rows(300)["test"]), np.sort(bench.split_rows(300)["test"]))


def test_bad_options_and_missing_data_are_clear(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="split sizes"):
        benchmarks.make("qm9", n_molecules=100, n_train=200, n_val=10, n_test=10)
    with pytest.raises(ValueError, match="n_molecules"):
        benchmarks.make("qm9", n_molecules=0, n_train=2, n_val=0, n_test=0)
    with pytest.raises(ValueError, match="profile"):
        benchmarks.make("qm9", profile="huge")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "qm9pack" else real(name, *a))
    b = benchmarks.make("qm9", data_root=str(tmp_path), **SMALL)
    with pytest.raises(MissingDataError, match="pip install qm9pack"):
        b.datasets()


def test_seeds_share_one_parse_of_the_same_molecules(tmp_path):
    opts = dict(n_molecules=120, n_train=None, n_val=20, n_test=20)  # every seed uses all 120 molecules
    b0 = benchmarks.make("qm9", data_root=str(tmp_path), seed=0, **opts)
    b1 = benchmarks.make("qm9", data_root=str(tmp_path), seed=1, **opts)
    a0, a1 = b0.arrays(), b1.arrays()
    assert len(list((tmp_path / "qm9").glob("*.npz"))) == 1
    np.testing.assert_array_equal(a0["y"], a1["y"])
    assert len(a0["split_train"]) == 80
    assert not np.array_equal(np.sort(a0["split_test"]), np.sort(a1["split_test"]))
    ds = b1.datasets()
    np.testing.assert_allclose(ds["test"].y.numpy(), (a1["y"][a1["split_test"]] - b1.target_mean) / b1.target_std,
                               atol=1e-5)


def test_mean_predictor_and_target_table_use_the_report_units(tmp_path):
    from mtl_src.benchmarks.qm9 import QM9, UNITS

    b = QM9(data_root=str(tmp_path), n_molecules=300, n_train=200, n_val=50, n_test=50)
    mae = b.mean_predictor_mae("test")
    a = b.arrays()
    y = a["y"][a["split_test"]]
    k = b.tasks.index("homo")
    assert mae["mae_homo"] == pytest.approx(1000 * np.abs(y[:, k] - b.target_mean[k]).mean())  # eV -> meV
    k = b.tasks.index("mu")
    assert mae["mae_mu"] == pytest.approx(np.abs(y[:, k] - b.target_mean[k]).mean())
    table = b.target_table()
    assert list(table.columns) == b.tasks and table.loc["unit", "homo"] == UNITS["homo"] == "meV"
