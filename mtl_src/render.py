"""A small vectorised numpy ray caster for procedural indoor scenes (the ``synthscenes`` benchmark).

A scene is a closed box-shaped room (floor, four walls, ceiling; paintings are rectangles on the
walls) holding a few oriented boxes, spheres and vertical cylinders, lit by one point light with
hard shadows and an ambient term. :func:`render` casts one ray per pixel through a pinhole camera
and returns, per pixel: the RGB image, the semantic class, the instance (surface) id, the metric
depth, the unit surface normal and the edge map.

Conventions
-----------
* **World frame**: right-handed, ``x`` across the room, ``y`` into the room, ``z`` up; the floor is
  ``z = 0``.
* **Camera frame** (OpenCV/NYUv2 style): ``x`` right, ``y`` down, ``z`` forward (the optical axis).
  ``Camera.rotation`` maps camera to world coordinates (its columns are the camera axes in world
  coordinates), so ``n_world = R @ n_cam``.
* **Depth** is the camera-frame ``z`` of the hit point (distance along the optical axis, like a
  Kinect depth map), not the Euclidean distance along the ray. Rays are generated with camera-frame
  direction ``((u + 0.5 - cx) / fx, (v + 0.5 - cy) / fy, 1)``, so the ray parameter ``t`` *is* the
  depth.
* **Normals** are unit vectors in the camera frame, oriented towards the camera (``n . ray < 0``).
* **Edges** are the boundaries of the instance map: a pixel is an edge pixel when one of its four
  neighbours shows another surface (another object, another wall plane, a painting). That covers
  every semantic boundary, occlusion boundaries between objects of the same class, and the creases
  where two room planes meet; boundaries are two pixels wide (both sides are marked).

Everything is vectorised over pixels x primitives: a 64 x 48 scene takes a few milliseconds, a
288 x 384 one about a third of a second (one CPU core).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "CLASSES", "FLOOR", "WALL", "CEILING", "PAINTING", "BOX", "SPHERE", "CYLINDER",
    "Camera", "Scene", "random_scene", "render", "render_scenes", "edges_from_instances",
]

#: semantic classes, index = label value
CLASSES = ("floor", "wall", "ceiling", "painting", "box", "sphere", "cylinder")
FLOOR, WALL, CEILING, PAINTING, BOX, SPHERE, CYLINDER = range(len(CLASSES))

_EPS = 1e-6
_INF = np.inf


@dataclass
class Camera:
    """A pinhole camera: world position, camera-to-world rotation (columns = camera x, y, z axes)."""

    position: np.ndarray
    rotation: np.ndarray
    width: int
    height: int
    hfov_deg: float = 60.0

    @property
    def fx(self) -> float:
        return self.width / (2.0 * np.tan(np.radians(self.hfov_deg) / 2.0))

    @property
    def fy(self) -> float:  # square pixels
        return self.fx

    @property
    def cx(self) -> float:
        return self.width / 2.0

    @property
    def cy(self) -> float:
        return self.height / 2.0

    @staticmethod
    def looking(position, yaw: float, pitch: float, roll: float, width: int, height: int,
                hfov_deg: float = 60.0) -> "Camera":
        """A camera at ``position`` whose optical axis has heading ``yaw`` (radians, 0 = +y, positive
        towards +x) and elevation ``pitch`` (negative = looking down), rolled by ``roll`` about it."""
        f = np.array([np.sin(yaw) * np.cos(pitch), np.cos(yaw) * np.cos(pitch), np.sin(pitch)])
        r = np.cross(f, [0.0, 0.0, 1.0])
        r /= np.linalg.norm(r)
        d = np.cross(f, r)  # camera y (down) = z x x
        c, s = np.cos(roll), np.sin(roll)
        r, d = c * r + s * d, -s * r + c * d
        R = np.stack([r, d, f], axis=1)
        return Camera(np.asarray(position, float), R, int(width), int(height), float(hfov_deg))

    def ray_directions(self) -> np.ndarray:
        """World-frame ray directions (H*W, 3), row-major, each with camera-frame z component 1."""
        u = (np.arange(self.width) + 0.5 - self.cx) / self.fx
        v = (np.arange(self.height) + 0.5 - self.cy) / self.fy
        uu, vv = np.meshgrid(u, v)  # (H, W)
        d_cam = np.stack([uu.ravel(), vv.ravel(), np.ones(uu.size)], axis=1)
        return d_cam @ self.rotation.T


def _empty(n: int, k: int = 3) -> np.ndarray:
    return np.zeros((n, k)) if k else np.zeros(n)


@dataclass
class Scene:
    """Geometry, materials and light of one room (all lengths in metres, colours in [0, 1])."""

    room: np.ndarray  # (6,) xmin, xmax, ymin, ymax, zmin(=0), zmax
    floor_albedo: np.ndarray
    wall_albedo: np.ndarray
    ceiling_albedo: np.ndarray
    light: np.ndarray  # (3,) point light position
    ambient: float = 0.3
    tile: float = 0.5  # floor checkerboard tile size (0 = plain floor)
    box_center: np.ndarray = field(default_factory=lambda: _empty(0))
    box_half: np.ndarray = field(default_factory=lambda: _empty(0))
    box_yaw: np.ndarray = field(default_factory=lambda: _empty(0, 0))
    box_albedo: np.ndarray = field(default_factory=lambda: _empty(0))
    sphere_center: np.ndarray = field(default_factory=lambda: _empty(0))
    sphere_radius: np.ndarray = field(default_factory=lambda: _empty(0, 0))
    sphere_albedo: np.ndarray = field(default_factory=lambda: _empty(0))
    cyl_center: np.ndarray = field(default_factory=lambda: _empty(0, 2))  # (C, 2) x, y of the axis
    cyl_radius: np.ndarray = field(default_factory=lambda: _empty(0, 0))
    cyl_height: np.ndarray = field(default_factory=lambda: _empty(0, 0))  # from the floor up
    cyl_albedo: np.ndarray = field(default_factory=lambda: _empty(0))
    # paintings: wall index (0: x=xmin, 1: x=xmax, 2: y=ymin, 3: y=ymax), rectangle (a0, a1, z0, z1)
    # in that wall's horizontal coordinate (y for x-walls, x for y-walls) and height
    painting_wall: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    painting_rect: np.ndarray = field(default_factory=lambda: _empty(0, 4))
    painting_albedo: np.ndarray = field(default_factory=lambda: _empty(0))

    @property
    def n_objects(self) -> int:
        return len(self.box_center) + len(self.sphere_center) + len(self.cyl_center)


# ------------------------------------------------------------------------------------------------
# Ray-primitive intersections: origins O (P, 3), directions D (P, 3) -> t (P, n) with t = inf where
# the ray misses; only hits with t > tmin count. Normals are computed afterwards, at the nearest hit
# only (_object_normals), so shadow rays cost a distance test and nothing more.
# ------------------------------------------------------------------------------------------------

def _hit_room(O, D, room):
    """Exit of rays from inside an axis-aligned room: t (P,), plane index (P,) in 0..5 and the
    inward normal (P, 3). Plane 2a is the min-face of axis a, 2a+1 the max-face."""
    lo, hi = room[0::2], room[1::2]
    with np.errstate(divide="ignore", invalid="ignore"):
        t_hi = (hi - O) / D
        t_lo = (lo - O) / D
    t_axes = np.where(D > 0, t_hi, np.where(D < 0, t_lo, _INF))
    axis = np.argmin(t_axes, axis=1)
    rows = np.arange(len(O))
    t = t_axes[rows, axis]
    positive = D[rows, axis] > 0
    plane = 2 * axis + positive
    n = np.zeros_like(D)
    n[rows, axis] = np.where(positive, -1.0, 1.0)
    return t, plane, n


def _safe(d):
    """Directions with exact zeros nudged (a ray parallel to a slab or cap then gives +-inf, never nan)."""
    return np.where(d == 0, 1e-300, d)


def _hit_spheres(O, D, center, radius, tmin):
    if len(center) == 0:
        return np.full((len(O), 0), _INF)
    a = (D * D).sum(1)[:, None]
    b = (D * O).sum(1)[:, None] - D @ center.T  # D . (O - c)
    c = (O * O).sum(1)[:, None] - 2 * O @ center.T + (center * center).sum(1) - radius**2
    disc = b * b - a * c
    sq = np.sqrt(np.maximum(disc, 0.0))
    t0 = (-b - sq) / a
    t1 = (-b + sq) / a
    t = np.where(t0 > tmin, t0, np.where(t1 > tmin, t1, _INF))
    return np.where(disc >= 0, t, _INF)


def _to_box(X, center, yaw):
    """World points or vectors X (P, 3) in each box's local frame: three (P, B) arrays (x, y, z).
    Pass center=0 for vectors."""
    c, s = np.cos(yaw), np.sin(yaw)
    dx = X[:, :1] - center[:, 0] if center is not None else X[:, :1]
    dy = X[:, 1:2] - center[:, 1] if center is not None else X[:, 1:2]
    dz = X[:, 2:3] - center[:, 2] if center is not None else np.broadcast_to(X[:, 2:3], (len(X), len(yaw)))
    return c * dx + s * dy, -s * dx + c * dy, dz


def _hit_boxes(O, D, center, half, yaw, tmin):
    """Boxes rotated by ``yaw`` about the vertical axis (slab test in each box's frame)."""
    if len(center) == 0:
        return np.full((len(O), 0), _INF)
    o = _to_box(O, center, yaw)
    d = _to_box(D, None, yaw)
    t_near = np.full(o[0].shape, -_INF)
    t_far = np.full(o[0].shape, _INF)
    with np.errstate(divide="ignore", over="ignore"):
        for k in range(3):
            inv = 1.0 / _safe(d[k])
            t1 = (-half[:, k] - o[k]) * inv
            t2 = (half[:, k] - o[k]) * inv
            t_near = np.maximum(t_near, np.minimum(t1, t2))
            t_far = np.minimum(t_far, np.maximum(t1, t2))
    return np.where((t_near <= t_far) & (t_near > tmin), t_near, _INF)


def _hit_cylinders(O, D, center, radius, height, tmin):
    """Vertical capped cylinders standing on the floor (side + top cap; the bottom lies on the floor)."""
    if len(center) == 0:
        return np.full((len(O), 0), _INF)
    ox = O[:, :1] - center[:, 0]
    oy = O[:, 1:2] - center[:, 1]
    dx, dy, dz = D[:, :1], D[:, 1:2], D[:, 2:3]
    a = dx * dx + dy * dy
    b = dx * ox + dy * oy
    c = ox * ox + oy * oy - radius**2
    disc = b * b - a * c
    with np.errstate(divide="ignore", invalid="ignore"):
        t_side = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
        t_cap = (height - O[:, 2:3]) / _safe(dz)
    z_side = O[:, 2:3] + t_side * dz
    side_ok = (disc >= 0) & (a > 0) & (t_side > tmin) & (z_side >= 0) & (z_side <= height)
    cx, cy = ox + t_cap * dx, oy + t_cap * dy
    cap_ok = (dz < 0) & (t_cap > tmin) & (cx * cx + cy * cy <= radius**2)
    return np.minimum(np.where(side_ok, t_side, _INF), np.where(cap_ok, t_cap, _INF))


def _objects(O, D, scene: Scene, tmin: float) -> np.ndarray:
    """Hit distances t (P, N) of all objects, in the order boxes, spheres, cylinders."""
    return np.concatenate([
        _hit_boxes(O, D, scene.box_center, scene.box_half, scene.box_yaw, tmin),
        _hit_spheres(O, D, scene.sphere_center, scene.sphere_radius, tmin),
        _hit_cylinders(O, D, scene.cyl_center, scene.cyl_radius, scene.cyl_height, tmin),
    ], axis=1)


def _object_normals(X: np.ndarray, j: np.ndarray, scene: Scene) -> np.ndarray:
    """Outward unit normals (P, 3) at surface points X (P, 3) of objects j (P,) (index as in _objects)."""
    nb, ns = len(scene.box_center), len(scene.sphere_center)
    n = np.zeros_like(X)
    m = j < nb
    if m.any():  # box: the face whose slab the point lies on, in the box frame
        k = j[m]
        c, s = np.cos(scene.box_yaw[k]), np.sin(scene.box_yaw[k])
        rel = X[m] - scene.box_center[k]
        local = np.stack([c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1], rel[:, 2]], 1)
        axis = np.argmax(np.abs(local) / scene.box_half[k], axis=1)
        nl = np.zeros_like(local)
        rows = np.arange(len(k))
        nl[rows, axis] = np.sign(local[rows, axis])
        n[m] = np.stack([c * nl[:, 0] - s * nl[:, 1], s * nl[:, 0] + c * nl[:, 1], nl[:, 2]], 1)
    m = (j >= nb) & (j < nb + ns)
    if m.any():
        k = j[m] - nb
        n[m] = (X[m] - scene.sphere_center[k]) / scene.sphere_radius[k, None]
    m = j >= nb + ns
    if m.any():  # cylinder: the cap or the side, whichever surface the point is closer to
        k = j[m] - nb - ns
        rel = X[m, :2] - scene.cyl_center[k]
        rho = np.linalg.norm(rel, axis=1)
        cap = np.abs(X[m, 2] - scene.cyl_height[k]) < np.abs(rho - scene.cyl_radius[k])
        side = np.concatenate([rel / np.maximum(rho, 1e-12)[:, None], np.zeros((len(k), 1))], 1)
        n[m] = np.where(cap[:, None], [0.0, 0.0, 1.0], side)
    return n


