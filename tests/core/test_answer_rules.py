"""Engine-independent answer rules in nnint.engine: box_limit / restrict_update (a positive 3D box
as a hard limit) and one_way_correction (a correction only adds or only removes)."""

import numpy as np
import pytest

from nnint.engine import MaskUpdate, box_limit, one_way_correction, restrict_update
from nnint.prompts import Box, InitialMask, Point, Scribble


def test_no_positive_3d_box_means_no_limit():
    assert box_limit([]) is None
    assert box_limit([Point((5, 5, 5))]) is None
    assert box_limit([Box((4, 2, 2), (5, 9, 9))]) is None  # a 2-D box limits nothing
    assert box_limit([Box((2, 2, 2), (9, 9, 9), positive=False)]) is None


def test_union_of_positive_boxes_and_prompts_inside_keep_it():
    b1, b2 = Box((2, 2, 2), (6, 6, 6)), Box((4, 1, 3), (8, 5, 7))
    assert box_limit([b1, b2]) == ((2, 1, 2), (8, 6, 7))
    inside = [b1, Point((3, 3, 3)), Point((40, 40, 40), positive=False)]  # negatives never lift it
    assert box_limit(inside) == ((2, 2, 2), (6, 6, 6))
    stroke = np.zeros((1, 3, 3), bool)
    stroke[0, 1] = True
    assert box_limit([b1, Scribble(stroke, lo=(3, 2, 2))]) == ((2, 2, 2), (6, 6, 6))


@pytest.mark.parametrize("outside", [
    Point((6, 3, 3)),  # hi is exclusive
    Point((3, 3, 1.4)),  # rounds to 1 < lo
    Scribble(np.ones((1, 1, 4), bool), lo=(3, 3, 4)),  # reaches x = 7
    InitialMask(np.ones((2, 2, 2), bool), lo=(0, 0, 0)),
])
def test_a_positive_prompt_outside_lifts_the_limit(outside):
    assert box_limit([Box((2, 2, 2), (6, 6, 6)), outside]) is None


def test_a_crop_whose_box_sticks_out_but_voxels_stay_inside_keeps_the_limit():
    m = np.zeros((1, 1, 6), bool)
    m[0, 0, :3] = True  # voxels x = 2..4, crop box reaches x = 7
    assert box_limit([Box((2, 2, 2), (6, 6, 6)), Scribble(m, lo=(3, 3, 2))]) == ((2, 2, 2), (6, 6, 6))


def test_restrict_update_clears_outside_only():
    u = MaskUpdate((1, 1, 1), np.ones((4, 4, 4), np.uint8))
    r = restrict_update(u, (2, 0, 3), (4, 9, 9))
    assert r.lo == u.lo and r.values.shape == u.values.shape
    assert r.values.sum() == 2 * 4 * 2 and r.values[1:3, :, 2:].all()
    assert restrict_update(u, (10, 10, 10), (12, 12, 12)).values.sum() == 0
    assert u.values.all()  # the input is not modified


def _cube():
    mask = np.zeros((20, 20, 20), np.uint8)
    mask[5:15, 5:15, 5:15] = 1
    return mask


@pytest.mark.parametrize("positive", [True, False])
def test_a_correction_works_one_way(positive):
    mask = _cube()
    new = mask.copy()
    new[5:15, 5:15, 5] = 0  # the answer removes a face ...
    new[0:2, 0:2, 0:2] = 1  # ... and adds a corner
    r = one_way_correction(MaskUpdate((0, 0, 0), new), mask, Point((10, 10, 10), positive=positive))
    assert r.lo == (0, 0, 0) and r.values.dtype == np.uint8
    if positive:
        assert r.values.sum() == 1000 + 8 and r.values[:, :, 5].sum() == 100
    else:
        assert r.values.sum() == 1000 - 100 and not r.values[0:2, 0:2, 0:2].any()
    # an update over a sub-region is compared with the old mask there
    sub = one_way_correction(MaskUpdate((5, 5, 5), new[5:15, 5:15, 5:15]), mask, Scribble(np.ones((1, 1, 1), bool), lo=(9, 9, 9), positive=positive))
    assert sub.values.sum() == (1000 if positive else 900)


def test_boxes_initial_masks_and_first_prompts_pass_unchanged():
    mask = _cube()
    update = MaskUpdate((0, 0, 0), np.zeros_like(mask))
    assert one_way_correction(update, mask, Box((0, 0, 0), (20, 20, 20))) is update
    assert one_way_correction(update, mask, InitialMask(np.ones((2, 2, 2), bool))) is update
    assert one_way_correction(update, np.zeros_like(mask), Point((3, 3, 3), positive=False)) is update
