import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nnint.errors import EmptyPromptError, InvalidPromptError, PromptOutOfBoundsError
from nnint.image import Geometry
from nnint.prompts import (
    Box,
    InitialMask,
    Lasso,
    Point,
    Scribble,
    check_in_image,
    clip_to_image,
    prompt_from_dict,
    prompt_kind,
    prompt_to_dict,
    round_index,
)


def test_rounding_rule_is_half_up():
    assert round_index([0.5, 1.5, 2.5, -0.5, 2.49]).tolist() == [1, 2, 3, 0, 2]


def test_point_index_and_polarity():
    p = Point((1.5, 2.4, 3.6), positive=False)
    assert p.index == (2, 2, 4)
    assert not p.positive
    assert prompt_kind(p) == "point"


@pytest.mark.parametrize("bad", [(1, 2), (1, 2, 3, 4), (np.nan, 1, 2), (np.inf, 0, 0)])
def test_point_rejects_bad_coordinates(bad):
    with pytest.raises(InvalidPromptError):
        Point(bad)


def test_box_2d_3d_and_zero_size():
    assert Box((3, 0, 0), (4, 10, 10)).is_2d
    assert Box((3, 0, 0), (4, 10, 10)).slice_axis == 0
    assert prompt_kind(Box((0, 0, 0), (5, 5, 5))) == "box3d"
    with pytest.raises(EmptyPromptError, match="zero size along axis 1"):
        Box((0, 5, 0), (3, 5, 3))
    with pytest.raises(EmptyPromptError):
        Box((0, 6, 0), (3, 5, 3))


def test_crop_prompts_reject_empty_and_bad_shapes():
    with pytest.raises(EmptyPromptError):
        Scribble(np.zeros((1, 4, 4)), (0, 0, 0))
    with pytest.raises(InvalidPromptError):
        Lasso(np.ones((4, 4)), (0, 0, 0))
    with pytest.raises(EmptyPromptError):
        InitialMask.from_full_mask(np.zeros((4, 4, 4)))


def test_scribble_polyline_rasterises_on_its_plane():
    s = Scribble.from_polyline([[4, 2, 2], [4, 2, 12]], thickness=2)
    assert s.mask.shape[0] == 1 and s.lo[0] == 4
    # a horizontal line 2 voxels thick: rows 1..3 at most, every column 2..12 covered
    cols = np.argwhere(s.mask[0])[:, 1] + s.lo[2]
    assert set(range(2, 13)) <= set(cols.tolist())
    rows = np.unique(np.argwhere(s.mask[0])[:, 0] + s.lo[1])
    assert rows.min() >= 1 and rows.max() <= 3
    with pytest.raises(InvalidPromptError, match="axis-aligned"):
        Scribble.from_polyline([[0, 0, 0], [3, 4, 5]])
    with pytest.raises(InvalidPromptError):
        Scribble.from_polyline([[0, 0, 0], [0, 4, 5]], thickness=0)


def test_lasso_polygon_fills_square():
    lasso = Lasso.from_polygon([[2, 0, 10], [2, 8, 10], [2, 8, 18], [2, 0, 18]], positive=False)
    assert lasso.mask.sum() == 9 * 9
    assert lasso.bbox == ((2, 0, 10), (3, 9, 19))
    assert not lasso.positive
    # a lasso on a sagittal plane (x constant)
    sag = Lasso.from_polygon([[0, 0, 7], [6, 0, 7], [6, 6, 7]])
    assert sag.mask.shape[2] == 1 and sag.lo[2] == 7
    with pytest.raises(EmptyPromptError):
        Lasso.from_polygon([[0, 0, 0], [0, 1, 1]])


def test_world_constructors_follow_geometry():
    g = Geometry(origin=(10.0, -5.0, 2.0), spacing=(2.0, 1.0, 3.0))
    p = Point.from_world((14.0, -3.0, 8.0), g)  # i = 2, j = 2, k = 2
    assert p.index == (2, 2, 2)
    ras = Point.from_world((-14.0, 3.0, 8.0), g, frame="RAS")
    assert ras.index == (2, 2, 2)
    box = Box.from_world((10.0, -5.0, 2.0), (14.0, -1.0, 2.0), g)
    assert box.lo == (0, 0, 0) and box.hi == (1, 5, 3) and box.is_2d
    lasso = Lasso.from_world_polygon([[10, -5, 5], [16, -5, 5], [16, 0, 5], [10, 0, 5]], g)
    assert lasso.lo[0] == 1 and lasso.mask.shape[0] == 1


def test_bounds_checks_and_clipping():
    shape = (5, 6, 7)
    check_in_image(Point((4, 5, 6)), shape)
    with pytest.raises(PromptOutOfBoundsError, match="outside the image"):
        check_in_image(Point((5, 0, 0)), shape)
    with pytest.raises(PromptOutOfBoundsError):
        check_in_image(Box((0, 0, 0), (1, 7, 7)), shape)
    clipped = clip_to_image(Box((-2, 0, 0), (1, 9, 3)), shape)
    assert clipped.lo == (0, 0, 0) and clipped.hi == (1, 6, 3)
    s = clip_to_image(Scribble(np.ones((1, 4, 4)), (2, 4, 5)), shape)
    assert s.mask.shape == (1, 2, 2) and s.lo == (2, 4, 5)
    with pytest.raises(PromptOutOfBoundsError):
        clip_to_image(Box((10, 10, 10), (11, 12, 12)), shape)


crops = st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 5)).flatmap(
    lambda s: st.lists(st.booleans(), min_size=s[0] * s[1] * s[2], max_size=s[0] * s[1] * s[2]).map(
        lambda bits: np.array(bits, dtype=np.uint8).reshape(s)
    )
).filter(lambda m: m.any())
corners = st.tuples(*[st.integers(-5, 50)] * 3)


@given(st.one_of(
    st.builds(Point, st.tuples(*[st.floats(-100, 100, allow_nan=False)] * 3), st.booleans()),
    st.builds(lambda lo, ext, pos: Box(lo, np.add(lo, ext), pos), corners, st.tuples(*[st.integers(1, 9)] * 3), st.booleans()),
    st.builds(Scribble, crops, corners, st.booleans()),
    st.builds(Lasso, crops, corners, st.booleans()),
    st.builds(lambda m, lo, p: InitialMask(m, lo, predict=p), crops, corners, st.booleans()),
))
def test_serialisation_round_trip(prompt):
    assert prompt_from_dict(prompt_to_dict(prompt)) == prompt


@pytest.mark.parametrize("bad", [
    {"zyx": [1, 2, 3]},
    {"kind": "circle"},
    {"kind": "point"},
    {"kind": "box", "lo": [0, 0, 0], "hi": [0, 1, 1]},
    {"kind": "scribble", "lo": [0, 0, 0], "shape": [1, 2, 2], "voxels": [[0, 5, 5]]},
    {"kind": "lasso", "polygon": [[0, 0, 0]]},
    "point",
])
def test_prompt_from_dict_rejects_malformed(bad):
    with pytest.raises(InvalidPromptError):
        prompt_from_dict(bad)


def test_prompts_are_frozen():
    p = Point((1, 2, 3))
    with pytest.raises(AttributeError):
        p.positive = False  # type: ignore[misc]
    s = Scribble(np.ones((1, 2, 2)), (0, 0, 0))
    with pytest.raises(ValueError):
        s.mask[0, 0, 0] = 0