def edges_from_instances(inst: np.ndarray) -> np.ndarray:
    """Boolean (H, W) map: True where a 4-neighbour shows another instance (both sides marked)."""
    e = np.zeros(inst.shape, dtype=bool)
    dh = inst[:, 1:] != inst[:, :-1]
    dv = inst[1:, :] != inst[:-1, :]
    e[:, 1:] |= dh
    e[:, :-1] |= dh
    e[1:, :] |= dv
    e[:-1, :] |= dv
    return e


def render(scene: Scene, camera: Camera, shadows: bool = True) -> dict[str, np.ndarray]:
    """Cast one ray per pixel. Returns float64 ``rgb`` (H, W, 3) in [0, 1], int ``label`` and
    ``instance`` (H, W), ``depth`` (H, W) > 0, unit camera-frame ``normal`` (H, W, 3) and bool
    ``edge`` (H, W). Instance ids: 0..5 room planes (see :func:`_hit_room`), 6.. paintings, then the
    objects (boxes, spheres, cylinders)."""
    H, W = camera.height, camera.width
    D = camera.ray_directions()
    P = len(D)
    O = np.broadcast_to(camera.position, (P, 3))
    t_room, plane, n_room = _hit_room(O, D, scene.room)
    t_obj = _objects(O, D, scene, _EPS)
    nb, ns = len(scene.box_center), len(scene.sphere_center)
    n_paint = len(scene.painting_wall)
    rows = np.arange(P)

    # room surface: class, instance, albedo (floor checkerboard, paintings)
    label = np.where(plane == 4, FLOOR, np.where(plane == 5, CEILING, WALL))
    inst = plane.copy()
    X_room = camera.position + t_room[:, None] * D
    albedo = np.where((plane == 4)[:, None], scene.floor_albedo,
                      np.where((plane == 5)[:, None], scene.ceiling_albedo, scene.wall_albedo))
    if scene.tile > 0:
        checker = (np.floor(X_room[:, 0] / scene.tile) + np.floor(X_room[:, 1] / scene.tile)) % 2
        albedo = albedo * np.where((plane == 4) & (checker == 1), 0.8, 1.0)[:, None]
    # walls 0..3 are room planes 0 (x min), 1 (x max), 2 (y min), 3 (y max)
    for k in range(n_paint):
        wall = int(scene.painting_wall[k])
        a0, a1, z0, z1 = scene.painting_rect[k]
        along = X_room[:, 1] if wall < 2 else X_room[:, 0]
        on = (plane == wall) & (along >= a0) & (along <= a1) & (X_room[:, 2] >= z0) & (X_room[:, 2] <= z1)
        label = np.where(on, PAINTING, label)
        inst = np.where(on, 6 + k, inst)
        albedo = np.where(on[:, None], scene.painting_albedo[k], albedo)

    # nearest object in front of the room surface
    if t_obj.shape[1]:
        j = np.argmin(t_obj, axis=1)
        t_o = t_obj[rows, j]
        obj = t_o < t_room
    else:
        j = np.zeros(P, dtype=int)
        obj = np.zeros(P, dtype=bool)
    obj_class = np.concatenate([np.full(nb, BOX), np.full(ns, SPHERE), np.full(len(scene.cyl_center), CYLINDER)]).astype(int)
    obj_albedo = np.concatenate([scene.box_albedo, scene.sphere_albedo, scene.cyl_albedo]).reshape(-1, 3)
    t = t_room.copy()
    n = n_room
    if obj.any():
        t = np.where(obj, t_o, t_room)
        n = n_room.copy()
        n[obj] = _object_normals(camera.position + t[obj, None] * D[obj], j[obj], scene)
        label = np.where(obj, obj_class[j], label)
        inst = np.where(obj, 6 + n_paint + j, inst)
        albedo = np.where(obj[:, None], obj_albedo[j], albedo)
    n = n / np.linalg.norm(n, axis=1, keepdims=True)
    flip = np.einsum("pk,pk->p", n, D) > 0  # face the camera (never triggers for a closed room)
    n = np.where(flip[:, None], -n, n)

    # shading: Lambert + ambient, hard shadows cast by the objects (the room is convex)
    X = camera.position + t[:, None] * D
    L = scene.light - X
    dist = np.linalg.norm(L, axis=1)
    L = L / dist[:, None]
    lambert = np.maximum(np.einsum("pk,pk->p", n, L), 0.0)
    if shadows and scene.n_objects:
        lit = lambert > 0
        t_sh = _objects(X[lit] + 1e-4 * n[lit], L[lit], scene, 1e-4)
        blocked = (t_sh < dist[lit, None]).any(axis=1)
        lambert[np.flatnonzero(lit)[blocked]] = 0.0
    attenuation = 1.0 / (1.0 + 0.02 * dist**2)
    rgb = albedo * (scene.ambient + (1.0 - scene.ambient) * 1.4 * lambert * attenuation)[:, None]
    rgb = np.clip(rgb, 0.0, 1.0)

    inst2 = inst.reshape(H, W)
    return {
        "rgb": rgb.reshape(H, W, 3),
        "label": label.reshape(H, W),
        "instance": inst2,
        "depth": t.reshape(H, W),
        "normal": (n @ camera.rotation).reshape(H, W, 3),  # R^T n, row-wise
        "edge": edges_from_instances(inst2),
    }


