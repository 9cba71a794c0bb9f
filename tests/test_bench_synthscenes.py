"""The synthscenes benchmark: renderer geometry, labels/edges, determinism, metrics, contract."""

import json
import math

import numpy as np
import pytest
import torch

from mtl_src import benchmarks, render
from mtl_src.autodiff import loss_parts
from mtl_src.benchmarks import synthscenes as ss
from mtl_src.train import train

ALL = ("segmentation", "depth", "normal", "edge")


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    b = benchmarks.make("synthscenes", data_root=str(tmp_path_factory.mktemp("ss")), tasks=ALL, n_train=24, n_test=12)
    b.datasets()
    return b


def _surface_distance(X, inst, scene, n_paint):
    """|signed distance| of back-projected points X (P, 3) to the surface of their instance (independent
    of the renderer's intersection code)."""
    d = np.full(len(X), np.nan)
    room = scene.room
    for plane in range(6):  # room planes, paintings lie on walls 0, 1 (x) and 3 (y max)
        m = inst == plane
        d[m] = X[m, plane // 2] - room[plane]
    for k in range(n_paint):
        m = inst == 6 + k
        wall = scene.painting_wall[k]
        d[m] = X[m, wall // 2] - room[wall]
    base = 6 + n_paint
    for k in range(len(scene.box_center)):
        m = inst == base + k
        c, s = math.cos(scene.box_yaw[k]), math.sin(scene.box_yaw[k])
        rel = X[m] - scene.box_center[k]
        local = np.stack([c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1], rel[:, 2]], 1)
        d[m] = np.max(np.abs(local) - scene.box_half[k], axis=1)  # 0 on the surface of a box
    base += len(scene.box_center)
    for k in range(len(scene.sphere_center)):
        m = inst == base + k
        d[m] = np.linalg.norm(X[m] - scene.sphere_center[k], axis=1) - scene.sphere_radius[k]
    base += len(scene.sphere_center)
    for k in range(len(scene.cyl_center)):
        m = inst == base + k
        rho = np.linalg.norm(X[m, :2] - scene.cyl_center[k], axis=1)
        d[m] = np.maximum(rho - scene.cyl_radius[k], X[m, 2] - scene.cyl_height[k])
    return np.abs(d)


# ------------------------------------------------------------------------------------------------
# Renderer geometry
# ------------------------------------------------------------------------------------------------

def _one_sphere_scene(cam_pos, yaw, pitch, dist, radius, W=65, H=49):
    cam = render.Camera.looking(cam_pos, yaw, pitch, 0.0, W, H)
    center = cam.position + dist * cam.rotation[:, 2]  # on the optical axis
    scene = render.Scene(
        room=np.array([-10.0, 10.0, -10.0, 10.0, 0.0, 6.0]), floor_albedo=np.full(3, 0.5),
        wall_albedo=np.full(3, 0.7), ceiling_albedo=np.full(3, 0.9), light=np.array([0.0, 0.0, 5.9]),
        sphere_center=center[None], sphere_radius=np.array([radius]), sphere_albedo=np.array([[1.0, 0.0, 0.0]]))
    return scene, cam


@pytest.mark.parametrize("yaw,pitch", [(0.0, 0.0), (0.4, -0.3), (-0.7, 0.2)])
def test_sphere_on_the_optical_axis(yaw, pitch):
    scene, cam = _one_sphere_scene([0.5, -1.0, 2.5], yaw, pitch, dist=4.0, radius=0.75)
    out = render.render(scene, cam)
    cy, cx = cam.height // 2, cam.width // 2  # odd sizes: this pixel's ray is the optical axis
    assert out["depth"][cy, cx] == pytest.approx(4.0 - 0.75, abs=1e-9)
    np.testing.assert_allclose(out["normal"][cy, cx], [0.0, 0.0, -1.0], atol=1e-9)
    assert out["label"][cy, cx] == render.SPHERE
    # the sphere's silhouette: apparent radius asin(r / dist) around the axis
    r_px = cam.fx * math.tan(math.asin(0.75 / 4.0))
    assert out["label"][cy, cx + int(r_px) - 1] == render.SPHERE
    assert out["label"][cy, cx + int(r_px) + 2] != render.SPHERE


def test_depth_is_along_the_optical_axis_and_points_lie_on_their_surfaces():
    for i in range(4):
        rng = np.random.default_rng([7, 0, i])
        scene, cam = render.random_scene(rng, 64, 48)
        out = render.render(scene, cam)
        d_cam = np.linalg.solve(cam.rotation, cam.ray_directions().T).T
        np.testing.assert_allclose(d_cam[:, 2], 1.0, atol=1e-12)  # unnormalised rays: t = camera z
        X = cam.position + out["depth"].reshape(-1, 1) * cam.ray_directions()
        X_cam = (X - cam.position) @ cam.rotation  # R^T (X - o)
        np.testing.assert_allclose(X_cam[:, 2], out["depth"].ravel(), atol=1e-9)
        dist = _surface_distance(X, out["instance"].ravel(), scene, len(scene.painting_wall))
        assert not np.isnan(dist).any()
        assert dist.max() < 1e-7
        assert (out["depth"] > 0).all()


def test_normals_are_unit_face_the_camera_and_the_floor_points_up():
    for i in range(4):
        rng = np.random.default_rng([7, 1, i])
        scene, cam = render.random_scene(rng, 64, 48)
        out = render.render(scene, cam)
        n = out["normal"].reshape(-1, 3)
        np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-12)
        d_cam = np.linalg.solve(cam.rotation, cam.ray_directions().T).T
        assert ((n * d_cam).sum(1) < 0).all()
        lab = out["label"].ravel()
        world = n @ cam.rotation.T  # R n_cam, row-wise
        assert (lab == render.FLOOR).sum() > 50
        np.testing.assert_allclose(world[lab == render.FLOOR], np.tile([0, 0, 1.0], ((lab == render.FLOOR).sum(), 1)), atol=1e-12)
        np.testing.assert_allclose(world[lab == render.CEILING][:, 2], -1.0, atol=1e-12)
        np.testing.assert_allclose(world[lab == render.WALL][:, 2], 0.0, atol=1e-12)


