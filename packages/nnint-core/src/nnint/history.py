"""Compressed mask deltas and the per-object history of actions.

Undo and redo must be unlimited yet cheap in memory, so a history entry never stores a full mask:
it stores the *changed region* only, old and new values bit-packed and zlib-compressed. A typical
point click on a 256^3 volume costs a few kilobytes of history.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

import attrs
import numpy as np

from nnint.prompts import InitialMask, Prompt


def pack_mask(values: np.ndarray) -> bytes:
    """Bit-pack and compress a 0/1 array (its shape is stored elsewhere)."""
    return zlib.compress(np.packbits(values.reshape(-1) != 0).tobytes(), 1)


def unpack_mask(blob: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`pack_mask`."""
    n = int(np.prod(shape))
    bits = np.unpackbits(np.frombuffer(zlib.decompress(blob), np.uint8), count=n)
    return bits.reshape(shape)


@attrs.frozen(eq=False)
class Delta:
    """The values of a region ``[lo, lo + shape)`` before and after one action."""

    lo: tuple[int, int, int]
    shape: tuple[int, int, int]
    old: bytes
    new: bytes

    @property
    def slices(self) -> tuple[slice, ...]:
        return tuple(slice(a, a + s) for a, s in zip(self.lo, self.shape))

    @property
    def nbytes(self) -> int:
        return len(self.old) + len(self.new)

    @classmethod
    def between(cls, before: np.ndarray, after: np.ndarray, lo) -> Delta | None:
        """The delta of a region whose values go from ``before`` to ``after`` (same shape), cropped
        to the voxels that actually change; None when nothing changes."""
        changed = before != after
        if not changed.any():
            return None
        nz = np.argwhere(changed)
        a, b = nz.min(0), nz.max(0) + 1
        sl = tuple(slice(i, j) for i, j in zip(a, b))
        return cls(
            tuple(int(x + o) for x, o in zip(a, lo)),  # type: ignore[arg-type]
            tuple(int(j - i) for i, j in zip(a, b)),  # type: ignore[arg-type]
            pack_mask(before[sl]),
            pack_mask(after[sl]),
        )

    def values(self, which: str) -> np.ndarray:
        return unpack_mask(self.old if which == "old" else self.new, self.shape)


@attrs.define(eq=False)
class Entry:
    """One undoable action on one object.

    ``action`` is ``"prompt"`` (a prompt was added; it may or may not have run a prediction),
    ``"predict"`` (a prediction over pending prompts) or ``"reset"``.
    """

    action: str
    prompt: Prompt | None = None
    delta: Delta | None = None
    #: whether the model ran for this action (False for prompts added with ``predict=False``)
    predicted: bool = False


def active_prompts(entries: Iterable[Entry]) -> list[Prompt]:
    """The prompts that shape the object after ``entries``: everything since the last reset;
    an initial mask restarts the list."""
    active: list[Prompt] = []
    for entry in entries:
        if entry.action == "reset":
            active = []
        elif entry.action == "prompt" and entry.prompt is not None:
            if isinstance(entry.prompt, InitialMask):
                active = [entry.prompt]
            else:
                active.append(entry.prompt)
    return active
