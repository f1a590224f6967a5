"""The small interface between a :class:`~nnint.session.Session` and a model backend.

A backend turns a model (a checkpoint folder, a bundled model, or nothing for classical
algorithms) into an :class:`Engine`. The session owns everything that is not model-specific:
objects, masks, history, undo/redo, persistence, events. The engine is **stateless with respect
to history**: every call receives the object's active prompts (oldest first, the newest last) and
its current mask, so undo, redo and switching objects need no engine call at all. An engine may
cache whatever it likes (the preprocessed image, rasterised prompts) as long as the result is a
function of ``(image, prompts, mask)``.

Implementing a new backend (ONNX Runtime, TensorRT, a remote server, a classical algorithm) is
one class with :meth:`Engine.set_image` and :meth:`Engine.predict`, and one hook implementation
that registers it (see ``examples/nnint-example-backend``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import attrs
import numpy as np

from nnint.image import Image
from nnint.prompts import Prompt

#: every prompt kind nnint knows; capability sets are subsets of it.
PROMPT_KINDS = frozenset({"point", "box2d", "box3d", "scribble", "lasso", "initial_mask"})


@attrs.frozen
class Capabilities:
    """What an engine accepts. ``prompt_kinds`` is a subset of :data:`PROMPT_KINDS`."""

    prompt_kinds: frozenset[str] = attrs.field(converter=frozenset)
    preferred_scribble_thickness: tuple[float, float, float] = (2.0, 2.0, 2.0)
    #: interaction decay the model was trained with (informational for UIs), None if not applicable
    interaction_decay: float | None = None

    @prompt_kinds.validator
    def _known(self, _attr, value) -> None:
        unknown = set(value) - PROMPT_KINDS
        if unknown:
            raise ValueError(f"unknown prompt kinds {sorted(unknown)}; known: {sorted(PROMPT_KINDS)}")


@attrs.frozen(eq=False)
class MaskUpdate:
    """New mask values for the half-open region ``[lo, lo + values.shape)`` (z, y, x).

    ``values`` is uint8 0/1. Voxels outside the region are unchanged.
    """

    lo: tuple[int, int, int]
    values: np.ndarray

    @property
    def hi(self) -> tuple[int, int, int]:
        return tuple(a + s for a, s in zip(self.lo, self.values.shape))  # type: ignore[return-value]

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(a, b) for a, b in zip(self.lo, self.hi))  # type: ignore[return-value]


@runtime_checkable
class Engine(Protocol):
    """A model ready to predict on one image."""

    #: what the engine accepts
    capabilities: Capabilities

    def set_image(self, image: Image) -> None:
        """Prepare ``image`` (normalise, allocate). Called once per session before any predict."""

    def predict(self, prompts: Sequence[Prompt], mask: np.ndarray) -> MaskUpdate | None:
        """Predict the object after its newest prompt.

        ``prompts`` are the object's active prompts, oldest first (an :class:`~nnint.prompts.InitialMask`
        can only be first); the newest decides where to look. ``mask`` is the object's current
        uint8 mask (z, y, x) of the image's shape; it already holds an initial mask if one is
        first. The engine must not modify it. Returns the changed region, or None if nothing ran.
        """


@attrs.frozen
class ModelSpec:
    """A model that a backend can load. Listed by ``nnint models``."""

    name: str
    backend: str
    description: str = ""
    #: first line of the licence of the weights
    license: str = "unknown"
    #: a checkpoint folder, or None for models without files (classical backends)
    path: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))
    #: free-form facts for ``nnint models`` (capabilities, size, training data, ...)
    details: dict = attrs.field(factory=dict)


#: ``factory(model, device=..., **options) -> Engine``; ``model`` is a ModelSpec or None.
EngineFactory = Callable[..., Engine]


@attrs.frozen
class BackendSpec:
    """A named way to turn a :class:`ModelSpec` into an :class:`Engine`."""

    name: str
    factory: EngineFactory
    description: str = ""
    #: True when the backend needs a model (False for classical algorithms)
    needs_model: bool = True


def clip_update(update: MaskUpdate, shape: tuple[int, int, int]) -> MaskUpdate | None:
    """Restrict an update to an image of ``shape`` (engines may return regions reaching outside)."""
    lo = np.maximum(update.lo, 0)
    hi = np.minimum(update.hi, shape)
    if np.any(hi <= lo):
        return None
    sl = tuple(slice(a - o, b - o) for a, b, o in zip(lo, hi, update.lo))
    return MaskUpdate(tuple(int(v) for v in lo), np.ascontiguousarray(update.values[sl], dtype=np.uint8))