def test_box_face_on_depth_and_normal():
    cam = render.Camera.looking([0.0, 0.0, 1.0], 0.0, 0.0, 0.0, 33, 25)
    scene = render.Scene(
        room=np.array([-5.0, 5.0, -1.0, 9.0, 0.0, 3.0]), floor_albedo=np.full(3, 0.5), wall_albedo=np.full(3, 0.7),
        ceiling_albedo=np.full(3, 0.9), light=np.array([0.0, 1.0, 2.9]),
        box_center=np.array([[0.0, 3.0, 1.0]]), box_half=np.array([[0.5, 0.5, 1.0]]), box_yaw=np.array([0.0]),
        box_albedo=np.array([[0.2, 0.3, 0.4]]))
    out = render.render(scene, cam)
    c = (12, 16)
    assert out["label"][c] == render.BOX
    assert out["depth"][c] == pytest.approx(2.5, abs=1e-12)  # front face at y = 3 - 0.5
    np.testing.assert_allclose(out["normal"][c], [0, 0, -1.0], atol=1e-12)
    # the back wall: plane y = 9, depth 9 wherever visible (camera looks along +y)
    wall = out["instance"] == 3
    np.testing.assert_allclose(out["depth"][wall], 9.0, atol=1e-9)


# ------------------------------------------------------------------------------------------------
# Labels and edges
# ------------------------------------------------------------------------------------------------

def test_edges_are_exactly_the_instance_boundaries():
    rng = np.random.default_rng([3, 0, 5])
    scene, cam = render.random_scene(rng, 64, 48)
    out = render.render(scene, cam)
    inst, lab, edge = out["instance"], out["label"], out["edge"]
    H, W = inst.shape
    expect = np.zeros_like(edge)
    for y in range(H):
        for x in range(W):
            for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
                yy, xx = y + dy, x + dx
                if 0 <= yy < H and 0 <= xx < W and inst[yy, xx] != inst[y, x]:
                    expect[y, x] = True
    np.testing.assert_array_equal(edge, expect)
    # every semantic boundary is an edge, on both sides
    ch = lab[:, 1:] != lab[:, :-1]
    assert ch.any() and edge[:, 1:][ch].all() and edge[:, :-1][ch].all()
    cv = lab[1:] != lab[:-1]
    assert edge[1:][cv].all() and edge[:-1][cv].all()
    # each instance has a single class
    for i in np.unique(inst):
        assert len(np.unique(lab[inst == i])) == 1


