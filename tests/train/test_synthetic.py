"""Tests of the procedural synthetic volumes (nnint.train.synthetic)."""

import time

import numpy as np
import pytest
from scipy import ndimage as ndi

from nnint.train import synthetic as S

SMALL = {"ct": (24, 48, 48), "mr": (24, 48, 48), "microscopy": (16, 48, 48)}


@pytest.mark.parametrize("family", sorted(S.GENERATORS))
def test_contract(family):
    img, lab, spacing = S.GENERATORS[family](np.random.default_rng(0), SMALL[family])
    assert img.shape == lab.shape == SMALL[family]
    assert lab.dtype == np.int32
    values = np.unique(lab)
    assert values[0] == 0 and np.array_equal(values[1:], np.arange(1, lab.max() + 1))
    assert lab.max() >= 2
    assert len(spacing) == 3 and all(isinstance(s, float) and s > 0 for s in spacing)
    assert np.all(np.isfinite(img.astype(np.float64)))


@pytest.mark.parametrize("family", sorted(S.GENERATORS))
def test_seeded(family):
    a = S.GENERATORS[family](np.random.default_rng(7), SMALL[family])
    b = S.GENERATORS[family](np.random.default_rng(7), SMALL[family])
    c = S.GENERATORS[family](np.random.default_rng(8), SMALL[family])
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    assert not np.array_equal(a[0], c[0])


def test_ct_values_and_dtype():
    img, lab, _ = S.ct_like(np.random.default_rng(1), (32, 64, 64))
    assert img.dtype == np.int16
    assert img.min() >= -1024 and img.max() <= 3071
    assert (img < -900).mean() > 0.02  # air around the body
    assert np.median(img[lab > 0]) > -200  # labelled structures are tissue, not air


def test_mr_dtypes_and_range():
    dtypes = {S.mr_like(np.random.default_rng(s), (16, 40, 40))[0].dtype for s in range(8)}
    assert dtypes <= {np.dtype(np.float32), np.dtype(np.uint16)} and len(dtypes) == 2
    img = S.mr_like(np.random.default_rng(0), (16, 40, 40))[0]
    assert img.min() >= 0


def test_microscopy_anisotropic_uint16():
    img, lab, (sz, sy, sx) = S.microscopy_like(np.random.default_rng(2), (16, 64, 64))
    assert img.dtype == np.uint16
    assert sy == sx and 2.0 <= sz / sy <= 4.0
    assert lab.max() >= 5
    assert img[lab > 0].mean() > img[lab == 0].mean()  # nuclei are brighter than background


def test_sizes_span_tiny_to_large_and_neighbours_touch():
    sizes, touching = [], 0
    for seed in range(3):
        _, lab, _ = S.ct_like(np.random.default_rng(seed), (48, 96, 96))
        sizes += list(np.bincount(lab.ravel())[1:])
        a, b = lab[:, :, :-1], lab[:, :, 1:]
        touching += int(np.any((a != b) & (a > 0) & (b > 0)))
    assert min(sizes) < 100 and max(sizes) > 50_000
    assert touching == 3


def test_shapes_are_irregular():
    _, lab, _ = S.microscopy_like(np.random.default_rng(3), (24, 64, 64))
    # deformed ellipsoids: objects are not all convex boxes - fill ratio of their bbox varies
    ratios = [(lab[sl] == i + 1).mean() for i, sl in enumerate(ndi.find_objects(lab)) if sl]
    assert np.std(ratios) > 0.02


def test_smooth_noise_normalised():
    f = S.smooth_noise(np.random.default_rng(0), (20, 30, 40), 6.0)
    assert f.shape == (20, 30, 40) and f.dtype == np.float32
    assert abs(f.mean()) < 1e-4 and abs(f.std() - 1) < 1e-3


def test_fast_enough():
    t0 = time.perf_counter()
    S.ct_like(np.random.default_rng(0), (96, 128, 128))
    assert time.perf_counter() - t0 < 6.0
