"""Shared fixtures of the training tests: a tiny nnU-Net dataset of balls in noise."""

from __future__ import annotations

import json

import numpy as np
import pytest


def tiny_case(rng, shape=(40, 40, 40)):
    zz, yy, xx = np.indices(shape)
    img = rng.normal(100, 10, shape).astype(np.float32)
    lab = np.zeros(shape, np.uint8)
    for v, r in ((1, 9), (2, 5), (3, 3)):
        c = rng.integers(r + 2, np.array(shape) - r - 2)
        ball = (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= r * r
        lab[ball & (lab == 0)] = v
        img[ball] += 60 * v
    return img, lab


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from nnint.evaluate.data import write_nnunet_dataset

    root = tmp_path_factory.mktemp("data") / "Dataset001_Tiny"
    rng = np.random.default_rng(0)
    cases = [(f"c{i}", *tiny_case(rng), (1.0, 1.0, 1.0)) for i in range(5)]
    write_nnunet_dataset(root, cases, {"big": 1, "mid": 2, "small": 3})
    (root / "splits.json").write_text(json.dumps({"train": ["c0", "c1", "c2", "c3"], "dev": ["c4"]}))
    return root


@pytest.fixture
def make_case():
    """``make_case(rng) -> (image, labels)``: one more volume like the dataset's."""
    return tiny_case