def test_labels_match_the_primitives():
    rng = np.random.default_rng([3, 0, 1])
    scene, cam = render.random_scene(rng, 64, 48)
    out = render.render(scene, cam)
    inst, lab = out["instance"], out["label"]
    n_p = len(scene.painting_wall)
    nb, ns = len(scene.box_center), len(scene.sphere_center)
    expect = {0: render.WALL, 1: render.WALL, 2: render.WALL, 3: render.WALL, 4: render.FLOOR, 5: render.CEILING}
    expect.update({6 + k: render.PAINTING for k in range(n_p)})
    expect.update({6 + n_p + k: render.BOX for k in range(nb)})
    expect.update({6 + n_p + nb + k: render.SPHERE for k in range(ns)})
    expect.update({6 + n_p + nb + ns + k: render.CYLINDER for k in range(len(scene.cyl_center))})
    for i in np.unique(inst):
        assert (lab[inst == i] == expect[int(i)]).all()


# ------------------------------------------------------------------------------------------------
# Benchmark contract
# ------------------------------------------------------------------------------------------------

def test_builds_with_the_contract(bench):
    assert "synthscenes" in benchmarks.available()
    assert bench.tasks == list(ALL) and bench.stl_baseline is None
    names = [m.name for m in bench.metrics]
    assert names == ["seg_miou", "seg_pixacc", "depth_abs", "depth_rel", "normal_mean", "normal_median",
                     "normal_11.25", "normal_22.5", "normal_30", "edge_odsf"]
    assert {m.name for m in bench.metrics if m.higher_is_better} == {
        "seg_miou", "seg_pixacc", "normal_11.25", "normal_22.5", "normal_30", "edge_odsf"}
    data = bench.datasets()
    assert set(data) == {"train", "test"} and (len(data["train"]), len(data["test"])) == (24, 12)
    json.dumps(bench.config())
    for profile in ("fast", "paper"):
        b = benchmarks.make("synthscenes", profile=profile)  # lazy: builds no data
        assert set(b.training()) == {"epochs", "batch_size", "lr", "optimizer", "weight_decay", "lr_schedule"}
    assert benchmarks.make("synthscenes", profile="paper").training()["lr_schedule"] == "step:100:0.5"
    three = benchmarks.make("synthscenes")
    assert three.tasks == ["segmentation", "depth", "normal"] and three.K == 3
    # the trainer asks kpis({}) whether KPIs exist (DTP): a tensor, NaN where values are missing
    k = three.kpis({})
    assert k is not None and k.shape == (3,) and bool(torch.isnan(k).all())
    k = three.kpis({"seg_miou": 0.4, "depth_rel": 0.25, "normal_30": 0.7})
    torch.testing.assert_close(k, torch.tensor([0.4, 0.75, 0.7]))


def test_bad_options_raise_one_clear_error():
    with pytest.raises(ValueError, match="tasks must be"):
        benchmarks.make("synthscenes", tasks=("segmentation", "sky"))
    with pytest.raises(ValueError, match="multiples of 8"):
        benchmarks.make("synthscenes", image_size=(50, 64))
    with pytest.raises(ValueError, match="n_train"):
        benchmarks.make("synthscenes", n_train=0)