# ------------------------------------------------------------------------------------------------
# Random scenes
# ------------------------------------------------------------------------------------------------

def _colour(rng, sat, val):
    """A random RGB colour from hue, saturation and value ranges (HSV -> RGB)."""
    h = rng.uniform(0, 6)
    s = rng.uniform(*sat)
    v = rng.uniform(*val)
    c = v * s
    x = c * (1 - abs(h % 2 - 1))
    rgb = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)][int(h) % 6]
    return np.array(rgb) + (v - c)


def random_scene(rng: np.random.Generator, width: int, height: int, hfov_deg: float = 60.0) -> tuple[Scene, Camera]:
    """A random room with 1-4 boxes, 1-3 spheres (some on top of boxes), 0-2 cylinders and 0-2
    paintings, and a random camera inside it near the front wall looking in."""
    W = rng.uniform(4.0, 7.0)
    Dp = rng.uniform(5.0, 9.0)
    Hr = rng.uniform(2.6, 3.2)
    room = np.array([-W / 2, W / 2, 0.0, Dp, 0.0, Hr])
    footprints: list[tuple[float, float, float]] = []  # (x, y, bounding radius) on the floor

    def place(rad: float):
        for _ in range(50):
            x = rng.uniform(room[0] + 0.1 + rad, room[1] - 0.1 - rad)
            y = rng.uniform(1.4 + rad, Dp - 0.1 - rad)
            if all((x - a) ** 2 + (y - b) ** 2 > (rad + r + 0.05) ** 2 for a, b, r in footprints):
                footprints.append((x, y, rad))
                return x, y
        return None

    bc, bh, by, ba = [], [], [], []
    for _ in range(rng.integers(1, 5)):
        half = np.array([rng.uniform(0.2, 0.6), rng.uniform(0.2, 0.6), rng.uniform(0.2, 0.6)])
        xy = place(float(np.hypot(half[0], half[1])))
        if xy is None:
            continue
        bc.append([xy[0], xy[1], half[2]])
        bh.append(half)
        by.append(rng.uniform(0, np.pi / 2))
        ba.append(_colour(rng, (0.2, 0.7), (0.35, 0.85)))
    sc, sr, sa = [], [], []
    for _ in range(rng.integers(1, 4)):
        r = rng.uniform(0.15, 0.45)
        if bc and rng.uniform() < 0.3:  # resting on top of a box
            k = int(rng.integers(len(bc)))
            if r <= min(bh[k][0], bh[k][1]) + 0.1:
                sc.append([bc[k][0], bc[k][1], 2 * bh[k][2] + r])
                sr.append(r)
                sa.append(_colour(rng, (0.4, 0.9), (0.4, 0.95)))
                continue
        xy = place(r)
        if xy is None:
            continue
        sc.append([xy[0], xy[1], r])
        sr.append(r)
        sa.append(_colour(rng, (0.4, 0.9), (0.4, 0.95)))
    cc, cr, ch, ca = [], [], [], []
    for _ in range(rng.integers(0, 3)):
        r = rng.uniform(0.1, 0.3)
        xy = place(r)
        if xy is None:
            continue
        cc.append(xy)
        cr.append(r)
        ch.append(rng.uniform(0.4, 1.8))
        ca.append(_colour(rng, (0.2, 0.8), (0.3, 0.9)))
    pw, pr, pa = [], [], []
    for _ in range(rng.integers(0, 3)):
        wall = int(rng.choice([0, 1, 3]))  # never on the wall behind the camera
        lo, hi = (room[2], room[3]) if wall < 2 else (room[0], room[1])
        w = rng.uniform(0.4, 1.2)
        h = rng.uniform(0.3, 0.9)
        a0 = rng.uniform(lo + 0.2, hi - 0.2 - w)
        z0 = rng.uniform(1.0, min(2.0, Hr - 0.2 - h))
        pw.append(wall)
        pr.append([a0, a0 + w, z0, z0 + h])
        pa.append(_colour(rng, (0.5, 1.0), (0.3, 0.9)))

    wall_rgb = _colour(rng, (0.05, 0.3), (0.6, 0.9))
    scene = Scene(
        room=room,
        floor_albedo=_colour(rng, (0.3, 0.6), (0.3, 0.6)),
        wall_albedo=wall_rgb,
        ceiling_albedo=np.full(3, rng.uniform(0.8, 0.95)),
        light=np.array([rng.uniform(room[0] + 0.5, room[1] - 0.5), rng.uniform(0.5, Dp - 0.5), Hr - 0.05]),
        ambient=float(rng.uniform(0.25, 0.4)),
        tile=float(rng.choice([0.0, 0.4, 0.6])),
        box_center=np.array(bc, float).reshape(-1, 3),
        box_half=np.array(bh, float).reshape(-1, 3),
        box_yaw=np.array(by, float),
        box_albedo=np.array(ba, float).reshape(-1, 3),
        sphere_center=np.array(sc, float).reshape(-1, 3),
        sphere_radius=np.array(sr, float),
        sphere_albedo=np.array(sa, float).reshape(-1, 3),
        cyl_center=np.array(cc, float).reshape(-1, 2),
        cyl_radius=np.array(cr, float),
        cyl_height=np.array(ch, float),
        cyl_albedo=np.array(ca, float).reshape(-1, 3),
        painting_wall=np.array(pw, int),
        painting_rect=np.array(pr, float).reshape(-1, 4),
        painting_albedo=np.array(pa, float).reshape(-1, 3),
    )
    cam = Camera.looking(
        position=[rng.uniform(-W / 4, W / 4), rng.uniform(0.2, 0.8), rng.uniform(1.2, 1.8)],
        yaw=rng.uniform(-0.45, 0.45), pitch=rng.uniform(-0.5, -0.08), roll=rng.uniform(-0.05, 0.05),
        width=width, height=height, hfov_deg=hfov_deg,
    )
    return scene, cam


