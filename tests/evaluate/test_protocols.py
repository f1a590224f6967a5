"""Simulated-user protocols: registration, determinism, polarity, variants, capability checks."""

from __future__ import annotations

import numpy as np
import pytest

from nnint.engine import PROMPT_KINDS, Capabilities
from nnint.errors import PluginError, UnsupportedPromptError
from nnint.evaluate.protocols import (
    BUILTIN,
    SimulatedUser,
    describe_prompt,
    get_protocol,
    registered_protocols,
)
from nnint.prompts import Box, InitialMask, Lasso, Point, Scribble, check_in_image

ALL = Capabilities(PROMPT_KINDS)
NO_BOX3D = Capabilities(PROMPT_KINDS - {"box3d"})
NAMES = ("box+clicks", "points", "scribble", "lasso", "box2d")


@pytest.fixture(scope="module")
def gt():
    z, y, x = np.ogrid[:24, :32, :32]
    ball = (z - 12) ** 2 + ((y - 15) / 1.2) ** 2 + (x - 17) ** 2 <= 49
    return ball


def _user(name, gt, seed=0, caps=ALL):
    return get_protocol(name).factory(gt, rng=np.random.default_rng(seed), spacing=(2.0, 1.0, 1.0), capabilities=caps)


def _same(a, b):
    if isinstance(a, (Scribble, Lasso)):
        return a == b
    return a == b and type(a) is type(b)


def test_builtins_are_registered_through_the_hook():
    found = registered_protocols()
    assert set(NAMES) <= set(found)
    for name in NAMES:
        assert found[name].factory is BUILTIN[name]
        assert found[name].description
    with pytest.raises(PluginError, match="unknown protocol"):
        get_protocol("telepathy")


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_per_seed_and_inside_the_image(name, gt):
    pred = np.zeros_like(gt)
    pred[8:16, 10:20, 12:22] = True  # some overlap, some false positive
    runs = []
    for _ in range(2):
        user = _user(name, gt, seed=7)
        assert isinstance(user, SimulatedUser)
        first = user.first()
        second = user.next(pred)
        runs.append((first, second))
        for p in (first, second):
            check_in_image(p, gt.shape)
    assert _same(runs[0][0], runs[1][0]) and _same(runs[0][1], runs[1][1])


@pytest.mark.parametrize("name", NAMES)
def test_polarity_of_corrections(name, gt):
    # missed foreground only -> a positive prompt; false positives only -> a negative prompt
    under = gt.copy()
    under[:, :, 17:] = False
    over = gt.copy()
    over[2:22, 2:30, 2:30] = True
    user = _user(name, gt)
    user.first()
    assert user.next(under).positive is True
    assert user.next(over).positive is False
    assert user.next(gt) is None  # nothing wrong, nothing to click


def test_corrections_target_the_error(gt):
    over = gt.copy()
    over[2:22, 2:30, 2:30] = True
    fp = over & ~gt
    for name in ("points", "box+clicks"):
        p = _user(name, gt).next(over)
        assert isinstance(p, Point) and fp[p.index]
    for name in ("scribble", "lasso"):
        p = _user(name, gt).next(over)
        sl = tuple(slice(a, b) for a, b in zip(p.lo, p.hi))
        drawn = p.mask.astype(bool)
        if name == "scribble":
            assert fp[sl][drawn].mean() > 0.9
        else:  # a negative lasso covers the false positives and never the ground truth
            assert fp[sl][drawn].sum() > 0.5 * drawn.sum()
            assert not gt[sl][drawn].any()


def test_box_clicks_picks_3d_or_2d_box_from_capabilities(gt):
    user3 = _user("box+clicks", gt, caps=ALL)
    assert user3.variant == "box3d"
    box3 = user3.first()
    assert isinstance(box3, Box) and not box3.is_2d
    zs = np.flatnonzero(gt.any(axis=(1, 2)))
    assert (box3.lo[0], box3.hi[0]) == (zs[0], zs[-1] + 1)  # the occupied slice range

    user2 = _user("box+clicks", gt, caps=NO_BOX3D)
    assert user2.variant == "box2d"
    box2 = user2.first()
    assert isinstance(box2, Box) and box2.is_2d and box2.slice_axis == 0
    assert box2.lo[0] == zs[len(zs) // 2]  # the middle occupied slice
    # same in-plane extent in both variants (same seed)
    assert box2.lo[1:] == box3.lo[1:] and box2.hi[1:] == box3.hi[1:]
    # the box encloses the target on its slice
    sl = gt[box2.lo[0]]
    ys, xs = np.nonzero(sl)
    assert box2.lo[1] <= ys.min() and box2.hi[1] > ys.max() and box2.lo[2] <= xs.min() and box2.hi[2] > xs.max()


def test_points_start_at_the_deepest_voxel(gt):
    p = _user("points", gt).first()
    assert isinstance(p, Point) and p.positive and gt[p.index]
    assert p.index == (12, 15, 17)


def test_slice_protocols_start_with_a_positive_2d_prompt(gt):
    for name, cls in (("scribble", Scribble), ("lasso", Lasso), ("box2d", Box)):
        p = _user(name, gt).first()
        assert isinstance(p, cls) and p.positive
        extent = np.array(p.hi) - np.array(p.lo)
        assert (extent == 1).any()  # drawn on one slice


def test_unsupported_protocols_raise():
    only_points = Capabilities({"point"})
    g = np.ones((2, 2, 2), bool)
    for name in ("box+clicks", "scribble", "lasso", "box2d"):
        with pytest.raises(UnsupportedPromptError):
            _user(name, g, caps=only_points)
    assert _user("points", g, caps=only_points).variant == "points"


def test_describe_prompt():
    assert describe_prompt(None) == "none"
    assert describe_prompt(Point((1, 2, 3))) == "point+"
    assert describe_prompt(Point((1, 2, 3), False)) == "point-"
    assert describe_prompt(Box((0, 0, 0), (1, 4, 4))) == "box2d+"
    assert describe_prompt(Box((0, 0, 0), (3, 4, 4))) == "box3d+"
    assert describe_prompt(InitialMask(np.ones((1, 1, 1)))) == "initial_mask"
