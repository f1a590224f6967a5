"""Any sequence of add / undo / redo / reset / next object / select leaves every object's mask equal
to what replaying its surviving actions on a fresh session gives."""

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from nnint.image import Image
from nnint.prompts import Box, Lasso, Point, Scribble
from nnint.session import Session

SHAPE = (6, 10, 10)
IMAGE = Image(np.random.default_rng(3).normal(size=SHAPE).astype(np.float32))

coord = st.tuples(st.integers(0, SHAPE[0] - 1), st.integers(0, SHAPE[1] - 1), st.integers(0, SHAPE[2] - 1))


@st.composite
def prompts(draw):
    kind = draw(st.sampled_from(["point", "box", "scribble", "lasso"]))
    positive = draw(st.booleans())
    z, y, x = draw(coord)
    if kind == "point":
        return Point((z, y, x), positive)
    h, w = draw(st.integers(1, SHAPE[1] - y)), draw(st.integers(1, SHAPE[2] - x))
    if kind == "box":
        return Box((z, y, x), (z + 1, y + h, x + w), positive)
    mask = np.asarray(draw(st.lists(st.booleans(), min_size=h * w, max_size=h * w)), np.uint8).reshape(1, h, w)
    mask[0, 0, 0] = 1
    return (Scribble if kind == "scribble" else Lasso)(mask, (z, y, x), positive)


class SessionMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        from tests.conftest import ToyEngine

        self.session = Session(IMAGE, ToyEngine())
        self.session.new_object()

    @rule(prompt=prompts(), predict=st.booleans())
    def add(self, prompt, predict):
        self.session.add(prompt, predict=predict)

    @rule()
    def predict(self):
        if self.session.active.prompts:
            self.session.predict()

    @rule()
    def undo(self):
        self.session.undo()

    @rule()
    def redo(self):
        self.session.redo()

    @rule()
    def reset(self):
        self.session.reset()

    @rule()
    def next_object(self):
        self.session.new_object()

    @rule(data=st.data())
    def select(self, data):
        ids = [o.id for o in self.session.objects]
        self.session.select(data.draw(st.sampled_from(ids)))

    @invariant()
    def masks_equal_replay(self):
        from tests.conftest import ToyEngine

        for obj in self.session.objects:
            replay = Session(IMAGE, ToyEngine())
            for entry in obj.applied:
                if entry.action == "prompt":
                    replay.add(entry.prompt, predict=entry.predicted)
                elif entry.action == "predict":
                    replay.predict()
                else:
                    replay.reset()
            np.testing.assert_array_equal(replay.active.mask, obj.mask)
            assert [type(p) for p in replay.active.prompts] == [type(p) for p in obj.prompts]


SessionMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)
TestSessionHistory = SessionMachine.TestCase