def render_scenes(seed: int, split: int, start: int, stop: int, height: int, width: int) -> dict[str, np.ndarray]:
    """Scenes ``start .. stop-1`` of a split as compact arrays: ``rgb`` (n, H, W, 3) uint8 with sensor
    noise (sigma 1 %), ``label`` and ``edge`` (n, H, W) uint8, ``depth`` (n, H, W) float32, ``normal``
    (n, H, W, 3) float16. Scene ``i`` is drawn from ``default_rng([seed, split, i])`` alone."""
    n = stop - start
    out = {
        "rgb": np.empty((n, height, width, 3), np.uint8),
        "label": np.empty((n, height, width), np.uint8),
        "depth": np.empty((n, height, width), np.float32),
        "normal": np.empty((n, height, width, 3), np.float16),
        "edge": np.empty((n, height, width), np.uint8),
    }
    for k, i in enumerate(range(start, stop)):
        rng = np.random.default_rng([seed, split, i])
        scene, cam = random_scene(rng, width, height)
        r = render(scene, cam)
        rgb = r["rgb"] + rng.normal(0.0, 0.01, r["rgb"].shape)
        out["rgb"][k] = np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8)
        out["label"][k] = r["label"]
        out["depth"][k] = r["depth"]
        out["normal"][k] = r["normal"]
        out["edge"][k] = r["edge"]
    return out
