"""Tests of nnint.evaluate.metrics against hand-computed values on constructed shapes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage

from nnint.errors import InvalidMaskError
from nnint.evaluate.metrics import (
    _neighbour_codes,
    auc_mean,
    auc_trapezoid,
    challenge_nsd,
    clicks_to_reach,
    dice,
    surface_dice,
    surfel_area_table,
)


def cube(shape, lo, size):
    m = np.zeros(shape, dtype=bool)
    m[tuple(slice(a, a + size) for a in lo)] = True
    return m


def ball(shape, centre, radius):
    g = np.indices(shape)
    return sum((g[i] - centre[i]) ** 2 for i in range(3)) <= radius * radius


# --- hand-derived surfel areas ------------------------------------------------------------------
# For a box of voxels the surface is made of three kinds of surfels (cube = 2x2x2 voxel centres):
#   face cube   (4 inside corners): a full square, e.g. normal to z: sy * sx
#   edge cube   (2 inside corners): a rectangle cut at the corner, e.g. along x:
#               length sx, width = distance between the midpoints (sz/2, 0) and (0, sy/2)
#   corner cube (1 inside corner):  the triangle (sz/2,0,0), (0,sy/2,0), (0,0,sx/2)


def face(sz, sy, sx):
    return {"z": sy * sx, "y": sz * sx, "x": sz * sy}


def edge(sz, sy, sx):
    return {
        "x": sx * 0.5 * math.hypot(sz, sy),
        "y": sy * 0.5 * math.hypot(sz, sx),
        "z": sz * 0.5 * math.hypot(sy, sx),
    }


def corner(sz, sy, sx):
    return math.sqrt((sy * sx) ** 2 + (sz * sx) ** 2 + (sz * sy) ** 2) / 8.0


def box_surface_area(a, spacing):
    """Total surfel area of an a x a x a voxel cube: per face/edge direction, n = a - 1 cubes."""
    n = a - 1
    f, e, c = face(*spacing), edge(*spacing), corner(*spacing)
    return 2 * n * n * sum(f.values()) + 4 * n * sum(e.values()) + 8 * c


def test_surfel_table_planar_configurations():
    sz, sy, sx = 3.0, 1.0, 0.5
    t = surfel_area_table((sz, sy, sx))
    # bit k = 4 dz + 2 dy + dx
    assert t[0] == 0 and t[255] == 0
    assert t[0b0000_1111] == pytest.approx(sy * sx)  # the dz = 0 half: a face normal to z
    assert t[0b0011_0011] == pytest.approx(sz * sx)  # dy = 0 half: normal to y
    assert t[0b0101_0101] == pytest.approx(sz * sy)  # dx = 0 half: normal to x
    assert t[0b0000_0011] == pytest.approx(edge(sz, sy, sx)["x"])  # corners 0, 1 differ in x
    assert t[0b0000_0101] == pytest.approx(edge(sz, sy, sx)["y"])
    assert t[0b0001_0001] == pytest.approx(edge(sz, sy, sx)["z"])
    for k in range(8):
        assert t[1 << k] == pytest.approx(corner(sz, sy, sx))


def test_single_voxel_surface_is_octahedron():
    m = np.zeros((3, 3, 3), dtype=bool)
    m[1, 1, 1] = True
    codes = _neighbour_codes(np.pad(m, 1))
    total = surfel_area_table((1, 1, 1))[codes].sum()
    assert total == pytest.approx(8 * math.sqrt(3) / 8)  # 8 faces of the unit octahedron


def test_ball_surface_area_close_to_sphere():
    r = 12
    m = ball((32, 32, 32), (16, 16, 16), r)
    total = surfel_area_table((1, 1, 1))[_neighbour_codes(np.pad(m, 1))].sum()
    # A voxelised sphere's marching-cubes area slightly overestimates 4 pi r^2.
    assert 1.0 < total / (4 * math.pi * r * r) < 1.1


# --- Dice ---------------------------------------------------------------------------------------


def test_dice_cubes_with_known_overlap():
    a = cube((10, 10, 10), (0, 0, 0), 4)  # 64 voxels
    b = cube((10, 10, 10), (0, 0, 2), 4)  # shifted by 2 along x: overlap 4 * 4 * 2 = 32
    assert dice(a, b) == pytest.approx(2 * 32 / 128)
    c = cube((10, 10, 10), (1, 1, 1), 2)  # 8 voxels, fully inside a
    assert dice(a, c) == pytest.approx(2 * 8 / 72)


def test_dice_empty_cases():
    z = np.zeros((4, 4, 4), dtype=np.uint8)
    o = z.copy()
    o[1, 1, 1] = 1
    assert dice(z, z) == 1.0
    assert dice(o, z) == 0.0
    assert dice(o, o) == 1.0


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.bool_, (5, 6, 7)),
    arrays(np.bool_, (5, 6, 7)),
)
def test_dice_symmetric_and_bounded(a, b):
    d = dice(a, b)
    assert 0.0 <= d <= 1.0
    assert d == dice(b, a)


# --- NSD: constructed shapes --------------------------------------------------------------------


def test_nsd_identical_shapes_is_one():
    shape = (20, 24, 24)
    for m in (cube(shape, (3, 4, 5), 6), ball(shape, (10, 12, 12), 6)):
        for spacing in ((1, 1, 1), (3.0, 0.7, 0.7)):
            assert surface_dice(m, m, spacing, 0.0) == pytest.approx(1.0)


def test_nsd_empty_cases():
    z = np.zeros((5, 5, 5), dtype=bool)
    o = cube((5, 5, 5), (1, 1, 1), 2)
    assert surface_dice(z, z, (1, 1, 1)) == 1.0
    assert surface_dice(o, z, (1, 1, 1)) == 0.0
    assert surface_dice(z, o, (1, 1, 1)) == 0.0


def test_nsd_cube_shifted_one_voxel_isotropic():
    # a = 4 voxel cube, and the same cube shifted by one voxel along x, spacing 1 mm.
    # Surface cube positions of the gt form the shell of [-1, 3]^3; the pred's shell is shifted
    # by one in x. With tolerance 0 only positions on both shells agree: everything except the
    # x = -1 layer (one x-face, 4 edges along y/z, 4 corners) and the x = 3 face (n x n face
    # cubes, which lie inside the pred's shell, not on it). Same for the pred by symmetry.
    a, n = 4, 3
    f, e, c = face(1, 1, 1), edge(1, 1, 1), corner(1, 1, 1)
    total = box_surface_area(a, (1, 1, 1))
    outside = 2 * n * n * f["x"] + 2 * n * e["y"] + 2 * n * e["z"] + 4 * c
    expected = 1 - outside / total
    # with numbers: (36 + 24 r + 4 t) / (54 + 36 r + 8 t), r = 1/sqrt(2), t = sqrt(3)/8
    r, t = 1 / math.sqrt(2), math.sqrt(3) / 8
    assert expected == pytest.approx((36 + 24 * r + 4 * t) / (54 + 36 * r + 8 * t))

    gt = cube((10, 10, 10), (3, 3, 3), a)
    pred = cube((10, 10, 10), (3, 3, 4), a)
    assert surface_dice(pred, gt, (1, 1, 1), 0.0) == pytest.approx(expected)
    assert surface_dice(pred, gt, (1, 1, 1), 0.99) == pytest.approx(expected)  # no distance in (0, 1)
    # every surfel is within one voxel (= spacing) of the other surface
    assert surface_dice(pred, gt, (1, 1, 1), 1.0) == pytest.approx(1.0)
    assert surface_dice(pred, gt, (1, 1, 1), 2.0) == pytest.approx(1.0)


def test_nsd_anisotropic_shift_z_outside_tolerance_x_inside():
    spacing = (3.0, 1.0, 1.0)  # z voxels are 3 mm thick
    a, n = 4, 3
    gt = cube((12, 12, 12), (4, 4, 4), a)
    shift_x = cube((12, 12, 12), (4, 4, 5), a)
    shift_z = cube((12, 12, 12), (5, 4, 4), a)

    # 1 mm shift along x: inside 2 mm everywhere.
    assert surface_dice(shift_x, gt, spacing, 2.0) == pytest.approx(1.0)

    # 3 mm shift along z. For the gt, the bottom layer of surface cubes (z = -1: the n x n
    # bottom face, 2n edge cubes along x, 2n along y, 4 corners) is 3 mm from the pred's
    # surface: outside. The top face (z = 3) lies 1-2 mm in-plane from the pred's side walls
    # (the largest in-plane distance to the rim of a 3x3 face is 2): inside. Side walls
    # coincide. Symmetrically for the pred's top layer.
    f, e, c = face(*spacing), edge(*spacing), corner(*spacing)
    outside = n * n * f["z"] + 2 * n * e["x"] + 2 * n * e["y"] + 4 * c
    expected = 1 - outside / box_surface_area(a, spacing)
    assert expected == pytest.approx(1 - 30.1528 / 193.76, abs=1e-4)  # written out
    assert surface_dice(shift_z, gt, spacing, 2.0) == pytest.approx(expected)
    # ... and at a 3 mm tolerance the z shift is inside too.
    assert surface_dice(shift_z, gt, spacing, 3.0) == pytest.approx(1.0)


def test_nsd_sphere_vs_slightly_larger_sphere():
    shape = (30, 30, 30)
    small = ball(shape, (15, 15, 15), 8)
    large = ball(shape, (15, 15, 15), 9)
    # Dice of nested shapes: 2|small| / (|small| + |large|)
    assert dice(small, large) == pytest.approx(2 * small.sum() / (small.sum() + large.sum()))
    # The surfaces are about one voxel apart: far from agreeing at 0 mm, fully at 2 mm.
    at0 = surface_dice(small, large, (1, 1, 1), 0.0)
    at1 = surface_dice(small, large, (1, 1, 1), 1.0)
    at2 = surface_dice(small, large, (1, 1, 1), 2.0)
    assert at0 < 0.4
    assert at0 < at1 < at2
    assert at2 == pytest.approx(1.0)
    # A larger gap scores lower at the same tolerance.
    larger = ball(shape, (15, 15, 15), 11)
    assert surface_dice(small, larger, (1, 1, 1), 1.0) < at1


def test_nsd_independent_of_image_padding_and_border():
    m = ball((16, 16, 16), (8, 8, 8), 5)
    n = ball((16, 16, 16), (8, 9, 8), 5)
    ref = surface_dice(m, n, (2.0, 1.0, 0.5), 1.0)
    big_m, big_n = np.pad(m, 7), np.pad(n, 7)
    assert surface_dice(big_m, big_n, (2.0, 1.0, 0.5), 1.0) == pytest.approx(ref)
    # objects touching the image border: outside counts as background, so it still works
    edge_m = m[8:]
    edge_n = n[8:]
    v = surface_dice(edge_m, edge_n, (1, 1, 1), 1.0)
    assert 0.0 < v <= 1.0


def _nsd_by_edt(a, b, spacing, tol):
    """Reference: the surface-distance formulation with full EDTs (as in the CVPR code)."""
    a, b = np.pad(a, 1), np.pad(b, 1)
    ca, cb = _neighbour_codes(a), _neighbour_codes(b)
    ba, bb = (ca != 0) & (ca != 255), (cb != 0) & (cb != 255)
    da = ndimage.distance_transform_edt(~ba, sampling=spacing)
    db = ndimage.distance_transform_edt(~bb, sampling=spacing)
    t = surfel_area_table(spacing)
    num = t[ca][ba & (db <= tol)].sum() + t[cb][bb & (da <= tol)].sum()
    return num / (t[ca][ba].sum() + t[cb][bb].sum())


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.8, 0.8)])
def test_nsd_matches_edt_formulation(spacing):
    rng = np.random.default_rng(3)
    noise = ndimage.gaussian_filter(rng.standard_normal((20, 24, 24)), 2.0)
    a = noise > 0.02
    b = ndimage.gaussian_filter(noise + 0.03 * rng.standard_normal(noise.shape), 1.0) > 0.03
    for tol in (0.0, 0.9, 1.7, 2.0, 3.3):
        assert surface_dice(a, b, spacing, tol) == pytest.approx(_nsd_by_edt(a, b, spacing, tol))


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.bool_, (4, 5, 6)),
    arrays(np.bool_, (4, 5, 6)),
    st.sampled_from([(1.0, 1.0, 1.0), (3.0, 1.0, 1.0), (0.5, 2.0, 1.0)]),
    st.floats(0.0, 5.0),
)
def test_nsd_bounded_symmetric_monotone(a, b, spacing, tol):
    v = surface_dice(a, b, spacing, tol)
    assert 0.0 <= v <= 1.0 + 1e-12
    assert v == pytest.approx(surface_dice(b, a, spacing, tol))
    assert surface_dice(a, b, spacing, tol + 1.0) >= v - 1e-12
    if a.any() and b.any():
        assert surface_dice(a, b, spacing, 1000.0) == pytest.approx(1.0)


def test_challenge_nsd_rule():
    gt = cube((14, 14, 14), (2, 2, 2), 6)
    good = cube((14, 14, 14), (2, 2, 3), 6)
    bad = cube((14, 14, 14), (2, 2, 7), 6)  # overlap 6*6*1 -> Dice 1/6 < 0.2
    d_good = dice(good, gt)
    assert challenge_nsd(good, gt, (1, 1, 1), d_good) == pytest.approx(surface_dice(good, gt, (1, 1, 1), 2.0))
    assert challenge_nsd(good, gt, (1, 1, 1)) == pytest.approx(surface_dice(good, gt, (1, 1, 1)))
    assert dice(bad, gt) == pytest.approx(1 / 6)
    assert surface_dice(bad, gt, (1, 1, 1), 2.0) > 0  # would be non-zero ...
    assert challenge_nsd(bad, gt, (1, 1, 1)) == 0.0  # ... but Dice <= 0.2
    assert challenge_nsd(good, gt, (1, 1, 1), 0.2) == 0.0  # the threshold is strict


# --- curves -------------------------------------------------------------------------------------


def test_auc_trapezoid_by_hand():
    assert auc_trapezoid([1, 1, 1, 1, 1]) == pytest.approx(4.0)
    # 0.5*0.2 + 0.4 + 0.6 + 0.8 + 0.5*1.0
    assert auc_trapezoid([0.2, 0.4, 0.6, 0.8, 1.0]) == pytest.approx(2.4)
    assert auc_trapezoid([0.5, 0.9]) == pytest.approx(0.7)
    assert auc_trapezoid([0.1, 0.3, 0.2]) == pytest.approx(0.05 + 0.3 + 0.1)
    with pytest.raises(ValueError):
        auc_trapezoid([0.5])


def test_auc_mean_by_hand():
    assert auc_mean([0.2, 0.4, 0.6, 0.8, 1.0]) == pytest.approx(0.6)
    assert auc_mean([0.7]) == pytest.approx(0.7)
    with pytest.raises(ValueError):
        auc_mean([])


def test_clicks_to_reach():
    curve = [0.5, 0.79, 0.8, 0.95, 0.85]
    assert clicks_to_reach(curve, 0.8) == 2
    assert clicks_to_reach(curve, 0.9) == 3
    assert clicks_to_reach(curve, 0.5) == 0
    assert clicks_to_reach(curve, 0.99) is None


# --- input validation ---------------------------------------------------------------------------


def test_bad_inputs():
    a = np.zeros((4, 4, 4), dtype=bool)
    with pytest.raises(InvalidMaskError):
        dice(a, np.zeros((4, 4, 5), dtype=bool))
    with pytest.raises(InvalidMaskError):
        surface_dice(a, np.zeros((4, 4, 5), dtype=bool), (1, 1, 1))
    with pytest.raises(InvalidMaskError):
        dice(a, np.full((4, 4, 4), 2, dtype=np.uint8))
    with pytest.raises(InvalidMaskError):
        surface_dice(a[0], a[0], (1, 1, 1))
    with pytest.raises(ValueError):
        surface_dice(a, a, (1, 1))
    with pytest.raises(ValueError):
        surface_dice(a, a, (1, 0, 1))
    with pytest.raises(ValueError):
        surface_dice(a, a, (1, 1, 1), -1.0)
    # 0/1 integer masks are fine
    assert dice(a.astype(np.uint8), a.astype(np.int64)) == 1.0
