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
from nnint.prompts import Box, InitialMask, Point, Prompt

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


def box_limit(prompts: Sequence[Prompt]) -> tuple[tuple[int, int, int], tuple[int, int, int]] | None:
    """The half-open region ``(lo, hi)`` that the object's positive 3D boxes confine it to, or None.

    A 3D box is a bounding box: the person says the object lies inside it. The region is the
    bounding box of all positive 3D boxes. None when there is no positive 3D box, or when a
    positive point, scribble, lasso or initial mask reaches outside that region: the person has
    shown that the box was too tight, so it no longer confines anything. Engines that honour boxes
    as hard limits pass their updates through :func:`restrict_update`.
    """
    boxes = [p for p in prompts if isinstance(p, Box) and p.positive and not p.is_2d]
    if not boxes:
        return None
    lo = tuple(min(b.lo[d] for b in boxes) for d in range(3))
    hi = tuple(max(b.hi[d] for b in boxes) for d in range(3))
    for p in prompts:
        if not p.positive or isinstance(p, Box):
            continue
        if isinstance(p, Point):
            if any(not a <= i < b for i, a, b in zip(p.index, lo, hi)):
                return None
            continue
        if all(a <= pl and ph <= b for pl, ph, a, b in zip(p.lo, p.hi, lo, hi)):
            continue  # the crop's box lies inside
        voxels = np.argwhere(p.mask) + np.asarray(p.lo)
        if ((voxels < np.asarray(lo)) | (voxels >= np.asarray(hi))).any():
            return None
    return lo, hi  # type: ignore[return-value]


def restrict_update(update: MaskUpdate, lo: Sequence[int], hi: Sequence[int]) -> MaskUpdate:
    """``update`` with every voxel outside the half-open region ``[lo, hi)`` set to 0."""
    values = np.zeros_like(update.values)
    a = [max(0, int(low) - u) for low, u in zip(lo, update.lo)]
    b = [min(s, int(h) - u) for h, u, s in zip(hi, update.lo, update.values.shape)]
    if all(y > x for x, y in zip(a, b)):
        sl = tuple(slice(x, y) for x, y in zip(a, b))
        values[sl] = update.values[sl]
    return MaskUpdate(update.lo, values)


def one_way_correction(update: MaskUpdate, mask: np.ndarray, newest: Prompt) -> MaskUpdate:
    """``update`` limited to the direction of a correction prompt.

    A correction is a point, scribble or lasso given while the object already has voxels: a
    positive one may only add voxels and a negative one only remove them; the old mask is kept
    wherever the network's answer went the other way. Anything else (boxes, initial masks, the
    first prompt of an empty object) returns ``update`` unchanged. Why: the network re-predicts a
    whole window (zoomed out, the whole object) for every prompt, so a click that fixes one place
    can take away good parts elsewhere (SlicerNNInteractive issue #30, "Segmentation is partly
    removed after new point placement"); people expect a click to change things its own way.
    """
    if isinstance(newest, (Box, InitialMask)) or not mask.any():
        return update
    old = mask[update.slices] != 0
    new = update.values != 0
    values = (old | new) if newest.positive else (old & new)
    return MaskUpdate(update.lo, values.astype(np.uint8))


def answer_rules(update: MaskUpdate, mask: np.ndarray, prompts: Sequence[Prompt], *, one_way: bool,
                 confine: bool) -> MaskUpdate:
    """``update`` (the answer to ``prompts`` while ``mask`` is the object) after the answer rules an
    engine turns on: :func:`one_way_correction` (``one_way``), then the positive 3D boxes' limit
    (``confine``, :func:`box_limit` and :func:`restrict_update`). The one place both the torch
    backend and the training's simulated rounds apply them, so they cannot drift apart."""
    if one_way:
        update = one_way_correction(update, mask, prompts[-1])
    if confine:
        limit = box_limit(prompts)
        if limit is not None:
            update = restrict_update(update, *limit)
    return update
