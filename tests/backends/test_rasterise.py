"""Prompt rasterisation of the torch backend against a plain full-volume reference.

The reference below follows the official order literally: one full-volume float16 tensor per
interaction channel, prompts written in order with the running intensity, renormalisation of all
channels when the intensity passes the float16 maximum, then a (zero-padded) crop. The backend
never builds those tensors; it must give the same bits for any region.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nnint.backends.torch.rasterise import (
    RasterConfig,
    box_kind,
    build_plan,
    feed,
    point_kernel,
    prompt_channel,
    rasterise,
)
from nnint.errors import UnsupportedPromptError
from nnint.prompts import Box, InitialMask, Lasso, Point, Scribble

MAPPING = {"prev_seg": 0, "bbox2d": (1, 2), "bbox3d": (1, 2), "lasso": (1, 2), "points": (3, 4), "scribble": (5, 6)}
SUPPORTED = {"scribble": True, "lasso": True, "points": True, "bbox2d": True, "bbox3d": False}
SHAPE = (14, 11, 9)


def config(decay=0.98, supported=SUPPORTED, shape=SHAPE, radius=4):
    return RasterConfig(shape, MAPPING, 7, dict(supported), decay, radius)


def brute_force_kernel(r: int) -> np.ndarray:
    """Distance of every ball voxel to the nearest non-ball voxel of the (2r+1)^3 grid, / max."""
    ax = np.arange(-r, r + 1)
    grid = np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)
    inside = (grid**2).sum(1) <= r * r
    outside = grid[~inside]
    d = np.zeros(len(grid))
    for i in np.flatnonzero(inside):
        d[i] = np.sqrt(((outside - grid[i]) ** 2).sum(1).min())
    d = d.reshape((2 * r + 1,) * 3)
    return d / d.max()


def reference(prompts, cfg: RasterConfig) -> tuple[torch.Tensor, float]:
    """Full-volume float16 channels [7, *shape] and the final intensity, the official way."""
    chans = torch.zeros((7, *cfg.shape), dtype=torch.float16)
    intensity = 1.0
    kernel = torch.from_numpy(brute_force_kernel(int(cfg.point_radius)))
    for p in prompts:
        if isinstance(p, InitialMask):
            chans.zero_()
            intensity = 1.0
            continue
        intensity *= 1 / cfg.decay
        if intensity > 65504:
            chans[1:] *= 6550.4 / intensity
            intensity = 6550.4
        if isinstance(p, Point):
            key = "points"
        elif isinstance(p, Box):
            key = "bbox2d" if min(p.extent) == 1 and cfg.supported["bbox2d"] else "bbox3d"
        else:
            key = p.kind
        ch = MAPPING[key][0 if p.positive else 1]
        if isinstance(p, Point):
            c = np.array(p.index)
            r = kernel.shape[0] // 2
            lo, hi = c - r, c + r + 1
            clo, chi = np.maximum(lo, 0), np.minimum(hi, cfg.shape)
            if np.any(chi <= clo):
                continue
            k = kernel[tuple(slice(a - o, b - o) for a, b, o in zip(clo, chi, lo))]
            region = chans[(ch, *(slice(a, b) for a, b in zip(clo, chi)))]
            region.copy_(torch.maximum(region, (k * intensity).to(torch.float16)))
        elif isinstance(p, Box):
            chans[(ch, *(slice(a, b) for a, b in zip(p.lo, p.hi)))] = intensity
        else:
            region = chans[(ch, *(slice(a, b) for a, b in zip(p.lo, p.hi)))]
            vals = torch.from_numpy(p.mask.astype(np.float64) * intensity).to(torch.float16)
            region.copy_(torch.maximum(region, vals))
    return chans, intensity


def crop(chans: torch.Tensor, lo, hi) -> np.ndarray:
    out = torch.zeros((chans.shape[0], *(b - a for a, b in zip(lo, hi))), dtype=torch.float16)
    clo = [max(a, 0) for a in lo]
    chi = [min(b, s) for b, s in zip(hi, chans.shape[1:])]
    if all(b > a for a, b in zip(clo, chi)):
        out[(slice(None), *(slice(a - o, b - o) for a, b, o in zip(clo, chi, lo)))] = chans[
            (slice(None), *(slice(a, b) for a, b in zip(clo, chi)))
        ]
    return out.numpy()


# --- strategies --------------------------------------------------------------------------------


@st.composite
def prompts_st(draw, allow_3d_box=False):
    n = draw(st.integers(1, 40))
    out = []
    if draw(st.booleans()):
        m = np.zeros(SHAPE, np.uint8)
        m[2:5, 3:6, 1:4] = 1
        out.append(InitialMask.from_full_mask(m))
    for _ in range(n):
        kind = draw(st.sampled_from(["point", "box", "scribble", "lasso"]))
        pos = draw(st.booleans())
        if kind == "point":
            out.append(Point(tuple(draw(st.integers(0, s - 1)) for s in SHAPE), pos))
        elif kind == "box":
            lo = [draw(st.integers(0, s - 1)) for s in SHAPE]
            hi = [draw(st.integers(a + 1, s)) for a, s in zip(lo, SHAPE)]
            if not allow_3d_box:
                ax = draw(st.integers(0, 2))
                hi[ax] = lo[ax] + 1
            out.append(Box(lo, hi, pos))
        else:
            lo = [draw(st.integers(0, s - 1)) for s in SHAPE]
            size = [draw(st.integers(1, min(4, s - a))) for a, s in zip(lo, SHAPE)]
            seed = draw(st.integers(0, 2**16))
            m = (np.random.default_rng(seed).random(size) < 0.5).astype(np.uint8)
            m.flat[0] = 1
            out.append((Scribble if kind == "scribble" else Lasso)(m, lo, pos))
    return out


regions = st.tuples(*(st.integers(-6, s + 2) for s in SHAPE), *(st.integers(1, 12) for _ in SHAPE)).map(
    lambda t: (t[:3], tuple(a + n for a, n in zip(t[:3], t[3:])))
)


# --- tests ---------------------------------------------------------------------------------


def test_point_kernel_matches_brute_force_and_documented_values():
    k = point_kernel(4)
    np.testing.assert_allclose(k, brute_force_kernel(4), rtol=0, atol=1e-12)
    assert (k > 0).sum() == 257
    assert k[4, 4, 4] == 1.0
    assert k[0, 4, 4] == pytest.approx(1 / np.sqrt(17))
    values = np.unique(np.round(k[k > 0] ** 2 * 17, 6))
    assert set(values) <= {1, 2, 3, 4, 5, 6, 8, 10, 17}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prompts=prompts_st(), decay=st.sampled_from([0.98, 0.9, 0.5, 1.0]), region=regions)
def test_rasterise_equals_full_volume_reference(prompts, decay, region):
    cfg = config(decay)
    ref, intensity = reference(prompts, cfg)
    plan = build_plan(prompts, cfg)
    assert plan.intensity == intensity
    lo, hi = region
    got = rasterise(plan, lo, hi)
    expected = crop(ref, lo, hi)
    expected[0] = 0  # prev_seg is the object's mask, not rasterised
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got.view(np.uint16), expected.view(np.uint16))
    # one channel at a time gives the same values
    for ch in (3, 5):
        np.testing.assert_array_equal(rasterise(plan, lo, hi, [ch])[0], expected[ch])


@settings(max_examples=25, deadline=None)
@given(prompts=prompts_st(allow_3d_box=True), decay=st.sampled_from([0.98, 0.6]))
def test_rasterise_3d_boxes_when_supported(prompts, decay):
    cfg = config(decay, supported={**SUPPORTED, "bbox3d": True})
    ref, intensity = reference(prompts, cfg)
    plan = build_plan(prompts, cfg)
    got = rasterise(plan, (0, 0, 0), SHAPE)
    expected = ref.numpy().copy()
    expected[0] = 0
    np.testing.assert_array_equal(got, expected)


def test_renormalisation_numerics():
    cfg = config(0.5)  # I doubles with every prompt: renormalises after 16 prompts
    prompts = [Point((7, 5, 4), bool(i % 2)) for i in range(40)]
    plan = build_plan(prompts, cfg)
    assert len(plan.renorms) >= 3
    ref, intensity = reference(prompts, cfg)
    assert plan.intensity == intensity
    np.testing.assert_array_equal(rasterise(plan, (0, 0, 0), SHAPE)[1:], ref.numpy()[1:])
    assert np.isfinite(rasterise(plan, (0, 0, 0), SHAPE)).all()


def test_incremental_plan_equals_full_plan():
    cfg = config(0.7)
    rng = np.random.default_rng(3)
    prompts = [Point(tuple(int(rng.integers(0, s)) for s in SHAPE), bool(rng.integers(0, 2))) for _ in range(30)]
    plan = build_plan(prompts[:1], cfg)
    for i in range(1, len(prompts)):
        plan = build_plan(prompts[i : i + 1], cfg, start=plan)
    full = build_plan(prompts, cfg)
    assert plan.intensity == full.intensity
    np.testing.assert_array_equal(rasterise(plan, (0, 0, 0), SHAPE), rasterise(full, (0, 0, 0), SHAPE))


def test_feed_is_float16_division_like_torch():
    rng = np.random.default_rng(0)
    stored = (rng.random((3, 5, 6, 7)) * 60000).astype(np.float16)
    for intensity in (1.0, 1.0204081632653061, 37.5, 6550.4, 60000.0):
        expected = (torch.from_numpy(stored) / intensity).numpy()
        np.testing.assert_array_equal(feed(stored, intensity), expected)


def test_initial_mask_resets_intensity():
    cfg = config(0.9)
    m = InitialMask.from_full_mask(np.pad(np.ones((2, 2, 2), np.uint8), 3))
    plan = build_plan([m, Point((1, 1, 1))], cfg)
    assert plan.intensity == 1 / 0.9
    with pytest.raises(ValueError):
        build_plan([Point((1, 1, 1)), m], cfg)


def test_channels_and_box_kinds():
    cfg = config()
    assert prompt_channel(Point((1, 1, 1), True), cfg) == 3
    assert prompt_channel(Point((1, 1, 1), False), cfg) == 4
    assert prompt_channel(Box((0, 0, 0), (1, 4, 4), False), cfg) == 2
    assert prompt_channel(Lasso(np.ones((1, 2, 2)), (0, 0, 0), True), cfg) == 1
    assert prompt_channel(Scribble(np.ones((1, 2, 2)), (0, 0, 0), False), cfg) == 6
    with pytest.raises(UnsupportedPromptError, match="3D"):
        build_plan([Box((0, 0, 0), (3, 4, 4))], cfg)
    # a 2D box on a bbox3d-only model is a bbox3d
    assert box_kind(Box((0, 0, 0), (1, 4, 4)), {"bbox2d": False, "bbox3d": True}) == "bbox3d"
    with pytest.raises(UnsupportedPromptError):
        build_plan([Scribble(np.ones((1, 2, 2)), (0, 0, 0))], config(supported={**SUPPORTED, "scribble": False}))


def test_points_at_the_border_are_clipped():
    cfg = config()
    plan = build_plan([Point((0, 0, 0)), Point((13, 10, 8), False)], cfg)
    full = rasterise(plan, (-5, -5, -5), (20, 16, 14))
    assert full[3, 5, 5, 5] > 0 and full[3, :5].max() == 0  # nothing written outside the image
    assert full[4, 5 + 13, 5 + 10, 5 + 8] > 0 and full[4, 5 + 14 :].max() == 0
    for ch, expected in itertools.product([0, 1, 2, 5, 6], [0]):
        assert full[ch].max() == expected
