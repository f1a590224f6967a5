"""The classical backend: accuracy on synthetic shapes, negatives, determinism, errors, speed."""

from __future__ import annotations

import time

import attrs
import numpy as np
import pytest

from nnint.backends.classical import ClassicalEngine
from nnint.engine import PROMPT_KINDS, Engine
from nnint.errors import InvalidImageError
from nnint.image import Geometry, Image
from nnint.plugins import load_engine
from nnint.prompts import Box, InitialMask, Lasso, Point, Scribble
from nnint.session import Session


def _ball(shape, centre, radius, spacing=(1.0, 1.0, 1.0)):
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    return sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre, spacing)) <= radius**2


def _dice(a, b):
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return 2 * (a & b).sum() / (a.sum() + b.sum())


@pytest.fixture(scope="module")
def sphere():
    rng = np.random.default_rng(0)
    gt = _ball((48, 48, 48), (24, 24, 24), 10)
    img = (100 + 60 * gt + rng.normal(0, 15, gt.shape)).astype(np.float32)
    return Image(img), gt


def _segment(image, *prompts, engine=None):
    session = Session(image, engine or ClassicalEngine())
    for p in prompts:
        session.add(p)
    return session.active.mask.copy()


def test_is_an_engine_with_every_prompt_kind():
    engine = ClassicalEngine()
    assert isinstance(engine, Engine)
    assert engine.capabilities.prompt_kinds == PROMPT_KINDS
    assert engine.capabilities.preferred_scribble_thickness == (2.0, 2.0, 2.0)
    assert isinstance(load_engine(None, backend="classical"), ClassicalEngine)


@pytest.mark.parametrize(
    "prompt",
    [
        Point((24, 24, 24)),
        Point((24, 28, 21)),  # off centre
        Box((24, 13, 13), (25, 36, 36)),  # 2D box on the middle slice
        Box((14, 14, 14), (35, 35, 35)),  # 3D box
        Scribble.from_polyline([[24, 19, 19], [24, 29, 28]]),
        Lasso.from_polygon([[24, 14, 24], [24, 17, 17], [24, 24, 14], [24, 31, 17], [24, 34, 24],
                            [24, 31, 31], [24, 24, 34], [24, 17, 31]]),
    ],
    ids=["point", "point-off-centre", "box2d", "box3d", "scribble", "lasso"],
)
def test_sphere_in_noise(sphere, prompt):
    image, gt = sphere
    assert _dice(_segment(image, prompt), gt) > 0.8


def test_anisotropic_spacing():
    rng = np.random.default_rng(1)
    spacing = (3.0, 0.8, 0.8)
    gt = _ball((24, 64, 64), (12, 32, 32), 14.0, spacing)
    img = (200 - 80 * gt + rng.normal(0, 10, gt.shape)).astype(np.float32)  # a dark object
    image = Image(img, Geometry(spacing=spacing[::-1]))
    assert _dice(_segment(image, Point((12, 32, 32))), gt) > 0.8
    assert _dice(_segment(image, Box((12, 14, 14), (13, 51, 51))), gt) > 0.8


@pytest.fixture(scope="module")
def dumbbell():
    """Two equal balls joined by a thick tube: a click in one leaks into the other."""
    rng = np.random.default_rng(2)
    shape = (40, 40, 72)
    left, right = _ball(shape, (20, 20, 16), 9), _ball(shape, (20, 20, 56), 9)
    tube = np.zeros(shape, bool)
    tube[17:24, 17:24, 16:56] = True
    img = (100 + 60 * (left | right | tube) + rng.normal(0, 12, shape)).astype(np.float32)
    return Image(img), left


def test_negative_click_cuts_a_leak(dumbbell):
    image, left = dumbbell
    leaked = _segment(image, Point((20, 20, 16)))
    assert leaked.sum() > 1.6 * left.sum()  # the first click takes both balls
    cut = _segment(image, Point((20, 20, 16)), Point((20, 20, 56), positive=False))
    assert cut.sum() < 0.7 * leaked.sum()
    assert _dice(cut, left) > _dice(leaked, left) + 0.15
    assert not cut[20, 20, 56]
    assert cut[20, 20, 16]


def test_negative_prompts_of_other_kinds(dumbbell):
    image, left = dumbbell
    neg_scribble = Scribble.from_polyline([[20, 16, 52], [20, 24, 60]], positive=False)
    neg_box = Box((20, 8, 44), (21, 32, 68), positive=False)
    for neg in (neg_scribble, neg_box):
        out = _segment(image, Point((20, 20, 16)), neg)
        assert out[20, 20, 16] and not out[20, 20, 56]
        assert _dice(out, left) > 0.6