def test_items_have_the_right_shapes_dtypes_and_ranges(bench):
    H, W = bench.image_size
    x, y = bench.datasets()["train"][3]
    assert x.shape == (3, H, W) and x.dtype == torch.float32
    assert set(y) == set(ALL)
    assert y["segmentation"].shape == (H, W) and y["segmentation"].dtype == torch.int64
    assert 0 <= int(y["segmentation"].min()) and int(y["segmentation"].max()) < len(ss.CLASSES)
    assert y["depth"].shape == (1, H, W) and (y["depth"] > 0).all() and (y["depth"] < 15).all()
    assert y["normal"].shape == (3, H, W)
    torch.testing.assert_close(y["normal"].norm(dim=0), torch.ones(H, W))
    assert y["edge"].shape == (1, H, W) and set(y["edge"].unique().tolist()) <= {0.0, 1.0}
    assert 0.02 < float(y["edge"].mean()) < 0.5
    xs = torch.stack([bench.datasets()["train"][i][0] for i in range(24)])
    torch.testing.assert_close(xs.mean((0, 2, 3)), torch.zeros(3), atol=1e-4, rtol=0)  # standardised
    torch.testing.assert_close(xs.std((0, 2, 3)), torch.ones(3), atol=1e-3, rtol=0)
    a = bench.arrays()
    counts = np.bincount(a["train_label"].ravel(), minlength=len(ss.CLASSES))
    assert (counts[[render.FLOOR, render.WALL, render.BOX, render.SPHERE]] > 0).all()


def test_same_seed_same_data_and_a_cache(tmp_path, bench, monkeypatch):
    a = benchmarks.make("synthscenes", data_root=str(tmp_path / "a"), n_train=24, n_test=12).arrays()
    ref = bench.arrays()
    assert set(a) == set(ref)
    for k in a:
        np.testing.assert_array_equal(a[k], ref[k])
    # scene i does not depend on the split sizes; another seed gives other scenes
    small = benchmarks.make("synthscenes", data_root=str(tmp_path / "b"), n_train=5, n_test=2).arrays()
    np.testing.assert_array_equal(small["train_depth"], ref["train_depth"][:5])
    other = benchmarks.make("synthscenes", data_root=str(tmp_path / "c"), seed=1, n_train=5, n_test=2).arrays()
    assert not np.array_equal(other["train_depth"], small["train_depth"])
    # the second build reads the cache (no rendering)
    monkeypatch.setattr(ss, "_render_split", lambda *a, **k: pytest.fail("rendered again instead of loading the cache"))
    again = benchmarks.make("synthscenes", data_root=str(tmp_path / "a"), n_train=24, n_test=12, tasks=ALL).arrays()
    np.testing.assert_array_equal(again["test_rgb"], ref["test_rgb"])


def test_parallel_rendering_gives_the_same_data(tmp_path, bench):
    par = ss._render_split(0, 1, 12, 48, 64, workers=2)
    np.testing.assert_array_equal(par["depth"], bench.arrays()["test_depth"])
    np.testing.assert_array_equal(par["rgb"], bench.arrays()["test_rgb"])


def test_model_shapes(bench):
    torch.manual_seed(0)
    model = bench.build_model()
    x = torch.stack([bench.datasets()["train"][i][0] for i in range(2)])
    z, outs = model(x)
    H, W = bench.image_size
    assert z.shape == (2, bench.widths[0], H, W)
    assert [tuple(o.shape) for o in outs] == [(2, 7, H, W), (2, 1, H, W), (2, 3, H, W), (2, 1, H, W)]
    torch.testing.assert_close(outs[2].norm(dim=1), torch.ones(2, H, W))
    # task-specific BNs after the decoder's last conv (default), one group of widths[0] channels
    (group,) = model.task_bn_groups()
    assert group.weight.shape[0] == bench.widths[0] and len(group.gamma) == len(bench.tasks)
    assert id(group.weight) in {id(p) for p in model.shared_parameters()}
    plain = benchmarks.make("synthscenes", data_root=bench.data_root, tasks=ALL, n_train=24, n_test=12,
                            task_bn=False).build_model()
    assert not hasattr(plain, "task_bn_groups") and plain(x)[0].shape == z.shape


def test_connection_strength_measures_priorities_on_the_segnet(bench):
    df = train(bench, "connection_strength", epochs=1, batch_size=12, lr=1e-3).frame()
    shares = df[df.metric.str.startswith("top_share_l0_")]
    assert len(shares) == len(bench.tasks) and shares.value.sum() == pytest.approx(1.0)


