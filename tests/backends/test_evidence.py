"""The intensity veto (``nnint.backends.torch.evidence``): what it removes, what it keeps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nnint.backends.torch.evidence import intensity_veto, valid_region


def _scene(seed=0, n=32, contrast=6.0):
    """A bright 12^3 cube (the object) in noisy tissue, and an answer that spills over it: a 16^3
    blob whose logit falls from 4 at the centre to 0 at its rim, as a network's does."""
    rng = np.random.default_rng(seed)
    img = rng.normal(0.0, 1.0, (n, n, n)).astype(np.float32)
    obj = np.zeros((n, n, n), bool)
    lo, hi = n // 2 - 6, n // 2 + 6
    obj[lo:hi, lo:hi, lo:hi] = True
    img[obj] += contrast
    zz, yy, xx = np.mgrid[:n, :n, :n]
    c = (n - 1) / 2
    r = np.maximum(np.maximum(abs(zz - c), abs(yy - c)), abs(xx - c))
    logit = (4.0 - 0.5 * r).astype(np.float32)
    return torch.from_numpy(img), torch.from_numpy(logit), obj, logit > 0


def _dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def test_a_blob_spilling_into_other_tissue_is_cut_back_to_the_object():
    img, logit, obj, blob = _scene()
    out = intensity_veto(img, logit, 1.0).numpy() > 0
    assert _dice(blob, obj) < 0.6
    # the object stays whole; what is left of the spill is the partial-volume halo of the 3^3 smoothing
    assert (out & obj).sum() == obj.sum()
    assert _dice(out, obj) > 0.75
    assert not (out & ~blob).any()  # nothing added


def test_an_object_that_looks_like_its_surroundings_is_left_alone():
    img, logit, obj, blob = _scene(contrast=0.0)  # an atlas region inside same-looking tissue
    out = intensity_veto(img, logit, 1.0).numpy() > 0
    assert _dice(out, blob) > 0.9


def test_off_flat_and_padding():
    img, logit, _, _ = _scene()
    assert torch.equal(intensity_veto(img, logit, 0.0), logit)
    flat = torch.zeros_like(img)
    assert torch.equal(intensity_veto(flat, logit, 1.0), logit)
    # outside the valid slices nothing changes, and the padding does not enter the statistics
    padded = img.clone()
    padded[:, :, 24:] = 0.0
    valid = (slice(None), slice(None), slice(0, 24))
    out = intensity_veto(padded, logit, 1.0, valid=valid)
    assert torch.equal(out[:, :, 24:], logit[:, :, 24:])
    inner = intensity_veto(img[:, :, :24], logit[:, :, :24], 1.0)
    assert torch.allclose(out[:, :, :24], inner)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.1, 5.0), st.floats(-2.0, 8.0))
def test_never_adds_support(seed, weight, contrast):
    img, logit, _, _ = _scene(seed, n=16, contrast=contrast)
    logit = logit + torch.from_numpy(np.random.default_rng(seed).normal(0, 2, logit.shape).astype(np.float32))
    out = intensity_veto(img, logit, weight)
    assert out.shape == logit.shape and out.dtype == torch.float32
    assert bool((out <= logit).all())


@pytest.mark.parametrize(
    "win_lo, size, shape, patch, want",
    [
        ((0, 0, 0), (32,) * 3, (40,) * 3, (32,) * 3, ((0, 32),) * 3),
        ((-4, 0, 30), (32,) * 3, (40,) * 3, (32,) * 3, ((4, 32), (0, 32), (0, 10))),
        ((-8, 0, 0), (64,) * 3, (40,) * 3, (32,) * 3, ((4, 24), (0, 20), (0, 20))),  # zoom 2
        ((-3, 0, 0), (16,) * 3, (40,) * 3, (32,) * 3, ((6, 32), (0, 32), (0, 32))),  # magnified 2x
    ],
)
def test_valid_region(win_lo, size, shape, patch, want):
    got = valid_region(win_lo, size, shape, patch)
    assert [(s.start, s.stop) for s in got] == [tuple(w) for w in want]
