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


def _touching_pairs(lab):
    pairs = set()
    for ax in range(3):
        a = np.moveaxis(lab, ax, 0)
        x, y = a[:-1].ravel(), a[1:].ravel()
        m = (x != y) & (x > 0) & (y > 0)
        pairs |= {(min(p, q), max(p, q)) for p, q in zip(x[m].tolist(), y[m].tolist())}
    return pairs


def _canvas_of(family, seed, shape, min_contrast=None):
    """The noise-free canvas (painted values, labels) behind one ct_like / mr_like case."""
    seen = {}
    real = S._anatomy

    def spy(*args, **kw):
        if min_contrast is not None:
            kw["min_contrast"] = min_contrast
        seen["cv"] = real(*args, **kw)
        return seen["cv"]

    S._anatomy = spy
    try:
        _, lab, _ = S.GENERATORS[family](np.random.default_rng(seed), shape)
    finally:
        S._anatomy = real
    return seen["cv"], lab


def _distinct_fraction(family, min_contrast=None):
    ok = []
    for seed in range(3):
        cv, lab = _canvas_of(family, seed, (40, 80, 80), min_contrast)
        mc = cv.min_contrast if min_contrast is None else {"ct": 20.0, "mr": 0.06}[family]
        counts = np.bincount(lab.ravel())
        for a, b in sorted(_touching_pairs(lab)):
            if min(counts[a], counts[b]) >= 30:
                ok.append(abs(np.median(cv.values[lab == a]) - np.median(cv.values[lab == b])) >= 0.99 * mc)
    assert len(ok) >= 30
    return float(np.mean(ok))


@pytest.mark.parametrize("family", ["ct", "mr"])
def test_touching_structures_differ_in_intensity(family):
    # v2: touching parts and neighbours are painted with values at least `min_contrast` apart (a
    # multiple of the case's noise), so a click can tell them apart; v1 split organs into parts of
    # equal intensity and let neighbours match (CT: about a quarter of the pairs)
    assert _distinct_fraction(family) >= 0.9
    assert _distinct_fraction(family, min_contrast=0.0) < 0.85


def test_ct_touching_structures_differ_in_the_image():
    # the same across each shared boundary of the final image (noise, texture, blur), 3 voxels either side
    gaps = []
    for seed in range(3):
        img, lab, _ = S.ct_like(np.random.default_rng(seed), (40, 80, 80))
        counts = np.bincount(lab.ravel())
        for a, b in sorted(_touching_pairs(lab)):
            if min(counts[a], counts[b]) >= 30:
                ma, mb = lab == a, lab == b
                near = ndi.binary_dilation(ma, iterations=3) & ndi.binary_dilation(mb, iterations=3)
                gaps.append(abs(np.median(img[near & ma].astype(float)) - np.median(img[near & mb].astype(float))))
    assert np.mean(np.asarray(gaps) >= 15.0) >= 0.9, sorted(gaps)[:10]


def test_occluded_remnants_are_unlabelled():
    cv = S._Canvas((20, 20, 20), (1.0, 1.0, 1.0))
    big = np.zeros(cv.shape, bool)
    big[2:12, 2:12, 2:12] = True
    cover = np.zeros(cv.shape, bool)
    cover[2:12, 2:12, 3:12] = True  # leaves 10 % of the first structure
    other = np.zeros(cv.shape, bool)
    other[14:18, 14:18, 14:18] = True
    a, b, c = cv.new_label(), cv.new_label(), cv.new_label()
    cv.paint(np.s_[:, :, :], big, 1.0, a)
    cv.paint(np.s_[:, :, :], cover, 2.0, b)
    cv.paint(np.s_[:, :, :], other, 3.0, c)
    labels, _ = cv.finish()
    assert labels.max() == 2  # the remnant of `a` is gone, `b` and `c` remain (renumbered)
    assert labels[2, 2, 2] == 0 and cv.values[2, 2, 2] == 1.0  # its voxels keep their intensity


def test_distinct_moves_value_away_from_host_and_neighbours():
    cv = S._Canvas((10, 10, 10), (1.0, 1.0, 1.0), min_contrast=20.0)
    cv.values[:] = 50.0
    m = np.ones(cv.shape, bool)
    rng = np.random.default_rng(0)
    for _ in range(20):
        v = cv.distinct(rng, np.s_[:, :, :], m, 55.0, avoid=[80.0])
        assert abs(v - 50.0) >= 20.0 and abs(v - 80.0) >= 20.0
    assert cv.distinct(rng, np.s_[:, :, :], m, 10.0) == 10.0  # already distinct: unchanged
