"""The torch engine: windows, resampling conventions, AutoZoom, refinement planning, end to end.

End-to-end tests use a small model folder (written with the real checkpoint writer) and, where
the expected mask must be known, a *prompt-following* network whose foreground logit is
``prev_seg + positive prompts - negative prompts`` against a background logit of 0.5.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.ndimage import maximum_filter, minimum_filter

from nnint.backends.torch import magnify, refine, zoom
from nnint.backends.torch.architectures import SMALL_CONFIGURATION, small_plans
from nnint.backends.torch.checkpoint import load_model_folder, write_model_folder
from nnint.backends.torch.engine import (
    TorchEngine,
    ZoomConstants,
    next_zoom,
    object_window,
    prediction_center,
    start_zoom,
)
from nnint.backends.torch.network import build_network
from nnint.backends.torch.rasterise import RasterConfig, build_plan, feed, rasterise
from nnint.errors import DeviceError, InvalidImageError, InvalidMaskError, UnsupportedPromptError
from nnint.image import Image
from nnint.prompts import Box, InitialMask, Lasso, Point, Scribble
from nnint.session import Session

PATCH = 32


# ---------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------


class PromptFollower(torch.nn.Module):
    """Logits [threshold, prev + positives - negatives] from the interaction channels."""

    def __init__(self, n_img=1, mapping=None, threshold=0.5):
        super().__init__()
        mapping = mapping or {"prev_seg": 0, "points": (3, 4), "scribble": (5, 6), "bbox2d": (1, 2)}
        self.n_img = n_img
        self.prev = mapping["prev_seg"]
        self.pos = sorted({v[0] for k, v in mapping.items() if k != "prev_seg"})
        self.neg = sorted({v[1] for k, v in mapping.items() if k != "prev_seg"})
        self.threshold = threshold
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        p = x[:, self.n_img :]
        fg = p[:, self.prev].clone()
        for c in self.pos:
            fg += p[:, c]
        for c in self.neg:
            fg -= p[:, c]
        return torch.stack([torch.full_like(fg, self.threshold), fg], 1)


def _write_folder(path, patch=PATCH, **info):
    from nnint.backends.torch.checkpoint import default_inference_info

    plans = small_plans(patch)
    torch.manual_seed(0)
    net = build_network(plans["configurations"][SMALL_CONFIGURATION]["architecture"], 8, 2)
    return write_model_folder(
        path,
        plans=plans,
        configuration=SMALL_CONFIGURATION,
        network_weights=net.state_dict(),
        inference_info=default_inference_info(**info),
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return load_model_folder(_write_folder(tmp_path_factory.mktemp("m") / "small"))


@pytest.fixture(scope="module")
def folder_2d_only(tmp_path_factory):
    return load_model_folder(_write_folder(tmp_path_factory.mktemp("m2") / "small2d"))


@pytest.fixture(scope="module")
def folder_3d(tmp_path_factory):
    sup = {"scribble": True, "lasso": True, "points": True, "bbox2d": True, "bbox3d": True}
    return load_model_folder(_write_folder(tmp_path_factory.mktemp("m3") / "small3d", supported_interactions=sup))


def image(shape=(40, 48, 44), seed=0):
    rng = np.random.default_rng(seed)
    arr = (rng.normal(100, 20, size=shape)).astype(np.float32)
    arr[:2] = 0
    return arr


def follower_engine(folder, **kw):
    kw.setdefault("network", PromptFollower(mapping=folder.channel_mapping))
    return TorchEngine(folder, **kw)


def apply(mask, update):
    out = mask.copy()
    if update is not None:
        out[update.slices] = update.values
    return out


# ---------------------------------------------------------------------------------------------
# windows, crops, normalisation
# ---------------------------------------------------------------------------------------------


def test_window_arithmetic():
    assert zoom.window((10, 0, 5), (4, 5, 1)) == ((8, -2, 5), (12, 3, 6))
    assert zoom.window((0, 0, 0), (192, 192, 192)) == ((-96,) * 3, (96,) * 3)
    assert zoom.clip_box((-3, 2, 5), (4, 20, 9), (10, 10, 6)) == ((0, 2, 5), (4, 10, 6))
    assert zoom.clip_box((12, 0, 0), (15, 1, 1), (10, 10, 10)) == ((10, 0, 0), (10, 1, 1))
    assert zoom.scaled_size((192, 192, 192), 1.5) == (288, 288, 288)
    assert zoom.scaled_size((192, 192, 192), 3.375) == (648, 648, 648)
    assert zoom.scaled_size((64, 64, 64), 1.421875) == (91, 91, 91)
    assert [zoom.dilation_kernel_size(z) for z in (1, 1.25, 1.5, 2.25, 3.375, 4)] == [1, 1, 3, 3, 5, 7]


def test_crop_pads_with_zero_in_normalised_space():
    arr = image((6, 7, 8))
    mean, std, bbox = zoom.image_statistics(arr)
    src = zoom.ImageSource(arr, mean, std)
    out = src.crop((-2, 5, 6), (3, 9, 10))
    assert out.shape == (1, 5, 4, 4)
    assert (out[0, :2] == 0).all() and (out[0, :, 2:] == 0).all() and (out[0, :, :, 2:] == 0).all()
    expected = (torch.from_numpy(arr[:3, 5:7, 6:8]) - torch.tensor(mean)) / torch.tensor(std)
    np.testing.assert_array_equal(out[0, 2:, :2, :2], expected.numpy())
    m = np.zeros((6, 7, 8), np.uint8)
    m[0, 5, 6] = 1
    crop = zoom.mask_crop(m, (-2, 5, 6), (3, 9, 10))
    assert crop[2, 0, 0] == 1 and crop.sum() == 1


def test_image_statistics_equal_official_recipe():
    arr = image((20, 24, 18)).astype(np.int16)
    arr[:, :3] = 0
    mean, std, bbox = zoom.image_statistics(arr)
    assert bbox == ((2, 3, 0), (20, 24, 18))
    full = torch.from_numpy(arr.astype(np.float32))[2:, 3:, :]
    assert mean == float(full.mean()) and std == float(full.std())
    src = zoom.ImageSource(arr, mean, std)
    normalised = ((torch.from_numpy(arr.astype(np.float32)) - full.mean()) / full.std()).numpy()
    np.testing.assert_array_equal(src.crop((0, 0, 0), arr.shape)[0], normalised)


@pytest.mark.parametrize(
    "arr, match",
    [
        (np.zeros((5, 5, 5), np.float32), "all zero"),
        (np.full((5, 5, 5), np.nan, np.float32), "NaN"),
        (np.full((5, 5, 5), 3.0, np.float32), "constant"),
    ],
)
def test_invalid_images(arr, match):
    with pytest.raises(InvalidImageError, match=match):
        zoom.image_statistics(arr)


# ---------------------------------------------------------------------------------------------
# resampling conventions
# ---------------------------------------------------------------------------------------------


def test_hand_computed_resampling_cases():
    # area 3 -> 2: bins [0, 2) and [1, 3)
    st, en = zoom.area_bins(3, 2)
    assert st.tolist() == [0, 1] and en.tolist() == [2, 3]
    x = torch.tensor([1.0, 2.0, 4.0]).view(1, 1, 3)
    assert zoom.area_resample(x, (1, 1, 2)).flatten().tolist() == [1.5, 3.0]
    # linear 4 -> 2: sources 0.5 and 2.5
    i0, i1, l0, l1 = zoom.linear_taps(4, 2)
    assert i0.tolist() == [0, 2] and i1.tolist() == [1, 3] and l1.tolist() == [0.5, 0.5]
    # linear 2 -> 4: sources clamp at 0: -0.25 -> 0, 0.25, 0.75, 1.25 -> (1, 1)
    i0, i1, l0, l1 = zoom.linear_taps(2, 4)
    assert i0.tolist() == [0, 0, 0, 1] and i1.tolist() == [1, 1, 1, 1]
    assert l1.tolist() == [0.0, 0.25, 0.75, 0.25]
    # nearest 3 -> 2: floor(o * 1.5)
    assert zoom.nearest_index(3, 2).tolist() == [0, 1]
    assert zoom.nearest_index(768, 192)[:3].tolist() == [0, 4, 8]


@settings(max_examples=20, deadline=None)
@given(
    ins=st.tuples(*(st.integers(2, 30) for _ in range(3))),
    outs=st.tuples(*(st.integers(2, 30) for _ in range(3))),  # (1, 1, 1) is a global mean in torch
    seed=st.integers(0, 1000),
)
def test_resampling_is_bit_identical_to_torch(ins, outs, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(ins, generator=g)
    ref = F.interpolate(x[None, None], size=outs, mode="trilinear", align_corners=False)[0, 0]
    np.testing.assert_array_equal(zoom.linear_resample(x.numpy(), outs), ref.numpy())
    h = (torch.rand(ins, generator=g) * 50).half() * (torch.rand(ins, generator=g) > 0.5)
    ref = F.interpolate(h[None, None], size=outs, mode="area")[0, 0]
    np.testing.assert_array_equal(zoom.area_resample(h, outs, "half").numpy(), ref.numpy())
    b = (torch.rand(ins, generator=g) > 0.5).half()
    ref = F.interpolate(b[None, None], size=outs, mode="area")[0, 0]
    np.testing.assert_array_equal(zoom.area_resample(b, outs, "binary").numpy(), ref.numpy())
    ref = F.interpolate(x[None, None], size=outs, mode="area")[0, 0]
    np.testing.assert_allclose(zoom.area_resample(x, outs, "float").numpy(), ref.numpy(), rtol=1e-6, atol=1e-6)  # float32 summation order
    idx = [zoom.nearest_index(i, o) for i, o in zip(ins, outs)]
    ref = F.interpolate(x[None, None], size=outs, mode="nearest")[0, 0]
    np.testing.assert_array_equal(x.numpy()[np.ix_(*idx)], ref.numpy())


def _dense_zoomed_channel(full_window: np.ndarray, patch, kernel):
    t = torch.from_numpy(full_window.astype(np.float32))[None, None]
    if kernel > 1:
        r = (kernel - 1) // 2
        t = F.max_pool3d(F.pad(t, [r] * 6, mode="replicate"), kernel, stride=1)
    return F.interpolate(t.half(), size=patch, mode="area")[0, 0]


@settings(max_examples=25, deadline=None)
@given(
    size=st.tuples(*(st.integers(6, 40) for _ in range(3))),
    kernel=st.sampled_from([1, 3, 5, 7]),
    seed=st.integers(0, 10_000),
)
def test_sparse_zoomed_channel_equals_dense(size, kernel, seed):
    rng = np.random.default_rng(seed)
    patch = (5, 4, 6)
    full = np.zeros(size, np.float16)
    lo = [int(rng.integers(0, s)) for s in size]
    hi = [int(min(s, a + rng.integers(1, 6))) for a, s in zip(lo, size)]
    full[tuple(slice(a, b) for a, b in zip(lo, hi))] = (rng.random([b - a for a, b in zip(lo, hi)]) * 3).astype(
        np.float16
    )

    def read(a, b):
        return full[tuple(slice(i, j) for i, j in zip(a, b))]

    got = zoom.zoomed_channel(read, lo, hi, size, patch, kernel, "half")
    np.testing.assert_array_equal(got.numpy(), _dense_zoomed_channel(full, patch, kernel).numpy())


def test_zoomed_image_equals_dense_padded_window():
    arr = image((30, 26, 28))
    mean, std, _ = zoom.image_statistics(arr)
    src = zoom.ImageSource(arr, mean, std)
    for center, size in [((15, 13, 14), (45, 45, 45)), ((2, 25, 0), (40, 36, 50))]:
        lo, hi = zoom.window(center, size)
        dense = torch.from_numpy(src.crop(lo, hi)[0])
        ref = F.interpolate(dense[None, None], size=(16, 16, 16), mode="trilinear", align_corners=False)[0, 0]
        got = zoom.zoomed_image(src, lo, size, (16, 16, 16), z_chunk=5)[0]
        np.testing.assert_array_equal(got.numpy(), ref.numpy())


def test_upsample_coarse_equals_torch_interpolate_threshold():
    rng = np.random.default_rng(1)
    pred = (rng.random((8, 8, 8)) > 0.5).astype(np.uint8)
    size = (13, 12, 17)
    ref = F.interpolate(torch.from_numpy(pred).float()[None, None], size=size, mode="trilinear", align_corners=False)
    ref = (ref[0, 0] >= 0.5).numpy().astype(np.uint8)
    np.testing.assert_array_equal(refine.upsample_coarse(pred, size, (0, 0, 0), size, z_chunk=4), ref)
    np.testing.assert_array_equal(refine.upsample_coarse(pred, size, (2, 3, 4), (9, 12, 10)), ref[2:9, 3:12, 4:10])


# ---------------------------------------------------------------------------------------------
# AutoZoom border test
# ---------------------------------------------------------------------------------------------


def _face(n_cur, n_prev, axis=2, last=True, size=32):
    pred = np.zeros((size,) * 3, np.uint8)
    prev = np.zeros((size,) * 3, np.uint8)
    sl = [slice(None)] * 3
    sl[axis] = size - 1 if last else 0
    for arr, n in ((pred, n_cur), (prev, n_prev)):
        face = np.zeros(size * size, np.uint8)
        face[:n] = 1
        arr[tuple(sl)] = face.reshape(size, size)
    return pred, prev


def test_border_change_thresholds():
    bc = zoom.border_changed
    assert bc(*_face(101, 0))  # empty prev: > 100 new voxels on a face
    assert not bc(*_face(100, 0))
    assert not bc(*_face(0, 0))
    for axis in range(3):
        for last in (False, True):
            assert bc(*_face(150, 0, axis, last))
    # relative change: 500 -> 601 is +20.2 % with 101 changed voxels
    assert bc(*_face(601, 500))
    assert not bc(*_face(600, 500))  # exactly 20 %
    assert not bc(*_face(590, 490))  # 100 changed voxels only
    # absolute: > 1500 changed triggers whatever the ratio
    pred, prev = _face(1000, 0, size=64)
    assert bc(pred, prev)
    assert not bc(*_face(1000, 900, size=64))
    assert bc(*_face(2600, 1000, size=64))
    # inner slices are not looked at
    pred = np.zeros((32,) * 3, np.uint8)
    pred[1:-1, 1:-1, 1:-1] = 1
    assert not bc(pred, np.zeros_like(pred))
    # per-axis thresholds
    assert not bc(*_face(150, 0, axis=2), (1500, 1500, 1500), (100, 100, 200))
    assert bc(*_face(150, 0, axis=1), (1500, 1500, 1500), (100, 100, 200))


def test_zoom_constants():
    off = ZoomConstants.official()
    assert off.margin == (24, 24, 24) and off.abs_threshold == (1500, 1500, 1500)
    assert ZoomConstants.scaled((192, 192, 192)) == off
    small = ZoomConstants.scaled((64, 64, 64))
    assert small.margin == (8, 8, 8) and small.min_threshold[0] == pytest.approx(100 / 9)


# ---------------------------------------------------------------------------------------------
# refinement planning
# ---------------------------------------------------------------------------------------------


def test_opening_equals_whole_array_filter():
    rng = np.random.default_rng(0)
    diff = (rng.random((30, 25, 20)) < 0.3).astype(np.uint8)
    diff[5:15, 5:15, 5:15] = 1
    diff[:, :, -1] = 1
    expected = maximum_filter(minimum_filter(diff, 5, mode="nearest"), 5, mode="nearest")
    np.testing.assert_array_equal(refine.opening(diff), expected)
    assert not refine.opening(np.zeros((5, 5, 5), np.uint8)).any()


def _diff_maps():
    rng = np.random.default_rng(7)
    from scipy.ndimage import gaussian_filter

    maps = []
    for i in range(6):
        shape = tuple(int(v) for v in rng.integers(20, 70, 3))
        if i % 3 == 0:
            m = gaussian_filter(rng.random(shape), 3) > 0.53
        elif i % 3 == 1:
            m = rng.random(shape) < 0.003
        else:
            m = np.zeros(shape, bool)
            m[shape[0] // 2] = True
        maps.append(m)
    return maps


@pytest.mark.parametrize("m", _diff_maps())
def test_planner_covers_every_diff_voxel_deterministically(m):
    box, margin = (32, 32, 32), (8, 8, 8)
    boxes = refine.plan_boxes(m, box, margin)
    assert boxes == refine.plan_boxes(m, box, margin)  # deterministic
    covered = np.zeros(m.shape, bool)
    for lo, hi in boxes:
        assert tuple(b - a for a, b in zip(lo, hi)) == box
        c = tuple(a + s // 2 for a, s in zip(lo, box))
        slo, shi = refine.shrunk_box(c, box, margin)
        sl = tuple(slice(max(a, 0), max(b, 0)) for a, b in zip(slo, shi))
        covered[sl] = True
    assert not (m & ~covered).any()
    if m.any():
        assert boxes
    # the official seeded-RNG fallback is reproducible
    a = refine.plan_boxes(m, box, margin, fallback=refine.OfficialRandomFallback(np.random.RandomState(3)))
    b = refine.plan_boxes(m, box, margin, fallback=refine.OfficialRandomFallback(np.random.RandomState(3)))
    assert a == b


def test_planner_greedy_tie_break_and_empty():
    assert refine.plan_boxes(np.zeros((10, 10, 10), bool), (4, 4, 4), (1, 1, 1)) == []
    m = np.zeros((9, 9, 9), bool)
    m[4, 4, 4] = True
    assert refine.plan_boxes(m, (4, 4, 4), (1, 1, 1)) == [((2, 2, 2), (6, 6, 6))]
    # two separate blobs: two boxes, the first grid candidate wins ties (C order)
    m = np.zeros((40, 10, 10), bool)
    m[2:4, 4:6, 4:6] = True
    m[30:32, 4:6, 4:6] = True
    boxes = refine.plan_boxes(m, (8, 8, 8), (2, 2, 2))
    assert len(boxes) == 2 and boxes[0][0][0] < boxes[1][0][0]


def test_evenly_spaced_fallback_clears_everything():
    u = np.zeros((30, 30, 30), bool)
    u[::7, ::5, ::3] = True
    centres = refine.evenly_spaced_fallback()(u, (10, 10, 10), (2, 2, 2))
    assert not u.any() and centres


# ---------------------------------------------------------------------------------------------
# prediction centre and zoom
# ---------------------------------------------------------------------------------------------


def test_prediction_center_rules():
    patch = (192, 192, 192)
    assert prediction_center(Point((3.2, 4.5, 5.7)), patch) == ((3, 5, 6), 1.0)
    # box centre with Python rounding (half to even), zoom from the extent
    c, z = prediction_center(Box((10, 20, 30), (11, 41, 51)), patch)
    assert c == (10, 30, 40) and z == 1.0
    c, z = prediction_center(Box((11, 0, 0), (12, 200, 150)), patch)
    assert c == (12, 100, 75) and z == pytest.approx(264 / 192)
    # crop prompts: half-open bbox of the set voxels
    m = np.zeros((1, 5, 6), np.uint8)
    m[0, 1, 2] = m[0, 3, 4] = 1
    assert prediction_center(Scribble(m, (10, 20, 30)), patch) == ((10, 22, 34), 1.0)
    assert prediction_center(Box((11, 0, 0), (12, 70, 60)), (64, 64, 64))[1] == 1.421875


# ---------------------------------------------------------------------------------------------
# the engine end to end
# ---------------------------------------------------------------------------------------------


def test_capabilities_and_licence(folder, folder_3d):
    eng = follower_engine(folder)
    assert eng.capabilities.prompt_kinds == {"point", "box2d", "scribble", "lasso", "initial_mask"}
    assert eng.capabilities.interaction_decay == 0.98
    assert eng.capabilities.preferred_scribble_thickness == (2.0, 2.0, 2.0)
    assert isinstance(eng.license, str)
    assert "box3d" in follower_engine(folder_3d).capabilities.prompt_kinds


def test_point_box_scribble_lasso_follow_the_prompts(folder):
    arr = image()
    eng = follower_engine(folder, constants="official")
    eng.set_image(Image(arr))
    mask = np.zeros(arr.shape, np.uint8)
    # positive point: the 9^3 ball (kernel > 0.5 threshold) around the point, window written
    p = Point((20, 24, 22))
    upd = eng.predict([p], mask)
    assert upd.lo == (4, 8, 6) and upd.values.shape == (PATCH,) * 3
    mask = apply(mask, upd)
    assert mask[20, 24, 22] == 1 and mask[20, 24, 26] == 0 and mask.sum() > 20
    # a negative point at the same place: prev 1 + 0.98 (decayed positive) - 1 > 0.5 keeps it,
    # without the positive prompt (e.g. after an initial mask) prev 1 - 1 removes it
    n = Point((20, 24, 22), False)
    assert apply(mask, eng.predict([p, n], mask))[20, 24, 22] == 1
    mask2 = apply(mask, eng.predict([n], mask))
    assert mask2[20, 24, 22] == 0 and mask2.sum() < mask.sum()
    # a 2D box: exactly its slab
    b = Box((10, 5, 6), (11, 25, 30))
    m = apply(np.zeros_like(mask), eng.predict([b], np.zeros_like(mask)))
    assert m[10, 5:25, 6:30].all() and m.sum() == 20 * 24
    # scribble and lasso crops: exactly their voxels
    crop = np.zeros((1, 6, 7), np.uint8)
    crop[0, 1:5, 2] = 1
    crop[0, 4, 2:6] = 1
    s = Scribble(crop, (30, 10, 10))
    m = apply(np.zeros_like(mask), eng.predict([s], np.zeros_like(mask)))
    assert m.sum() == crop.sum() and (m[30, 10:16, 10:17] == crop[0]).all()
    lasso = Lasso(np.ones((1, 5, 5), np.uint8), (12, 12, 12))
    m = apply(np.zeros_like(mask), eng.predict([lasso], np.zeros_like(mask)))
    assert m.sum() == 25
    assert eng.last_run["zooms"] == [1.0]


def test_initial_mask(folder):
    arr = image()
    eng = follower_engine(folder)
    eng.set_image(arr)
    base = np.zeros(arr.shape, np.uint8)
    base[10:30, 10:40, 8:36] = 1
    assert eng.predict([InitialMask.from_full_mask(base)], base) is None
    upd = eng.predict([InitialMask.from_full_mask(base, predict=True)], base)
    out = apply(base, upd)
    assert len(eng.last_run["zooms"]) >= 1 and eng.last_run["zooms"][0] > 1  # 30 + 10 > 32: zoomed out
    assert eng.last_run["boxes"]  # force_full_refine covers the old segmentation
    assert (out == base).mean() > 0.99


def test_large_prompt_zooms_out_and_refines(folder):
    from scipy.ndimage import binary_dilation

    arr = image((40, 96, 90))
    eng = follower_engine(folder)  # patch-scaled constants (margin 4 for a 32^3 patch)
    eng.set_image(arr)
    mask = np.zeros(arr.shape, np.uint8)
    crop = np.ones((8, 80, 76), np.uint8)
    s = Scribble(crop, (16, 8, 7))
    upd = eng.predict([s], mask)
    run = eng.last_run
    assert run["zooms"][0] == pytest.approx((80 + PATCH // 3) / PATCH)
    assert len(run["boxes"]) > 1 and run["forwards"] == len(run["zooms"]) + len(run["boxes"])
    assert upd.lo == tuple(max(0, v) for v in refine.union_box(run["boxes"])[0])
    out = apply(mask, upd)
    target = np.zeros_like(mask)
    target[16:24, 8:88, 7:83] = 1
    # every scribble voxel refined to foreground; the coarse mask (fed as prev_seg) adds a rim only
    assert out[target == 1].all()
    assert not (out & ~binary_dilation(target, iterations=4)).any()
    # deterministic
    upd2 = eng.predict([s], mask)
    assert upd2.lo == upd.lo and np.array_equal(upd2.values, upd.values)


def test_thin_box_refines_one_box_at_the_centre(folder):
    """Official behaviour: the 5^3 opening removes a one-voxel slab from the diff map, so a zoomed
    2D box is refined by the single fallback box around its centre."""
    arr = image((40, 96, 90))
    eng = follower_engine(folder, constants="official")
    eng.set_image(arr)
    b = Box((20, 5, 6), (21, 90, 80))
    eng.predict([b], np.zeros(arr.shape, np.uint8))
    assert eng.last_run["zooms"][0] > 1
    assert eng.last_run["boxes"] == [refine.full_box(prediction_center(b, (PATCH,) * 3)[0], (PATCH,) * 3)]


def test_autozoom_follows_border_changes(folder):
    arr = image((64, 64, 64))
    mask = np.zeros(arr.shape, np.uint8)
    # a big prompted structure crossing the window border drives the zoom out
    crop = np.ones((30, 60, 60), np.uint8)
    s = Scribble(crop, (17, 2, 2))
    eng = follower_engine(folder)
    eng.set_image(arr)
    # a point in the middle of it: the first pass at zoom 1 sees the scribble on all borders
    eng.predict([s, Point((32, 32, 32))], mask)
    assert eng.last_run["zooms"][:2] == [1.0, 1.5]
    no_zoom = follower_engine(folder, autozoom=False)
    no_zoom.set_image(arr)
    no_zoom.predict([s, Point((32, 32, 32))], mask)
    assert no_zoom.last_run["zooms"] == [1.0]


def test_mask_argument_is_not_modified_and_result_is_pure(folder):
    arr = image()
    eng = follower_engine(folder)
    eng.set_image(arr)
    mask = np.zeros(arr.shape, np.uint8)
    mask[5:9, 5:9, 5:9] = 1
    before = mask.copy()
    prompts = [Point((20, 20, 20)), Point((21, 21, 21), False)]
    a = eng.predict(prompts, mask)
    b = eng.predict(list(prompts), mask.copy())
    assert np.array_equal(mask, before)
    assert a.lo == b.lo and np.array_equal(a.values, b.values)


def test_real_network_forward(folder):
    arr = image()
    eng = TorchEngine(folder, threads=None, autozoom=False)  # seeded random weights would zoom to 4x
    eng.set_image(arr)
    upd = eng.predict([Point((20, 24, 22))], np.zeros(arr.shape, np.uint8))
    assert upd is not None and upd.values.dtype == np.uint8 and set(np.unique(upd.values)) <= {0, 1}
    assert eng.last_run["forwards"] >= 1


def test_session_integration(folder):
    arr = image()
    eng = follower_engine(folder)
    session = Session(Image(arr), eng)
    change = session.add(Box((10, 5, 6), (11, 25, 30)))
    assert change is not None and session.active.mask[10, 5:25, 6:30].all()
    session.add(Point((30, 30, 30)))
    assert session.active.mask[30, 30, 30] == 1 and session.active.mask[10, 5:25, 6:30].all()
    session.undo()
    assert session.active.mask[30, 30, 30] == 0 and session.active.mask[10, 5:25, 6:30].all()


def test_invalid_inputs(folder, folder_2d_only):
    eng = follower_engine(folder_2d_only)
    with pytest.raises(InvalidImageError):
        eng.set_image(np.zeros((10, 10, 10), np.float32))
    bad = image()
    bad[3, 3, 3] = np.nan
    with pytest.raises(InvalidImageError):
        eng.set_image(bad)
    with pytest.raises(InvalidImageError, match="channel"):
        eng.set_image(np.stack([image(), image()]))
    arr = image()
    eng.set_image(arr)
    mask = np.zeros(arr.shape, np.uint8)
    with pytest.raises(UnsupportedPromptError, match="3D"):
        eng.predict([Box((2, 2, 2), (8, 8, 8))], mask)
    with pytest.raises(InvalidMaskError):
        eng.predict([Point((1, 1, 1))], np.zeros((3, 3, 3), np.uint8))
    with pytest.raises(DeviceError):
        TorchEngine(folder, precision="fp16", network=PromptFollower())
    with pytest.raises(DeviceError):
        TorchEngine(folder, precision="int8", network=PromptFollower())
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA"):
            TorchEngine(folder, device="cuda", network=PromptFollower())


def test_fast_precision_resolves_to_what_the_device_runs_natively(folder):
    from nnint.backends.torch.engine import resolve_precision

    native_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert resolve_precision("fast", torch.device("cpu")) == ("bf16" if native_bf16 else "fp32")
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    eng = TorchEngine(folder, precision="fast", network=PromptFollower())
    assert eng.precision == ("bf16" if native_bf16 else "fp32")


def test_registered_model_engine_options_are_defaults(folder):
    from nnint.backends.torch.engine import resolve_precision
    from nnint.engine import ModelSpec

    spec = ModelSpec("m", "torch", path=folder.path, details={"engine_options": {"precision": "fast", "autozoom": False}})
    eng = TorchEngine.from_model(spec)
    assert eng.precision == resolve_precision("fast", torch.device("cpu")) and eng.autozoom is False
    assert TorchEngine.from_model(spec, precision="fp32").precision == "fp32"  # explicit options win


def test_3d_box_on_bbox3d_model(folder_3d):
    arr = image()
    eng = follower_engine(folder_3d)
    eng.set_image(arr)
    m = apply(
        np.zeros(arr.shape, np.uint8), eng.predict([Box((10, 10, 10), (20, 22, 24))], np.zeros(arr.shape, np.uint8))
    )
    assert m[10:20, 10:22, 10:24].all() and m.sum() == 10 * 12 * 14


def test_from_model_and_plugin(folder):
    from nnint.engine import ModelSpec

    eng = TorchEngine.from_model(ModelSpec("small", "torch", path=folder.path), device="cpu")
    assert eng.patch_size == (PATCH,) * 3


def test_input_channels_follow_plan(folder):
    """The zoom-1 input is [image, prev_seg, prompts / I] of the window, in mapping order."""
    arr = image()
    mean, std, _ = zoom.image_statistics(arr)
    src = zoom.ImageSource(arr, mean, std)
    cfg = RasterConfig(arr.shape, folder.channel_mapping, 7, folder.supported_interactions, 0.98)
    prompts = [Point((5, 5, 5)), Box((6, 1, 1), (7, 9, 9), False)]
    plan = build_plan(prompts, cfg)
    mask = np.zeros(arr.shape, np.uint8)
    mask[4:6, 4:6, 4:6] = 1
    inp = zoom.build_network_input(src, plan, mask, (6, 5, 5), 1.0, (PATCH,) * 3, 0, [3, 4, 5, 6])
    x = inp.x.numpy()[0]
    lo, hi = inp.win_lo, inp.win_hi
    np.testing.assert_array_equal(x[0], src.crop(lo, hi)[0])
    np.testing.assert_array_equal(x[1], zoom.mask_crop(mask, lo, hi))
    np.testing.assert_array_equal(x[2:], feed(rasterise(plan, lo, hi), plan.intensity)[1:].astype(np.float32))


class RimFollower(PromptFollower):
    """A PromptFollower whose answer reaches one voxel beyond every prompt (as a real model's might)."""

    def forward(self, x):
        logits = super().forward(x)
        fg = (logits[:, 1] > logits[:, 0]).float()[:, None]
        grown = torch.nn.functional.max_pool3d(fg, 3, stride=1, padding=1)[:, 0]
        return torch.stack([torch.full_like(grown, 0.5), grown], 1)


def test_confine_to_box_keeps_the_answer_inside_the_box_until_a_click_outside(folder_3d):
    arr = image()
    box = Box((10, 10, 10), (20, 22, 24))
    empty = np.zeros(arr.shape, np.uint8)
    free = follower_engine(folder_3d, network=RimFollower(mapping=folder_3d.channel_mapping))
    free.set_image(arr)
    assert apply(empty, free.predict([box], empty)).sum() == 12 * 14 * 16  # the rim leaks out
    eng = follower_engine(folder_3d, network=RimFollower(mapping=folder_3d.channel_mapping), confine_to_box=True)
    eng.set_image(arr)
    m = apply(empty, eng.predict([box], empty))
    assert m[10:20, 10:22, 10:24].all() and m.sum() == 10 * 12 * 14
    # a negative click outside changes nothing about the limit
    neg = [box, Point((15, 15, 25), positive=False)]
    assert apply(m, eng.predict(neg, m)).sum() == 10 * 12 * 14
    # a positive click outside says the box was too tight: the answer may leave it
    m2 = apply(m, eng.predict([box, Point((15, 15, 26))], m))
    assert m2[15, 15, 26] == 1 and m2.sum() > 10 * 12 * 14


def test_one_way_corrections_keep_a_negative_click_from_growing_the_object(folder_3d):
    arr = image()
    mask = np.zeros(arr.shape, np.uint8)
    mask[10:30, 10:30, 10:30] = 1
    click = [Point((20, 20, 12), positive=False)]
    for one_way in (False, True):
        net = RimFollower(mapping=folder_3d.channel_mapping)
        eng = follower_engine(folder_3d, network=net, one_way_corrections=one_way)
        eng.set_image(arr)
        m = apply(mask, eng.predict(click, mask))
        assert m[20, 20, 12] == 0
        # the network's rim grows the object everywhere; one way, a negative click only removes
        assert bool((m & ~mask).any()) != one_way


# ---------------------------------------------------------------------------------------------
# magnified windows (engine option ``magnify``)
# ---------------------------------------------------------------------------------------------

MAG_MAPPING = {"prev_seg": 0, "points": (3, 4), "scribble": (5, 6), "bbox2d": (1, 2), "bbox3d": (1, 2)}
MAG_SUPPORTED = {"points": True, "scribble": True, "lasso": False, "bbox2d": True, "bbox3d": True}


def _config(shape, decay=0.98):
    return RasterConfig(shape=shape, channel_mapping=MAG_MAPPING, num_interaction_channels=7,
                        supported=MAG_SUPPORTED, decay=decay, point_radius=4)


def test_start_zoom_and_ladder():
    patch = (96, 96, 96)
    assert start_zoom(Point((5, 5, 5)), 1.0, patch, 1.0, ((0, 0, 0), (3, 3, 3))) == 1.0  # magnify 1: official
    # a first point says nothing about size: fully magnified; a correction: the object as it stands
    assert start_zoom(Point((5, 5, 5)), 1.0, patch, 3.0) == pytest.approx(1 / 3)
    assert start_zoom(Point((5, 5, 5)), 1.0, patch, 2.0) == 0.5
    assert start_zoom(Point((5, 5, 5)), 1.0, patch, 3.0, ((4, 4, 4), (10, 8, 6))) == pytest.approx((6 + 32) / 96)
    assert start_zoom(Point((5, 5, 5)), 1.0, patch, 3.0, ((5, 5, 5), (6, 6, 6))) == pytest.approx(33 / 96)
    assert start_zoom(Point((5, 5, 5)), 1.0, patch, 3.0, ((0, 0, 0), (16, 8, 6))) == 1.0  # patch / 6 across
    assert start_zoom(Point((30, 5, 5)), 1.0, patch, 3.0, ((4, 4, 4), (10, 8, 6))) == 1.0  # the click far out
    # a small box (under patch / 6 = 16 across): the official window without its floor of 1
    assert start_zoom(Box((0, 0, 0), (10, 12, 8)), 1.0, patch, 3.0) == pytest.approx((12 + 32) / 96)
    assert start_zoom(Box((0, 0, 0), (2, 2, 2)), 1.0, patch, 3.0) == pytest.approx(34 / 96)
    assert start_zoom(Box((0, 0, 0), (2, 2, 2)), 1.0, patch, 2.0) == 0.5  # at most 2x
    assert start_zoom(Box((0, 0, 0), (10, 90, 8)), 1.27, patch, 3.0) == 1.27  # large: official
    crop = np.zeros((1, 6, 6), np.uint8)
    crop[0, 1:4, 2] = 1
    assert start_zoom(Scribble(crop, (3, 3, 3)), 1.0, patch, 2.0) == pytest.approx(0.5)  # 3 across: at most 2x
    # a small scribble on a large object: the object's extent decides
    assert start_zoom(Scribble(crop, (3, 3, 3)), 1.0, patch, 2.0, ((0, 0, 0), (90, 9, 9))) == 1.0
    ladder = [1 / 3]
    while ladder[-1] < 4.0:
        ladder.append(next_zoom(ladder[-1]))
    assert ladder == pytest.approx([1 / 3, 0.5, 0.75, 1.0, 1.5, 2.25, 3.375, 4.0])
    assert next_zoom(1.0) == 1.5  # the official steps from 1 on


def test_object_window_rule():
    patch = (96, 96, 96)
    big = ((10, 10, 10), (80, 150, 90))  # 150 voxels along y
    # a positive click on a large object: the box rule's window around the object and the click
    c, z = object_window(Point((40, 160, 50)), (40, 160, 50), 1.0, patch, big)
    assert c == (45, 86, 50) and z == pytest.approx((151 + 32) / 96)
    # capped at the largest zoom
    assert object_window(Point((40, 400, 50)), (40, 400, 50), 1.0, patch, big)[1] == 4.0
    # no change: a negative click, a first click, an object that fits the 1x window with the click
    for prompt, bounds in ((Point((40, 160, 50), False), big), (Point((40, 160, 50)), None),
                           (Point((40, 60, 50)), ((30, 30, 30), (70, 70, 70)))):
        assert object_window(prompt, prompt.index, 1.0, patch, bounds) == (prompt.index, 1.0)
    # other prompts keep their own window
    box = Box((0, 0, 0), (10, 10, 10))
    assert object_window(box, (5, 5, 5), 1.0, patch, big) == ((5, 5, 5), 1.0)


def test_zoom_to_object_starts_positive_corrections_zoomed_out(folder):
    arr = image((64, 72, 64))
    mask = np.zeros(arr.shape, np.uint8)
    mask[20:44, 4:60, 20:44] = 1  # 56 voxels along y: more than patch - patch // 3 = 22 with the click
    click = Point((32, 66, 32))
    for on, first in ((False, 1.0), (True, (63 + PATCH // 3) / PATCH)):
        eng = follower_engine(folder, zoom_to_object=on)
        eng.set_image(arr)
        eng.predict([Point((32, 30, 32)), click], mask)
        assert eng.last_run["zooms"][0] == pytest.approx(first)
        assert eng.last_run["center"] == ((32, 66, 32) if not on else (32, 36, 32))  # round(35.5)


def test_point_keeps_its_patch_footprint_on_the_fine_grid():
    shape = (40, 40, 40)
    plan = build_plan([Point((20, 21, 22)), Point((30, 30, 30), False)], _config(shape))
    win_lo, size, patch = (12, 13, 14), (16, 16, 16), (48, 48, 48)  # 3x
    fine = magnify.magnified_plan(plan, win_lo, size, patch, 4)
    out = rasterise(fine, (0, 0, 0), patch)
    pos = out[MAG_MAPPING["points"][0]]
    assert np.count_nonzero(pos) == 257  # the full kernel, not a 3x ball
    peak = np.unravel_index(int(np.argmax(pos)), pos.shape)
    # the fine voxel holding the centre of native voxel (20, 21, 22): floor((c - lo + 0.5) * 3)
    assert peak == (25, 25, 25)
    # the older positive point decays against the newer negative one as on the image grid
    native = rasterise(plan, (0, 0, 0), shape)
    assert pos.max() == native[MAG_MAPPING["points"][0]].max()
    # the negative point (30, 30, 30) lies outside the window: nothing written, plan intensity kept
    assert not out[MAG_MAPPING["points"][1]].any() and fine.intensity == plan.intensity


def test_boxes_and_scribbles_are_nearest_resampled_with_renormalisations_kept():
    shape = (30, 30, 30)
    crop = np.zeros((1, 7, 9), np.uint8)
    crop[0, 2:6, 1:8] = 1
    crop[0, 4, 4] = 0
    prompts = [Box((8, 9, 10), (14, 20, 18)), Scribble(crop, (12, 6, 7), positive=False)]
    prompts += [Box((0, 0, 0), (2, 2, 2))] * 3  # outside the window
    prompts += [Box((1, 1, 1), (3, 4, 5)), Box((9, 11, 12), (10, 15, 16), positive=False)] * 8
    plan = build_plan(prompts, _config(shape, decay=0.5))  # 1/0.5^21 > 65504: renormalised
    assert plan.renorms
    win_lo, size, patch = (5, 6, 7), (12, 12, 12), (36, 36, 36)
    fine = rasterise(magnify.magnified_plan(plan, win_lo, size, patch, 4), (0, 0, 0), patch)
    native = rasterise(plan, win_lo, [a + s for a, s in zip(win_lo, size)])
    want = native.repeat(3, axis=1).repeat(3, axis=2).repeat(3, axis=3)
    assert np.array_equal(fine, want)


def test_shrink_keeps_voxels_at_least_half_covered():
    pred = np.zeros((6, 6, 6), np.uint8)
    pred[:3, :3, :3] = 1  # one whole coarse voxel at 3x
    pred[3:, 3:, 3:5] = 1  # 18 of 27: kept
    pred[:3, 3:, :1] = 1  # 9 of 27: dropped
    out = magnify.shrink(pred, (2, 2, 2))
    assert out.dtype == np.uint8 and out.tolist() == [[[1, 0], [0, 0]], [[0, 0], [0, 1]]]


def test_a_correction_on_a_small_object_is_answered_magnified(folder):
    arr = image()
    mask = np.zeros(arr.shape, np.uint8)
    mask[20, 24, 20:23] = 1  # a 3-voxel object so far
    prompts = [Point((20, 24, 21)), Point((20, 24, 22))]
    answers = {}
    for m in (1, 3):
        # a follower that keeps the whole 9^3 point footprint (kernel > 0.05)
        eng = follower_engine(folder, magnify=m, network=PromptFollower(mapping=folder.channel_mapping, threshold=0.05))
        eng.set_image(arr)
        upd = eng.predict(prompts, mask)
        answers[m] = apply(mask, upd)
    # PATCH 32: the object, 3 voxels across, gets a window of 3 + PATCH // 3
    assert eng.last_run["zooms"] == pytest.approx([13 / 32])
    assert upd.values.shape == (13, 13, 13)
    # the footprint is a fixed number of patch voxels: at 32/13 x only a few image voxels
    assert answers[1].sum() > 200 and 3 <= answers[3].sum() <= 60 and answers[3][20, 24, 20:23].all()
    # a first click on an empty mask starts fully magnified; the follower's footprint stays inside
    # the window, so AutoZoom does not step out
    first = apply(np.zeros_like(mask), eng.predict(prompts[:1], np.zeros_like(mask)))
    assert eng.last_run["zooms"] == pytest.approx([1 / 3]) and 1 <= first.sum() <= 60 and first[20, 24, 21]


def test_the_ladder_ends_in_the_official_answer_for_large_objects(folder):
    arr = image((64, 64, 64))
    mask = np.zeros(arr.shape, np.uint8)
    mask[32, 32, 31:34] = 1  # small so far: the correction starts magnified ...
    s = Scribble(np.ones((30, 60, 60), np.uint8), (17, 2, 2))  # ... but the object fills the image
    prompts = [s, Point((32, 32, 32))]
    official = follower_engine(folder)
    official.set_image(arr)
    want = official.predict(prompts, mask)
    eng = follower_engine(folder, magnify=3)
    eng.set_image(arr)
    got = eng.predict(prompts, mask)
    z0 = (3 + PATCH // 3) / PATCH
    assert eng.last_run["zooms"] == pytest.approx([z0, z0 * 1.5, z0 * 2.25] + official.last_run["zooms"])
    assert got.lo == want.lo and np.array_equal(got.values, want.values)


def test_a_first_click_on_a_large_object_steps_out_to_the_official_answer(folder):
    arr = image((64, 64, 64))
    empty = np.zeros(arr.shape, np.uint8)
    prompts = [Point((32, 30, 34))]
    # a network that calls every voxel foreground: an object that fills the image
    net = PromptFollower(mapping=folder.channel_mapping, threshold=-1.0)
    official = follower_engine(folder, network=net)
    official.set_image(arr)
    want = official.predict(prompts, empty)
    eng = follower_engine(folder, network=net, magnify=3)
    eng.set_image(arr)
    got = eng.predict(prompts, empty)
    # the magnified start reaches the window border at once and climbs the ladder to zoom 1
    assert eng.last_run["zooms"] == pytest.approx([1 / 3, 0.5, 0.75] + official.last_run["zooms"])
    assert got.lo == want.lo and np.array_equal(got.values, want.values)


@pytest.mark.parametrize("bad", [0.5, 0, float("nan"), -2])
def test_magnify_must_be_at_least_one(folder, bad):
    with pytest.raises(ValueError, match="magnify"):
        follower_engine(folder, magnify=bad)


def test_intensity_veto_cuts_a_spilling_answer_back_to_the_object(folder):
    arr = image((40, 48, 44))
    sl = (slice(14, 27), slice(18, 31), slice(14, 27))
    arr[sl] += 200.0  # a bright 13^3 object in tissue of 100 +- 20
    obj = np.zeros(arr.shape, bool)
    obj[sl] = True
    mask = np.zeros(arr.shape, np.uint8)
    answers = {}
    for w in (0.0, 1.0):
        # a follower that keeps the whole 9^3 point footprint, which a click 2 voxels inside the
        # object's face pushes 2-4 voxels out of it
        eng = follower_engine(
            folder, intensity_veto=w, network=PromptFollower(mapping=folder.channel_mapping, threshold=0.05)
        )
        eng.set_image(arr)
        answers[w] = apply(mask, eng.predict([Point((20, 24, 25))], mask)).astype(bool)
    official, vetoed = answers[0.0], answers[1.0]
    assert (official & ~obj).sum() > 50
    assert not (vetoed & ~official).any()  # only removes
    assert (vetoed & obj).sum() == (official & obj).sum()  # the object's voxels stay
    # what stays outside is the first layer (the 3^3 smoothing's partial-volume halo)
    assert (vetoed & ~obj).sum() < 0.7 * (official & ~obj).sum()
    assert not vetoed[:, :, 28:].any() and official[:, :, 28:].any()


@pytest.mark.parametrize("bad", [-1.0, float("nan")])
def test_intensity_veto_must_not_be_negative(folder, bad):
    with pytest.raises(ValueError, match="intensity_veto"):
        follower_engine(folder, intensity_veto=bad)