def test_ls_trains_one_epoch_and_every_metric_is_finite(bench):
    res = train(bench, "ls", epochs=1, batch_size=12, lr=1e-3)
    df = res.frame()
    test = df[df.split == "test"].set_index("metric").value
    assert list(test.index) == [m.name for m in bench.metrics]
    assert np.isfinite(test.to_numpy()).all()
    assert 0 <= test["seg_miou"] <= 1 and 0 <= test["edge_odsf"] <= 1 and 0 <= test["normal_mean"] <= 180
    losses = df[df.metric.str.startswith("loss_")].value
    assert len(losses) == 4 and np.isfinite(losses).all() and (losses > 0).all()
    k = bench.kpis(dict(test))
    assert k.shape == (4,) and bool(((k >= 0) & (k <= 1)).all())


# ------------------------------------------------------------------------------------------------
# Losses and metrics
# ------------------------------------------------------------------------------------------------

def _perfect_outputs(y):
    seg = torch.nn.functional.one_hot(y["segmentation"], 7).permute(0, 3, 1, 2).float() * 10
    return [seg, y["depth"].clone(), y["normal"].clone(), (y["edge"] * 2 - 1) * 20]


def _batch(bench, n=6):
    xs, ys = zip(*[bench.datasets()["test"][i] for i in range(n)])
    return torch.stack(xs), {k: torch.stack([y[k] for y in ys]) for k in ys[0]}


def _scores(bench, outs, y):
    meters = bench.meters()
    bench.update_meters(meters, outs, y)
    return bench.results(meters)


def test_metrics_and_losses_of_perfect_predictions(bench):
    x, y = _batch(bench)
    outs = _perfect_outputs(y)
    v = _scores(bench, outs, y)
    assert list(v) == [m.name for m in bench.metrics]
    assert v["seg_miou"] == 1.0 and v["seg_pixacc"] == 1.0
    assert v["depth_abs"] == 0.0 and v["depth_rel"] == 0.0
    assert v["normal_mean"] < 1e-3 and v["normal_median"] < 1e-2
    assert v["normal_11.25"] == v["normal_22.5"] == v["normal_30"] == 1.0
    assert v["edge_odsf"] == pytest.approx(1.0)
    losses = bench.losses(outs, (x, y))
    assert loss_parts(losses) is not None  # stack_losses: per-task backwards skip the other heads
    assert losses[1] == 0 and abs(float(losses[2])) < 1e-6 and losses[0] < 1e-3


def test_metrics_and_losses_on_known_errors(bench):
    _, y = _batch(bench)
    outs = _perfect_outputs(y)
    # depth 10 % too far: rel = 0.1, abs = 0.1 * mean depth (pooled over pixels)
    outs[1] = y["depth"] * 1.1
    # normals rotated by 20 degrees about an axis orthogonal to each: every angle error is 20 degrees
    n = y["normal"]
    axis = torch.nn.functional.normalize(torch.linalg.cross(n, torch.roll(n, 1, dims=1) + 0.3, dim=1), dim=1)
    a = math.radians(20)
    outs[2] = math.cos(a) * n + math.sin(a) * torch.linalg.cross(axis, n, dim=1)
    # segmentation: predict "wall" wherever the truth is "floor"
    seg = y["segmentation"].clone()
    seg[seg == render.FLOOR] = render.WALL
    outs[0] = torch.nn.functional.one_hot(seg, 7).permute(0, 3, 1, 2).float()
    v = _scores(bench, outs, y)
    assert v["depth_rel"] == pytest.approx(0.1, rel=1e-5)
    assert v["depth_abs"] == pytest.approx(0.1 * float(y["depth"].double().mean()), rel=1e-5)
    assert v["normal_mean"] == pytest.approx(20.0, abs=1e-3) and v["normal_median"] == pytest.approx(20.0, abs=2e-3)
    assert (v["normal_11.25"], v["normal_22.5"], v["normal_30"]) == (0.0, 1.0, 1.0)
    lab = y["segmentation"]
    nf, nw = int((lab == render.FLOOR).sum()), int((lab == render.WALL).sum())
    assert nf > 0 and nw > 0
    assert v["seg_pixacc"] == pytest.approx(1 - nf / lab.numel())
    present = len(lab.unique())
    # floor IoU 0, wall IoU nw / (nw + nf), every other present class 1
    assert v["seg_miou"] == pytest.approx((present - 2 + nw / (nw + nf)) / present)
    assert float(ss._normal_loss(outs[2], n)) == pytest.approx(1 - math.cos(a), abs=1e-5)
    # zero depth / zero normal = missing, ignore_index = unlabelled: left out of losses and metrics
    d, p = y["depth"].clone(), y["depth"].clone()
    d[..., :10] = 0
    p[..., :10] = 99.0
    assert float(ss._depth_loss(p, d)) == 0.0
    nn_ = n.clone()
    nn_[..., :10] = 0
    q = n.clone()
    q[..., :10] = -q[..., :10]
    assert abs(float(ss._normal_loss(q, nn_))) < 1e-6
    lg = torch.nn.functional.one_hot(y["segmentation"], 7).permute(0, 3, 1, 2).float() * 50
    t = y["segmentation"].clone()
    assert float(ss._seg_loss(lg, t)) < 1e-6
    t[..., :10] = (t[..., :10] + 1) % 7
    assert float(ss._seg_loss(lg, t)) > 1.0
    t[..., :10] = ss.IGNORE_INDEX
    assert float(ss._seg_loss(lg, t)) < 1e-6


