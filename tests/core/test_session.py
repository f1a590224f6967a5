import numpy as np
import pytest

from nnint.engine import Capabilities
from nnint.errors import (
    EmptyPromptError,
    InvalidMaskError,
    ObjectLockedError,
    PromptOutOfBoundsError,
    SessionError,
    UnknownObjectError,
    UnsupportedPromptError,
)
from nnint.prompts import Box, InitialMask, Lasso, Point, Scribble
from nnint.session import Session


def snapshot(session):
    return [(o.id, o.name, o.label, o.locked, o.version, o.mask.copy(), len(o.applied), o.can_redo) for o in session.objects]


def same(a, b):
    return len(a) == len(b) and all(
        x[:5] == y[:5] and np.array_equal(x[5], y[5]) and x[6:] == y[6:] for x, y in zip(a, b)
    )


def test_add_undo_redo(small_image, toy_engine):
    s = Session(small_image, toy_engine)
    c1 = s.add(Point((5, 5, 5)))
    assert c1.version == 1 and c1.base_version == 0
    assert s.active.mask[5, 5, 5] == 1
    m1 = s.active.mask.copy()
    s.add(Point((5, 5, 6), positive=False))
    assert s.active.mask[5, 5, 6] == 0
    undone = s.undo()
    assert np.array_equal(s.active.mask, m1)
    assert undone.version == 3  # versions only go up, even on undo
    assert len(s.active.prompts) == 1
    s.redo()
    assert s.active.mask[5, 5, 6] == 0 and len(s.active.prompts) == 2
    assert s.undo() is not None and s.undo() is not None
    assert not s.active.mask.any()
    assert s.undo() is None  # nothing left
    s.redo()
    s.add(Box((3, 0, 0), (4, 4, 4)))  # a new action drops the redo tail
    assert not s.active.can_redo


def test_change_reports_only_the_changed_bbox(small_image, toy_engine):
    s = Session(small_image, toy_engine)
    ch = s.add(Box((2, 3, 4), (3, 6, 8)))
    assert ch.lo == (2, 3, 4) and ch.hi == (3, 6, 8)
    assert ch.values.all()
    assert s.add(Box((2, 3, 4), (3, 6, 8))) is None  # same again: nothing changed


def test_pending_prompts_then_predict(small_image, toy_engine):
    s = Session(small_image, toy_engine)
    assert s.add(Point((1, 1, 1)), predict=False) is None
    assert s.active.has_pending and toy_engine.calls == 0
    ch = s.predict()
    assert ch is not None and toy_engine.calls == 1
    with pytest.raises(SessionError):
        Session(small_image, toy_engine).predict()


def test_objects_lifecycle_and_compose(small_image, toy_engine):
    s = Session(small_image, toy_engine)
    a = s.active
    s.add(Box((5, 0, 0), (6, 8, 8)))
    b = s.new_object("liver")
    assert s.active is b and b.label == 2 and b.name == "liver"
    s.add(Box((5, 4, 4), (6, 12, 12)))
    labels = s.compose("keep")
    assert labels[5, 5, 5] == 1 and labels[5, 10, 10] == 2
    assert s.compose("overwrite")[5, 5, 5] == 2
    with pytest.raises(SessionError, match="overlap"):
        s.compose("error")
    s.confirm(a.id)
    assert s.compose("overwrite")[5, 5, 5] == 1  # confirmed objects win
    s.select(a.id)
    assert s.active is a and len(a.prompts) == 1
    s.remove(b.id)
    assert [o.id for o in s.objects] == [a.id]
    with pytest.raises(UnknownObjectError):
        s.select(b.id)
    with pytest.raises(SessionError):
        s.new_object(label=a.label)


def test_locked_object_is_protected(small_image, toy_engine):
    s = Session(small_image, toy_engine)
    a = s.active
    s.add(Box((5, 0, 0), (6, 8, 8)))
    s.confirm()
    before = snapshot(s)
    with pytest.raises(ObjectLockedError, match="unlock"):
        s.add(Point((1, 1, 1)))
    with pytest.raises(ObjectLockedError):
        s.undo()
    with pytest.raises(ObjectLockedError):
        s.reset()
    assert same(before, snapshot(s))
    b = s.new_object()
    s.add(Box((5, 0, 0), (6, 12, 12)))  # overlaps a's voxels: they stay a's
    assert not b.mask[5, 0:8, 0:8].any() and b.mask[5, 10, 10]
    assert a.mask[5, 0:8, 0:8].all()
    s.confirm(a.id, locked=False)
    s.select(a.id)
    s.add(Point((1, 1, 1)))