def test_later_positive_overrides_earlier_negative(sphere):
    image, gt = sphere
    out = _segment(image, Point((24, 24, 24)), Point((24, 24, 30), positive=False), Point((24, 24, 31)))
    assert out[24, 24, 31]


def test_deterministic(sphere, dumbbell):
    image, _ = dumbbell
    prompts = [Box((20, 10, 6), (21, 31, 27)), Point((20, 20, 56), positive=False), Point((20, 12, 16))]
    a = _segment(image, *prompts)
    b = _segment(image, *prompts, engine=ClassicalEngine())
    np.testing.assert_array_equal(a, b)
    # a function of the prompts: undo and redo, or replaying in a new session, give the same mask
    session = Session(image, ClassicalEngine())
    for p in prompts:
        session.add(p)
    session.undo()
    session.add(prompts[-1])
    np.testing.assert_array_equal(session.active.mask, a)


def test_initial_mask_is_the_start(sphere):
    image, gt = sphere
    start = _ball(gt.shape, (24, 24, 24), 6)
    session = Session(image, ClassicalEngine())
    obj = session.object_from_mask(start, predict=True)
    np.testing.assert_array_equal(obj.mask, start)  # refining alone keeps it
    session.add(Point((24, 24, 24), positive=False), object_id=obj.id)
    assert obj.mask.sum() < start.sum() and obj.mask.sum() > 0
    # a positive click in the missed half of the object adds that half
    half = gt.copy()
    half[:, :, 24:] = False
    session2 = Session(image, ClassicalEngine())
    obj2 = session2.object_from_mask(half)
    assert _dice(obj2.mask, gt) < 0.7
    session2.add(Point((24, 24, 30)), object_id=obj2.id)
    assert _dice(obj2.mask, gt) > 0.8
    # an InitialMask prompt alone is accepted by predict too
    update = ClassicalEngine()
    update.set_image(image)
    out = update.predict([InitialMask.from_full_mask(start)], np.zeros(gt.shape, np.uint8))
    assert out is not None and out.values.sum() == start.sum()


def test_only_negative_prompts_change_nothing(sphere):
    image, _ = sphere
    engine = ClassicalEngine()
    engine.set_image(image)
    assert engine.predict([Point((24, 24, 24), positive=False)], np.zeros(image.shape, np.uint8)) is None


def test_bad_images_raise():
    engine = ClassicalEngine()
    good = Image(np.random.default_rng(0).normal(size=(8, 8, 8)).astype(np.float32))
    for array in (np.full((8, 8, 8), 3.0, np.float32), np.where(np.eye(8, dtype=bool)[None], np.nan, 1.0)):
        bad = attrs.evolve(good)
        bad.array = array  # bypass Image's own validation: the engine must check for itself
        with pytest.raises(InvalidImageError):
            engine.set_image(bad)
    with pytest.raises(InvalidImageError):
        engine.set_image(np.zeros((8, 8, 8)))
    with pytest.raises(InvalidImageError):
        ClassicalEngine().predict([Point((1, 1, 1))], np.zeros((8, 8, 8), np.uint8))


def test_fast_on_a_large_volume():
    rng = np.random.default_rng(3)
    shape = (160, 192, 192)
    img = rng.normal(0, 15, shape).astype(np.float32)
    img[60:110, 70:130, 70:130] += 60
    session = Session(Image(img), ClassicalEngine())
    for p in (Point((85, 100, 100)), Box((85, 60, 60), (86, 140, 140)), Point((100, 120, 120), positive=False)):
        t0 = time.perf_counter()
        session.add(p)
        assert time.perf_counter() - t0 < 2.0  # < 1 s on a quiet CPU; slack for loaded CI machines


def test_result_does_not_depend_on_the_current_mask(sphere):
    image, gt = sphere
    engine = ClassicalEngine()
    engine.set_image(image)
    prompts = [Point((24, 24, 24)), Point((24, 24, 31), positive=False)]
    empty = np.zeros(gt.shape, np.uint8)
    stale = empty.copy()
    stale[0:3, 0:3, 0:3] = 1  # voxels of an earlier prediction far away
    a, b = engine.predict(prompts, empty), engine.predict(prompts, stale)
    full_a, full_b = empty.copy(), stale.copy()
    full_a[a.slices] = a.values
    full_b[b.slices] = b.values
    np.testing.assert_array_equal(full_a, full_b)  # the stale voxels are cleared, the rest agrees
    assert stale.sum() == 27  # the engine does not modify its input