def test_edge_odsf_tolerance_is_one_pixel_at_48x64(bench):
    assert bench.image_size == (48, 64)
    gt = torch.zeros(1, 1, 48, 64)
    gt[..., 20] = 1.0  # a vertical line
    values = {}
    for shift in (0, 1, 2):
        m = bench.meters()["edge"]
        m.update(torch.roll(gt, shift, dims=3) * 0.9, gt)
        values[shift] = m.compute()
    assert values[0] == pytest.approx(1.0) and values[1] == pytest.approx(1.0) and values[2] == 0.0
    m = bench.meters()["edge"]
    pred = gt.clone()
    pred[..., 40] = 1.0  # as many false positives as true ones: P = 1/2, R = 1
    m.update(pred, gt)
    assert m.compute() == pytest.approx(2 * 0.5 / 1.5)
    # balanced BCE: positives weigh 0.95, negatives 0.05
    lg = torch.zeros(1, 1, 1, 2)
    e = torch.tensor([[[[1.0, 0.0]]]])
    assert float(ss._edge_loss(lg, e)) == pytest.approx((0.95 + 0.05) * math.log(2) / 2)


def test_evaluate_restores_the_mode_and_perfect_model_scores(bench):
    class Oracle(torch.nn.Module):
        """Returns the ground truth of the batch it is given (looked up by the input)."""

        def __init__(self, xs, ys):
            super().__init__()
            self.xs, self.ys = xs, ys

        def forward(self, x):
            i = [int(torch.argmin(((self.xs - xi) ** 2).flatten(1).sum(1))) for xi in x]
            y = {k: v[i] for k, v in self.ys.items()}
            return x, _perfect_outputs(y)

    xs, ys = _batch(bench, 12)
    model = Oracle(xs, ys)
    model.train()
    loader = torch.utils.data.DataLoader(bench.datasets()["test"], batch_size=5)
    v = bench.evaluate(model, loader, torch.device("cpu"))
    assert model.training
    assert v["seg_miou"] == 1.0 and v["depth_abs"] == 0.0 and v["edge_odsf"] == pytest.approx(1.0)


def test_validation_split_is_rendered_apart_and_keeps_the_fast_cache_key(tmp_path):
    from mtl_src import benchmarks

    plain = benchmarks.make("synthscenes", profile="fast", data_root=str(tmp_path), n_train=4, n_test=4)
    with_val = benchmarks.make("synthscenes", profile="fast", data_root=str(tmp_path), n_train=4, n_test=4, n_val=3)
    assert "n_val" not in plain.data_config() and with_val.data_config()["n_val"] == 3
    ds = with_val.datasets()
    assert {k: len(v) for k, v in ds.items()} == {"train": 4, "val": 3, "test": 4}
    a = with_val.arrays()
    for other in ("train", "test"):  # the validation scenes are their own draws
        assert not any((a["val_rgb"][i] == a[f"{other}_rgb"][j]).all() for i in range(3) for j in range(4))
    ref = benchmarks.make("synthscenes", profile="reference", data_root=str(tmp_path))
    assert ref.n_val > 0 and ref.training()["eval_splits"] == ("val", "test")
    with pytest.raises(ValueError, match="n_val"):
        benchmarks.make("synthscenes", profile="fast", n_val=-1)