def test_reset_is_undoable(small_image, toy_engine):
    s = Session(small_image, toy_engine)
    s.add(Point((3, 3, 3)))
    m = s.active.mask.copy()
    s.reset()
    assert not s.active.mask.any() and s.active.prompts == []
    s.undo()
    assert np.array_equal(s.active.mask, m) and len(s.active.prompts) == 1


def test_initial_mask_and_object_from_mask(small_image, toy_engine):
    s = Session(small_image, toy_engine)
    mask = np.zeros(small_image.shape, np.uint8)
    mask[2:4, 2:4, 2:4] = 1
    obj = s.object_from_mask(mask, name="seed")
    assert np.array_equal(obj.mask, mask) and toy_engine.calls == 0
    assert isinstance(obj.prompts[0], InitialMask)
    s.add(Point((8, 8, 8)))
    assert len(obj.prompts) == 2
    obj2 = s.object_from_mask(mask, predict=True)
    assert obj2.mask.sum() > mask.sum()  # the toy engine "refined" it
    with pytest.raises(InvalidMaskError):
        s.object_from_mask(np.ones((2, 2, 2)))
    n = len(s.objects)
    with pytest.raises(EmptyPromptError):
        s.object_from_mask(np.zeros(small_image.shape))
    assert len(s.objects) == n


class _BoxOnlyEngine:
    capabilities = Capabilities({"point", "box2d"})

    def set_image(self, image):
        pass

    def predict(self, prompts, mask):
        raise RuntimeError("the model crashed")


@pytest.mark.parametrize("prompt, error", [
    (Point((100, 0, 0)), PromptOutOfBoundsError),
    (Box((0, 0, 0), (4, 4, 4)), UnsupportedPromptError),
    (Scribble(np.ones((1, 2, 2)), (0, 0, 0)), UnsupportedPromptError),
    (Lasso(np.ones((1, 2, 2)), (0, 0, 0)), UnsupportedPromptError),
    ("a point", UnsupportedPromptError),
])
def test_bad_prompts_leave_session_unchanged(small_image, prompt, error):
    s = Session(small_image, _BoxOnlyEngine())
    s.new_object()
    before = snapshot(s)
    with pytest.raises(error):
        s.add(prompt)
    assert same(before, snapshot(s))


def test_engine_failure_leaves_session_unchanged(small_image):
    s = Session(small_image, _BoxOnlyEngine())
    s.add(Point((1, 1, 1)), predict=False)
    before = snapshot(s)
    with pytest.raises(RuntimeError):
        s.add(Point((2, 2, 2)))
    with pytest.raises(RuntimeError):
        s.predict()
    assert same(before, snapshot(s))


def test_history_memory_is_bounded_by_deltas(toy_engine):
    from nnint.image import Image

    img = Image(np.random.default_rng(1).normal(size=(64, 128, 128)).astype(np.float32))
    s = Session(img, toy_engine)
    for i in range(50):
        s.add(Box((i, 10, 10), (i + 1, 60, 60)))
    full_copies = 50 * img.array.size  # what storing one uint8 mask per step would cost
    assert s.active.history_bytes < full_copies / 200


def test_events_are_fired(small_image, toy_engine):
    import pluggy

    from nnint import hookspecs
    from nnint.plugins import hookimpl

    seen = []

    class Listener:
        @hookimpl
        def nnint_mask_changed(self, session, change):
            seen.append(("mask", change.object_id, change.version))

        @hookimpl
        def nnint_prompt_added(self, session, obj, prompt):
            seen.append(("added", obj.id))

        @hookimpl
        def nnint_prompt_undone(self, session, obj, prompt):
            seen.append(("undone", obj.id))

        @hookimpl
        def nnint_object_created(self, session, obj):
            seen.append(("created", obj.id))

        @hookimpl
        def nnint_object_confirmed(self, session, obj):
            seen.append(("confirmed", obj.id))

        @hookimpl
        def nnint_object_removed(self, session, obj):
            seen.append(("removed", obj.id))

    pm = pluggy.PluginManager("nnint")
    pm.add_hookspecs(hookspecs)
    pm.register(Listener())
    s = Session(small_image, toy_engine, plugin_manager=pm)
    s.add(Point((1, 1, 1)))
    s.undo()
    s.confirm()
    s.remove(s.active.id)
    assert seen == [("created", 1), ("added", 1), ("mask", 1, 1), ("undone", 1), ("mask", 1, 2), ("confirmed", 1), ("removed", 1)]
