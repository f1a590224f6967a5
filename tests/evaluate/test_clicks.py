"""Tests of nnint.evaluate.clicks: click placement and 2D prompt simulators."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import nnint.evaluate.clicks as clicks_mod
from nnint.errors import EmptyPromptError, InvalidMaskError
from nnint.evaluate.clicks import (
    Click,
    initial_box2d,
    initial_box3d,
    initial_point,
    next_click,
    pick_error_slice,
    simulate_box2d,
    simulate_lasso,
    simulate_scribble,
    slice_box,
    slice_crop,
)


def rng(seed=0):
    return np.random.default_rng(seed)


def box_mask(shape, lo, hi):
    m = np.zeros(shape, dtype=bool)
    m[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return m


# --- next_click (CVPR protocol) -----------------------------------------------------------------


def test_no_error_gives_none():
    gt = box_mask((8, 8, 8), (2, 2, 2), (5, 5, 5))
    assert next_click(gt, gt, rng=rng()) is None
    assert next_click(gt.astype(np.uint8), gt, rng=rng()) is None


def test_largest_component_wins_and_click_is_its_centre():
    gt = np.zeros((20, 30, 30), dtype=bool)
    gt[2:9, 2:9, 2:9] = True  # 7^3 missed: centre (5, 5, 5)
    gt[12:15, 20:23, 20:23] = True  # 3^3 missed
    pred = np.zeros_like(gt)
    for seed in range(5):  # the 7^3 cube has a unique deepest voxel: no randomness involved
        assert next_click(pred, gt, rng=rng(seed)) == Click((5, 5, 5), True)


def test_polarity_false_positive_vs_missed_foreground():
    gt = np.zeros((20, 20, 20), dtype=bool)
    gt[2:7, 2:7, 2:7] = True  # 5^3
    pred = gt.copy()
    pred[10:17, 10:17, 10:17] = True  # 7^3 false positive: largest -> negative click
    c = next_click(pred, gt, rng=rng())
    assert c == Click((13, 13, 13), False)

    pred2 = np.zeros_like(gt)
    pred2[10:13, 10:13, 10:13] = True  # small FP, gt cube entirely missed (larger)
    c2 = next_click(pred2, gt, rng=rng())
    assert c2 == Click((4, 4, 4), True)


def test_ties_deterministic_per_seed_and_vary_across_seeds():
    gt = box_mask((12, 12, 12), (2, 2, 2), (6, 6, 6))  # 4^3: 8 equally deep voxels (2x2x2 centre)
    pred = np.zeros_like(gt)
    centre = {(z, y, x) for z in (3, 4) for y in (3, 4) for x in (3, 4)}
    seen = set()
    for seed in range(20):
        c1 = next_click(pred, gt, rng=rng(seed))
        c2 = next_click(pred, gt, rng=rng(seed))
        assert c1 == c2
        assert c1.zyx in centre and c1.positive
        seen.add(c1.zyx)
    assert len(seen) > 1


def test_equal_size_components_tie_broken_by_rng():
    gt = np.zeros((10, 10, 20), dtype=bool)
    gt[2:5, 2:5, 2:5] = True  # centre (3, 3, 3)
    gt[2:5, 2:5, 12:15] = True  # centre (3, 3, 13)
    pred = np.zeros_like(gt)
    picks = {next_click(pred, gt, rng=rng(s)).zyx for s in range(30)}
    assert picks == {(3, 3, 3), (3, 3, 13)}


def test_26_connectivity_joins_diagonal_voxels():
    gt = np.zeros((10, 10, 10), dtype=bool)
    # two 2^3 cubes touching only at a corner: one 26-connected component of 16 voxels ...
    gt[1:3, 1:3, 1:3] = True
    gt[3:5, 3:5, 3:5] = True
    # ... which beats a separate 3x3x1 plate of 9 voxels (the plate would win under 6-connectivity)
    gt[8, 5:8, 5:8] = True
    c = next_click(np.zeros_like(gt), gt, rng=rng())
    assert c.zyx[0] < 5


def test_spacing_changes_the_deepest_voxel():
    gt = box_mask((5, 11, 11), (1, 1, 1), (4, 10, 10))  # 3 x 9 x 9, thin along z
    pred = np.zeros_like(gt)
    # voxel units: depth limited to 2 by z across a large plateau -> many ties
    voxel_picks = {next_click(pred, gt, rng=rng(s)).zyx for s in range(10)}
    assert len(voxel_picks) > 1
    # mm with 3 mm slices: z is deep (6 mm), so the in-plane centre is the unique maximum
    for s in range(3):
        assert next_click(pred, gt, rng=rng(s), spacing=(3.0, 1.0, 1.0)).zyx == (2, 5, 5)


def test_component_touching_image_border_treats_outside_as_background():
    gt = box_mask((10, 10, 10), (0, 0, 0), (4, 10, 10))  # slab touching 5 image faces
    c = next_click(np.zeros_like(gt), gt, rng=rng())
    z, y, x = c.zyx
    assert z in (1, 2) and y in range(1, 9) and x in range(1, 9)
    # and with the slab occupying the whole image the click is still a voxel of it
    full = np.ones((5, 5, 5), dtype=bool)
    c = next_click(np.zeros_like(full), full, rng=rng())
    assert c == Click((2, 2, 2), True)


def test_downsampled_edt_path(monkeypatch):
    monkeypatch.setattr(clicks_mod, "EDT_DOWNSAMPLE_VOXELS", 100)
    gt = box_mask((24, 24, 24), (3, 4, 5), (16, 17, 18))  # 13^3 cube, centre (9, 10, 11)
    pred = np.zeros_like(gt)
    for seed in range(5):
        c = next_click(pred, gt, rng=rng(seed))
        assert c.positive and gt[c.zyx]
        assert max(abs(a - b) for a, b in zip(c.zyx, (9, 10, 11))) <= 2


@settings(max_examples=50, deadline=None)
@given(arrays(np.bool_, (5, 6, 7)), arrays(np.bool_, (5, 6, 7)), st.integers(0, 2**16))
def test_click_lies_on_an_error_with_the_right_polarity(pred, gt, seed):
    c = next_click(pred, gt, rng=rng(seed))
    if np.array_equal(pred, gt):
        assert c is None
        return
    assert pred[c.zyx] != gt[c.zyx]
    assert c.positive == bool(gt[c.zyx])
    assert all(isinstance(v, int) for v in c.zyx)


def test_next_click_bad_inputs():
    a = np.zeros((4, 4, 4), dtype=bool)
    with pytest.raises(InvalidMaskError):
        next_click(a, np.zeros((4, 4, 5), dtype=bool), rng=rng())
    with pytest.raises(InvalidMaskError):
        next_click(a[0], a[0], rng=rng())
    with pytest.raises(InvalidMaskError):
        next_click(a, np.full((4, 4, 4), 3, dtype=np.uint8), rng=rng())
    with pytest.raises(TypeError):
        next_click(a, a, rng=0)  # type: ignore[arg-type]


# --- initial prompts ----------------------------------------------------------------------------


def test_initial_point_is_centre_of_cube():
    gt = box_mask((12, 12, 12), (2, 3, 4), (9, 10, 11))  # 7^3, centre (5, 6, 7)
    assert initial_point(gt, rng()) == Click((5, 6, 7), True)
    with pytest.raises(InvalidMaskError):
        initial_point(np.zeros((3, 3, 3), dtype=bool), rng())


def test_initial_box3d_tight():
    gt = np.zeros((10, 10, 10), dtype=bool)
    gt[2, 3, 4] = gt[5, 7, 6] = True
    assert initial_box3d(gt) == ((2, 3, 4), (6, 8, 7))
    with pytest.raises(InvalidMaskError):
        initial_box3d(np.zeros((3, 3, 3), dtype=bool))


def test_initial_box2d_cvpr_style():
    gt = np.zeros((10, 256, 512), dtype=bool)
    gt[2:6, 100:120, 200:260] = True  # occupied slices 2..5 -> middle = unique[4 // 2] = 4
    gt[4, 90, 230] = True  # the middle slice is a bit taller
    seen = set()
    for seed in range(30):
        b = initial_box2d(gt, rng(seed))
        assert b == initial_box2d(gt, rng(seed))  # deterministic per seed
        assert b.axis == 0 and b.index == 4 and b.slice_range == (2, 5)
        assert b.lo[0] == 4 and b.hi[0] == 5
        grow_y = 90 - b.lo[1]
        assert b.hi[1] - 120 == grow_y  # same shift on both sides of an axis
        s = grow_y  # dim 256: int(s * 256 / 256) = s
        assert 0 <= s <= 5
        assert 200 - b.lo[2] == b.hi[2] - 260 == int(s * 512 / 256)  # dim 512: 2 s
        assert b.box3d == ((2, b.lo[1], b.lo[2]), (6, b.hi[1], b.hi[2]))
        seen.add(s)
    assert len(seen) > 2


def test_initial_box2d_other_axis_and_clipping():
    gt = box_mask((20, 8, 8), (0, 0, 3), (20, 8, 6))  # touches the borders in z and y
    b = initial_box2d(gt, rng(1), axis=2, max_shift_px=100)
    assert b.axis == 2 and b.slice_range == (3, 5) and b.index == 4
    assert b.lo == (0, 0, 4) and b.hi == (20, 8, 5)  # clipped to the image
    with pytest.raises(InvalidMaskError):
        initial_box2d(np.zeros((3, 3, 3), dtype=bool), rng())


# --- paper-style 2D prompts ---------------------------------------------------------------------


def test_pick_error_slice_largest_cross_section_and_polarity():
    gt = np.zeros((16, 16, 20), dtype=bool)
    gt[3:5, 2:8, 4:14] = True  # missed: 2 x 6 x 10 -> largest area 60 on z slices 3 and 4
    pred = np.zeros_like(gt)
    pred[10:12, 10:12, 10:12] = True  # small false positive
    for seed in range(5):
        s = pick_error_slice(pred, gt, rng(seed), component="largest")
        assert s.axis == 0 and s.index in (3, 4) and s.positive
        assert s.region.shape == (16, 20)
        assert np.array_equal(s.region, gt[s.index])
    s = pick_error_slice(pred, gt, rng(0), axis=2, component="largest")
    assert s.axis == 2 and s.region.shape == (16, 16) and s.region.sum() == 12

    # weighted choice: both components get picked across seeds, with the right polarity
    polarities = set()
    for seed in range(60):
        s = pick_error_slice(pred, gt, rng(seed))
        polarities.add(s.positive)
        if not s.positive:
            assert s.region.sum() == 4
            assert np.array_equal(s.region, np.take(pred & ~gt, s.index, axis=s.axis))
    assert polarities == {True, False}
    assert pick_error_slice(gt, gt, rng()) is None


def test_pick_error_slice_keeps_one_connected_piece():
    gt = np.zeros((4, 12, 12), dtype=bool)
    # a U shape: connected in 3D through slice 1, but split in two pieces on slice 2
    gt[1, 2:10, 2:10] = True
    gt[2, 2:10, 2:4] = True
    gt[2, 2:10, 8:10] = True
    s = pick_error_slice(np.zeros_like(gt), gt, rng(0), axis=0)
    assert s.index == 1
    s2 = pick_error_slice(np.zeros_like(gt), gt, rng(0), axis=1, component="largest")
    from scipy import ndimage

    assert ndimage.label(s2.region, structure=np.ones((3, 3)))[1] == 1


def _regions():
    disk = np.hypot(*np.mgrid[-15:16, -15:16]) <= 12
    ring = disk & ~(np.hypot(*np.mgrid[-15:16, -15:16]) <= 6)
    ell = np.zeros((30, 30), dtype=bool)
    ell[3:27, 3:9] = True
    ell[21:27, 3:27] = True
    thin = np.zeros((20, 20), dtype=bool)
    thin[10, 2:18] = True
    dot = np.zeros((9, 9), dtype=bool)
    dot[4, 4] = True
    corner = np.zeros((12, 12), dtype=bool)
    corner[:5, :7] = True  # touches the image border
    return {"disk": disk, "ring": ring, "ell": ell, "thin": thin, "dot": dot, "corner": corner}


@pytest.mark.parametrize("kind", ["line", "skeleton", "contour", None])
def test_scribble_inside_region_nonempty_deterministic(kind):
    for name, region in _regions().items():
        for seed in range(4):
            s = simulate_scribble(region, rng(seed), kind=kind)
            assert s.dtype == np.uint8 and s.shape == region.shape
            assert s.any(), name
            inside = np.count_nonzero(s.astype(bool) & region) / np.count_nonzero(s)
            assert inside >= 0.95, (name, kind, seed, inside)
            assert np.array_equal(s, simulate_scribble(region, rng(seed), kind=kind))


def test_scribble_is_a_partial_stroke_not_a_fill():
    disk = _regions()["disk"]
    for seed in range(5):
        s = simulate_scribble(disk, rng(seed), thickness=2)
        assert np.count_nonzero(s) < 0.6 * np.count_nonzero(disk)
    kinds_seen = {np.count_nonzero(simulate_scribble(disk, rng(seed))) for seed in range(10)}
    assert len(kinds_seen) > 1  # different seeds give different scribbles


def test_lasso_covers_region_and_stays_close():
    for name, region in _regions().items():
        for seed in range(4):
            lasso = simulate_lasso(region, rng(seed))
            assert lasso.dtype == np.uint8 and lasso.shape == region.shape
            lb = lasso.astype(bool)
            covered = np.count_nonzero(lb & region) / np.count_nonzero(region)
            assert covered >= 0.9, (name, seed, covered)
            # "roughly covering": no larger than the region's padded bounding box
            ys, xs = np.nonzero(region)
            pad = 6
            box = np.zeros_like(region)
            box[max(ys.min() - pad, 0) : ys.max() + pad + 1, max(xs.min() - pad, 0) : xs.max() + pad + 1] = True
            assert not (lb & ~box).any(), name
            assert np.array_equal(lasso, simulate_lasso(region, rng(seed)))
    # the ring's hole is filled: a lasso is a closed contour
    ring = _regions()["ring"]
    assert simulate_lasso(ring, rng(0))[15, 15] == 1


def test_box2d_jitter():
    region = _regions()["ell"]  # tight box rows 3..27, cols 3..27
    assert simulate_box2d(region, rng(0), jitter=0.0) == ((3, 3), (27, 27))
    boxes = set()
    for seed in range(20):
        (r0, c0), (r1, c1) = b = simulate_box2d(region, rng(seed))
        assert b == simulate_box2d(region, rng(seed))
        assert 0 <= r0 < r1 <= 30 and 0 <= c0 < c1 <= 30
        for v, ref in ((r0, 3), (c0, 3), (r1, 27), (c1, 27)):
            assert abs(v - ref) <= 2  # round(0.1 * 24) = 2
        boxes.add(b)
    assert len(boxes) > 1
    dot = _regions()["dot"]
    (r0, c0), (r1, c1) = simulate_box2d(dot, rng(0))
    assert (r0, c0, r1, c1) == (4, 4, 5, 5)


def test_2d_simulators_reject_empty_and_non_2d():
    empty = np.zeros((5, 5), dtype=bool)
    for f in (simulate_scribble, simulate_lasso, simulate_box2d):
        with pytest.raises(InvalidMaskError):
            f(empty, rng())
        with pytest.raises(InvalidMaskError):
            f(np.ones((2, 2, 2), dtype=bool), rng())


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slice_crop_places_mask_on_slice(axis):
    shape = (6, 7, 8)
    plane_shape = tuple(s for a, s in enumerate(shape) if a != axis)
    mask2d = np.zeros(plane_shape, dtype=np.uint8)
    mask2d[1:3, 2:5] = 1
    mask2d[2, 2] = 0
    index = 3
    crop, (lo, hi) = slice_crop(mask2d, axis, index)
    assert crop.dtype == np.uint8
    assert crop.shape[axis] == 1 and hi[axis] - lo[axis] == 1 and lo[axis] == index
    assert tuple(h - lo_ for lo_, h in zip(lo, hi)) == crop.shape
    vol = np.zeros(shape, dtype=np.uint8)
    vol[tuple(slice(lo_, h) for lo_, h in zip(lo, hi))] = crop
    expected = np.zeros(shape, dtype=np.uint8)
    idx = [slice(None)] * 3
    idx[axis] = index
    expected[tuple(idx)] = mask2d
    assert np.array_equal(vol, expected)
    with pytest.raises(EmptyPromptError):
        slice_crop(np.zeros(plane_shape, dtype=np.uint8), axis, index)


def test_slice_box():
    assert slice_box((1, 2), (4, 6), 0, 5) == ((5, 1, 2), (6, 4, 6))
    assert slice_box((1, 2), (4, 6), 1, 5) == ((1, 5, 2), (4, 6, 6))
    assert slice_box((1, 2), (4, 6), 2, 5) == ((1, 2, 5), (4, 6, 6))


def test_end_to_end_2d_prompt_pipeline():
    gt = np.zeros((10, 40, 40), dtype=bool)
    gt[2:8, 5:30, 5:30] = True
    pred = np.zeros_like(gt)
    pred[2:8, 5:30, 5:15] = True
    r = rng(7)
    s = pick_error_slice(pred, gt, r)
    for sim in (simulate_scribble, simulate_lasso):
        crop, (lo, hi) = slice_crop(sim(s.region, r), s.axis, s.index)
        vol = np.zeros(gt.shape, dtype=bool)
        vol[tuple(slice(a, b) for a, b in zip(lo, hi))] = crop.astype(bool)
        # the prompt mostly targets the error region (missed foreground here)
        err = gt & ~pred
        assert np.count_nonzero(vol & err) / np.count_nonzero(vol) > 0.6
    lo2, hi2 = simulate_box2d(s.region, r)
    lo, hi = slice_box(lo2, hi2, s.axis, s.index)
    assert hi[s.axis] - lo[s.axis] == 1
