"""Tests of the supervoxel pseudo-labels (nnint.train.supervoxels)."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from nnint.train.supervoxels import fine_supervoxels, supervoxels


def _phantom(shape=(40, 48, 48), seed=0):
    """Mid-grey box on dark air with two bright balls and one dark block (truth labels 1..3)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    img = np.zeros(shape, np.float32)
    body = (abs(y - 24) < 20) & (abs(x - 24) < 20)
    img[body] = 100
    truth = np.zeros(shape, np.int32)
    truth[((z - 12) ** 2 + (y - 16) ** 2 + (x - 16) ** 2) < 36] = 1
    truth[((z - 26) ** 2 + (y - 30) ** 2 + (x - 30) ** 2) < 49] = 2
    truth[(abs(z - 26) < 5) & (abs(y - 14) < 4) & (abs(x - 32) < 5)] = 3
    img[truth == 1] = 220
    img[truth == 2] = 200
    img[truth == 3] = 30
    img = ndi.gaussian_filter(img, 0.7) + rng.normal(0, 5, shape)
    return img.astype(np.float32), truth


def _best_iou(pred, truth, k):
    t = truth == k
    best = 0.0
    for v in np.unique(pred[t]):
        if v:
            p = pred == v
            best = max(best, (p & t).sum() / (p | t).sum())
    return best


def test_finds_objects_of_a_phantom():
    img, truth = _phantom()
    lab = supervoxels(img, (1.0, 1.0, 1.0), n_supervoxels=800)
    assert lab.shape == img.shape and lab.dtype == np.int32
    for k in (1, 2, 3):
        assert _best_iou(lab, truth, k) > 0.6, k


def test_output_contract():
    img, _ = _phantom(seed=1)
    lab = supervoxels(img, (2.0, 1.0, 1.0), n_supervoxels=600, min_voxels=20)
    values = np.unique(lab)
    assert np.array_equal(values, np.arange(lab.max() + 1))
    counts = np.bincount(lab.ravel())[1:]
    assert counts.min() >= 20
    assert counts.max() <= 0.3 * lab.size
    for k in range(1, lab.max() + 1):  # one 26-connected component per object
        assert ndi.label(lab == k, structure=np.ones((3, 3, 3)))[1] == 1
    assert np.array_equal(lab, supervoxels(img, (2.0, 1.0, 1.0), n_supervoxels=600, min_voxels=20))


def test_air_background_is_not_an_object():
    img, _ = _phantom(seed=2)
    lab = supervoxels(img, (1.0, 1.0, 1.0), n_supervoxels=800)
    assert (lab[img < 15] > 0).mean() < 0.05


def test_subsampled_path_keeps_shape():
    img, truth = _phantom(seed=3)
    lab = supervoxels(img, (1.0, 1.0, 1.0), n_supervoxels=300, max_voxels=20_000)
    assert lab.shape == img.shape
    assert _best_iou(lab, truth, 2) > 0.4


def test_fine_supervoxels_cover_the_volume():
    img, _ = _phantom(seed=4)
    x = (img - img.min()) / (img.max() - img.min())
    fine = fine_supervoxels(x.astype(np.float32), (1.0, 1.0, 1.0), 200)
    assert fine.min() == 1
    assert 100 <= fine.max() <= 400


def test_rejects_2d():
    with pytest.raises(ValueError):
        supervoxels(np.zeros((10, 10)))
