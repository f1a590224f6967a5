"""The training-time simulated user and the training input it produces."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from nnint.prompts import Box, InitialMask, Lasso, Point, Scribble, check_in_image
from nnint.train import dataset as ds
from nnint.train import simulate as S

SHAPE = (40, 48, 56)


def _target() -> np.ndarray:
    t = np.zeros(SHAPE, bool)
    t[8:30, 10:36, 12:44] = True
    t[8:14, 10:16, 12:18] = False  # not a plain box
    return t


def _voxels(prompt) -> np.ndarray:
    """Indices (N, 3) a prompt covers in the volume."""
    if isinstance(prompt, Point):
        return np.array([prompt.index])
    if isinstance(prompt, Box):
        m = np.zeros(SHAPE, bool)
        m[tuple(slice(a, b) for a, b in zip(prompt.lo, prompt.hi))] = True
        return np.argwhere(m)
    return np.argwhere(prompt.mask) + np.array(prompt.lo)


@pytest.mark.parametrize("kind", list(S.FIRST_KINDS))
def test_first_prompt_every_kind_is_valid_and_positive(kind):
    rng = np.random.default_rng(3)
    t = _target()
    types = {"point": Point, "box2d": Box, "box3d": Box, "scribble": Scribble, "lasso": Lasso,
             "initial_mask": InitialMask}
    for _ in range(5):
        prompt, prev = S.first_prompt(t, rng, kind)
        assert isinstance(prompt, types[kind])
        check_in_image(prompt, SHAPE)
        assert prompt.positive
        if kind == "box2d":
            assert prompt.is_2d
        if kind == "box3d":
            assert not prompt.is_2d
        if kind == "point":
            assert t[prompt.index]
        if kind in ("scribble", "lasso"):
            assert 1 in prompt.mask.shape  # drawn on one slice
        if kind in ("scribble",):
            vox = _voxels(prompt)
            assert t[tuple(vox.T)].mean() > 0.8
        if kind == "initial_mask":
            assert prev.any() and prev.dtype == np.uint8
        else:
            assert not prev.any()


@pytest.mark.parametrize("kind", list(S.CORRECTION_KINDS))
def test_corrections_have_the_right_polarity_and_place(kind):
    rng = np.random.default_rng(5)
    t = _target()
    # missed foreground only -> positive prompts on the missed part
    pred = t.copy()
    pred[8:30, 10:36, 30:44] = False
    fn = t & ~pred
    for _ in range(4):
        p = S.correction_prompt(t, pred, rng, kind)
        assert p is not None and p.positive
        check_in_image(p, SHAPE)
        vox = _voxels(p)
        frac = fn[tuple(vox.T)].mean()
        assert frac > (0.6 if kind in ("lasso", "box2d") else 0.9), (kind, frac)
    # false positive only -> negative prompts on it
    pred = t.copy()
    pred[30:38, 5:40, 5:50] = True
    fp = pred & ~t
    for _ in range(4):
        p = S.correction_prompt(t, pred, rng, kind)
        assert p is not None and not p.positive
        check_in_image(p, SHAPE)
        vox = _voxels(p)
        assert fp[tuple(vox.T)].mean() > 0.6
    assert S.correction_prompt(t, t, rng, kind) is None


def test_point_weighting_prefers_the_centre():
    rng = np.random.default_rng(0)
    region = np.zeros(SHAPE, bool)
    region[5:35, 5:35, 5:35] = True
    edt = ndi.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1, 1:-1]
    deep = [edt[S.edt_point(region, rng, 8.0)] for _ in range(30)]
    flat = [edt[S.edt_point(region, rng, 0.0)] for _ in range(30)]
    assert np.mean(deep) > np.mean(flat) + 3


def test_agents():
    rng = np.random.default_rng(1)
    single = S.Agent("single")
    kinds = {single.next_kind(rng) for _ in range(20)}
    assert len(kinds) == 1
    rand = S.Agent("random")
    assert len({rand.next_kind(rng) for _ in range(60)}) > 1
    sunk = S.Agent("sunk_cost", p_switch=0.0, fixed="lasso")
    assert {sunk.next_kind(rng) for _ in range(10)} == {"lasso"}
    modes = {S.sample_agent(rng).mode for _ in range(100)}
    assert modes == {"random", "single", "sunk_cost"}


def _sequence(rng):
    t = _target()
    pred = t.copy()
    pred[8:30, 10:36, 30:44] = False
    pred[30:36, 5:40, 5:50] = True
    prompts = [S.first_prompt(t, rng, k)[0] for k in ("box2d", "point", "box3d", "scribble", "lasso")]
    prompts += [p for k in ("point", "scribble", "lasso", "box2d") for p in [S.correction_prompt(t, pred, rng, k)] if p]
    return prompts, pred.astype(np.uint8)


def test_training_input_equals_the_inference_rasteriser():
    """prompt_channels == the torch backend's plan/rasterise/feed, and == an independent
    implementation of reference-behaviour.md §3 (fp16 storage, decay 0.98, point EDT ball)."""
    ras = pytest.importorskip("nnint.backends.torch.rasterise")
    rng = np.random.default_rng(7)
    prompts, prev = _sequence(rng)
    got = S.prompt_channels(prompts, prev)
    assert got.shape == (7,) + SHAPE and got.dtype == np.float32
    cfg = ras.RasterConfig(shape=SHAPE, channel_mapping=S.LEGACY_MAPPING, num_interaction_channels=7,
                           supported={k: True for k in ("scribble", "lasso", "points", "bbox2d", "bbox3d")},
                           decay=0.98, point_radius=4)
    plan = ras.build_plan(prompts, cfg)
    want = np.array(ras.feed(ras.rasterise(plan, (0, 0, 0), SHAPE), plan.intensity), dtype=np.float32)
    want[0] = prev
    np.testing.assert_array_equal(got, want)
    ref = S._reference_channels(prompts, prev, decay=0.98, point_radius=4, mapping=S.LEGACY_MAPPING, num_channels=7)
    np.testing.assert_array_equal(got, ref)
    # the newest prompt has weight 1, older ones decay by 0.98 per interaction
    assert got[3].max() == pytest.approx(1.0, abs=1e-3) or got[5].max() == pytest.approx(1.0, abs=1e-3) or \
        got[1].max() == pytest.approx(1.0, abs=1e-3) or got[2].max() == pytest.approx(1.0, abs=1e-3)
    only = S.prompt_channels([Point((20, 20, 20)), Box((10, 10, 10), (11, 30, 30))], np.zeros(SHAPE, np.uint8))
    assert only[3].max() == pytest.approx(0.98, abs=1e-3)  # one interaction old
    assert only[1].max() == pytest.approx(1.0, abs=1e-3)


def test_training_input_equals_torch_engine_input(tmp_path):
    """For a window equal to the whole image the engine's network input is [image, prompt_channels]."""
    eng_mod = pytest.importorskip("nnint.backends.torch.engine")
    from nnint.backends.torch.architectures import small_plans
    from nnint.backends.torch.checkpoint import write_model_folder
    from nnint.backends.torch.network import build_network
    from nnint.image import Image

    plans = small_plans(32)
    net = build_network(plans["configurations"]["3d_fullres"]["architecture"], 8, 2)
    folder = write_model_folder(tmp_path / "m", plans=plans, configuration="3d_fullres",
                                network_weights=net.state_dict(),
                                inference_info=__import__("nnint.backends.torch.checkpoint", fromlist=["x"])
                                .default_inference_info(supported_interactions={
                                    "scribble": True, "lasso": True, "points": True, "bbox2d": True, "bbox3d": True}))
    engine = eng_mod.TorchEngine.from_model(folder, device="cpu") if hasattr(eng_mod.TorchEngine, "from_model") else None
    if engine is None:
        pytest.skip("TorchEngine.from_model not available")
    seen = []
    inner = engine.network if hasattr(engine, "network") else getattr(engine, "net", None)
    if inner is None:
        pytest.skip("cannot reach the engine's network to observe its input")
    hook = inner.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().float().cpu().clone()))
    rng = np.random.default_rng(2)
    img = rng.normal(size=(32, 32, 32)).astype(np.float32) + 5
    engine.set_image(Image(img))
    # the newest prompt decides the window: at the centre, the window is exactly the image
    prompts = [Point((10, 12, 20), False), Box((5, 5, 5), (6, 20, 25)), Point((16, 16, 16))]
    engine.predict(prompts, np.zeros((32, 32, 32), np.uint8))
    hook.remove()
    if not seen:
        pytest.skip("the engine did not call its network module directly")
    x = seen[0][0].numpy()
    from nnint.train.augment import normalise

    np.testing.assert_allclose(x[0], normalise(img), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(x[1:], S.prompt_channels(prompts, np.zeros((32, 32, 32), np.uint8)))


def test_zoom_channels_match_full_resolution_pipeline():
    """Block-wise zoom-out == rasterise the whole window, dilate (edge replicate), area-downsample."""
    W, P, z = 80, 32, 2.5
    prompts = [Point((40, 41, 39)), Box((20, 10, 10), (21, 60, 70)),
               Scribble(np.ones((1, 5, 9), np.uint8), (30, 70, 60)), Point((2, 3, 78), False)]
    dil = {3, 4, 5, 6}
    blocks = []
    for p in prompts:
        lo = np.array(p.index) - 4 if isinstance(p, Point) else np.array(p.lo)
        hi = np.array(p.index) + 5 if isinstance(p, Point) else np.array(p.hi)
        lo, hi = np.maximum(lo, 0), np.minimum(hi, W)
        ch = S.prompt_channels([ds._shift_prompt(p, -lo)], np.zeros(tuple(hi - lo), np.uint8))
        blocks += [(c, ch[c], lo) for c in range(7) if ch[c].any()]
    got = ds.zoom_channels(lambda: blocks, W, P, z, dil, 7)
    k = ds.round_to_nearest_odd(2 * z - 1)
    assert k == 5
    want = np.zeros((7, P, P, P), np.float32)
    for p in prompts:
        full = S.prompt_channels([p], np.zeros((W,) * 3, np.uint8))
        for c in range(1, 7):
            if not full[c].any():
                continue
            f = ndi.maximum_filter(full[c], size=k, mode="nearest") if c in dil else full[c]
            want[c] += F.adaptive_avg_pool3d(torch.from_numpy(f)[None, None].double(), P)[0, 0].float().numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_corrupt_masks_differ_from_the_target():
    rng = np.random.default_rng(0)
    t = _target()
    for mode in ("blocky", "dilate", "erode", "shift", "partial", "noisy"):
        m = S.corrupt_mask(t, rng, mode)
        assert m.shape == t.shape and m.dtype == bool
        assert (m != t).any(), mode


def test_normalisation_equals_the_engine():
    zoom = pytest.importorskip("nnint.backends.torch.zoom")
    from nnint.train.augment import normalise

    a = (np.random.default_rng(0).normal(size=(20, 30, 40)) * 100 + 50).astype(np.int16)
    a[:2] = 0
    a[:, :, -3:] = 0
    mean, std, _ = zoom.image_statistics(a)
    crop = np.asarray(zoom.ImageSource(a, mean, std).crop((0, 0, 0), a.shape))
    np.testing.assert_array_equal(normalise(a), crop.reshape(a.shape))


def test_corrected_region_is_the_error_component_the_correction_touches():
    target = np.zeros((20, 20, 20), bool)
    target[5:15, 5:15, 5:15] = True
    pred = target.copy()
    pred[5:15, 5:15, 15:18] = True  # a false-positive slab, one component
    pred[0:2, 0:2, 0:2] = True  # a second, separate false positive
    pred[8:10, 8:10, 5:7] = False  # a hole: missed foreground
    slab = pred & ~target & (np.arange(20) >= 15)[None, None, :]
    region = S.corrected_region(target, pred, Point((10, 10, 16), positive=False))
    assert np.array_equal(region, slab)
    hole = target & ~pred
    assert np.array_equal(S.corrected_region(target, pred, Point((9, 9, 6), positive=True)), hole)
    # the wrong polarity, or a click on a correct voxel, points at nothing
    assert not S.corrected_region(target, pred, Point((10, 10, 16), positive=True)).any()
    assert not S.corrected_region(target, pred, Point((10, 10, 10), positive=False)).any()
    # a negative scribble across both false positives selects both components
    line = np.zeros((20, 20, 20), bool)
    line[1, 1, 0:17] = True
    line[1, 1:11, 16] = True
    line[1:11, 10, 16] = True
    scr = Scribble.from_full_mask(line, positive=False)
    both = S.corrected_region(target, pred, scr)
    assert np.array_equal(both, pred & ~target)
