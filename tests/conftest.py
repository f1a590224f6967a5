"""Shared fixtures: small images and a deterministic toy engine for session tests."""

from __future__ import annotations

import numpy as np
import pytest

from nnint.engine import Capabilities, MaskUpdate
from nnint.image import Geometry, Image
from nnint.prompts import Box, InitialMask, Point


class ToyEngine:
    """A deterministic stand-in model: each prompt paints (positive) or erases (negative) a local
    region on top of the current mask; scribble/lasso paint their voxels dilated by one voxel in-plane.
    The result depends on the mask and on the number of prompts, like a real model."""

    capabilities = Capabilities({"point", "box2d", "box3d", "scribble", "lasso", "initial_mask"})

    def __init__(self) -> None:
        self.calls = 0
        self.shape = None

    def set_image(self, image: Image) -> None:
        self.shape = image.shape

    def predict(self, prompts, mask):
        self.calls += 1
        p = prompts[-1]
        if isinstance(p, InitialMask):
            lo, hi = (0, 0, 0), self.shape
            region = mask.copy()
            region = np.maximum(region, np.roll(region, 1, axis=2))  # "refine": grow by one voxel in x
            return MaskUpdate(lo, region)
        if isinstance(p, Point):
            r = 1 + len(prompts) % 3
            c = np.array(p.index)
            lo = np.maximum(c - r, 0)
            hi = np.minimum(c + r + 1, self.shape)
        else:
            lo, hi = np.array(p.bbox[0]), np.array(p.bbox[1])
        sl = tuple(slice(a, b) for a, b in zip(lo, hi))
        values = mask[sl].copy()
        if isinstance(p, (Point, Box)):
            values[...] = 1 if p.positive else 0
        else:
            crop = p.mask
            values[crop.astype(bool)] = 1 if p.positive else 0
        return MaskUpdate(tuple(int(v) for v in lo), values)


@pytest.fixture
def toy_engine():
    return ToyEngine()


@pytest.fixture
def small_image():
    rng = np.random.default_rng(0)
    arr = rng.normal(100, 20, size=(12, 16, 20)).astype(np.float32)
    return Image(arr, Geometry(origin=(-3.0, 4.0, 10.0), spacing=(0.8, 0.9, 2.5)))
