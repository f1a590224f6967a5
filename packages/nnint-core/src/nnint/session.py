"""Sessions: one image, any number of objects, each with its own mask and full history.

The session is backend-agnostic: it validates prompts, keeps each object's history (unlimited
undo/redo stored as compressed deltas), applies the engine's :class:`~nnint.engine.MaskUpdate` to
the object's mask, reports every change as a :class:`MaskChange` (bbox + new values + version),
fires plugin hooks, and saves/loads/autosaves everything to one file.

Every public method either succeeds completely or raises a :class:`~nnint.errors.NnintError` and
leaves the session exactly as it was: all checks and the prediction run before any state changes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import attrs
import numpy as np

from nnint.engine import Engine, MaskUpdate, clip_update
from nnint.errors import (
    NnintError,
    ObjectLockedError,
    SessionError,
    UnknownObjectError,
    UnsupportedPromptError,
)
from nnint.history import Delta, Entry, active_prompts
from nnint.image import Image, validate_mask
from nnint.prompts import InitialMask, Prompt, check_in_image, prompt_kind

Overlap = Literal["keep", "overwrite", "error"]


@attrs.frozen(eq=False)
class MaskChange:
    """What changed in one object's mask: new ``values`` (uint8) for ``[lo, hi)``, and the
    object's mask ``version`` after the change (``base_version`` before it)."""

    object_id: int
    lo: tuple[int, int, int]
    values: np.ndarray
    version: int
    base_version: int

    @property
    def hi(self) -> tuple[int, int, int]:
        return tuple(a + s for a, s in zip(self.lo, self.values.shape))  # type: ignore[return-value]

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(a, b) for a, b in zip(self.lo, self.hi))  # type: ignore[return-value]


class SegObject:
    """One object being segmented. Read its state; change it through the :class:`Session`."""

    def __init__(self, object_id: int, name: str, label: int, shape: tuple[int, int, int]) -> None:
        self.id = object_id
        self.name = name
        self.label = label
        self.locked = False
        self.version = 0
        self._mask = np.zeros(shape, np.uint8)
        self._entries: list[Entry] = []
        self._cursor = 0  # entries[:cursor] are applied; entries[cursor:] can be redone

    @property
    def mask(self) -> np.ndarray:
        """The current mask (uint8 0/1, z, y, x); a read-only view."""
        view = self._mask.view()
        view.setflags(write=False)
        return view

    @property
    def prompts(self) -> list[Prompt]:
        """Active prompts (since the last reset or initial mask), oldest first."""
        return active_prompts(self._entries[: self._cursor])

    @property
    def applied(self) -> list[Entry]:
        """The history entries currently applied, oldest first."""
        return list(self._entries[: self._cursor])

    @property
    def can_undo(self) -> bool:
        return self._cursor > 0

    @property
    def can_redo(self) -> bool:
        return self._cursor < len(self._entries)

    @property
    def history_bytes(self) -> int:
        """Memory held by this object's undo/redo deltas."""
        return sum(e.delta.nbytes for e in self._entries if e.delta is not None)

    @property
    def has_pending(self) -> bool:
        """True when the newest applied prompt was added without a prediction."""
        for entry in reversed(self._entries[: self._cursor]):
            if entry.action == "predict" or entry.action == "reset":
                return False
            if entry.action == "prompt":
                return not entry.predicted and not isinstance(entry.prompt, InitialMask)
        return False

    def __repr__(self) -> str:
        state = "locked" if self.locked else "open"
        return f"SegObject(id={self.id}, name={self.name!r}, label={self.label}, {state}, prompts={len(self.prompts)})"


class Session:
    """An interactive segmentation session on one image.

    >>> session = Session(image, engine)          # doctest: +SKIP
    >>> change = session.add(Point((10, 20, 30)))  # doctest: +SKIP
    >>> session.undo(); session.redo()             # doctest: +SKIP

    ``respect_locked``: predictions never claim voxels that belong to a confirmed (locked) object.
    ``autosave``: a file path; the session is saved there atomically after every change.
    """

    def __init__(
        self,
        image: Image,
        engine: Engine,
        *,
        respect_locked: bool = True,
        autosave: str | Path | None = None,
        plugin_manager=None,
        engine_info: dict | None = None,
    ) -> None:
        from nnint.plugins import get_plugin_manager

        self.image = image
        self.engine = engine
        self.respect_locked = respect_locked
        self.autosave_path = Path(autosave) if autosave is not None else None
        self.engine_info = dict(engine_info or {})
        self._pm = plugin_manager if plugin_manager is not None else get_plugin_manager()
        self._objects: dict[int, SegObject] = {}
        self._active: int | None = None
        self._next_id = 1
        self._lock = threading.RLock()
        self._fingerprint: str | None = None
        engine.set_image(image)

    # --- objects ----------------------------------------------------------------------------

    @property
    def objects(self) -> list[SegObject]:
        return list(self._objects.values())

    @property
    def active(self) -> SegObject:
        """The object prompts go to; created on first use."""
        with self._lock:
            if self._active is None:
                self.new_object()
            return self._objects[self._active]  # type: ignore[index]

    def get(self, object_id: int | None = None) -> SegObject:
        if object_id is None:
            return self.active
        try:
            return self._objects[object_id]
        except KeyError:
            raise UnknownObjectError(
                f"no object with id {object_id}; existing ids: {sorted(self._objects)}"
            ) from None

    def new_object(self, name: str | None = None, label: int | None = None) -> SegObject:
        """Create an object and make it the active one ("next object")."""
        with self._lock:
            used = {o.label for o in self._objects.values()}
            if label is None:
                label = next(v for v in range(1, len(used) + 2) if v not in used)
            elif not isinstance(label, (int, np.integer)) or label < 1:
                raise SessionError(f"label must be a positive integer, got {label!r}")
            elif label in used:
                raise SessionError(f"label {label} is already used by another object; pick another value")
            obj = SegObject(self._next_id, name or f"object {label}", int(label), self.image.shape)
            self._next_id += 1
            self._objects[obj.id] = obj
            self._active = obj.id
            self._pm.hook.nnint_object_created(session=self, obj=obj)
            self._autosave()
            return obj

    def select(self, object_id: int) -> SegObject:
        """Make an existing object the active one (its prompts and history are intact)."""
        with self._lock:
            obj = self.get(object_id)
            self._active = obj.id
            return obj

    def rename(self, object_id: int, name: str) -> None:
        with self._lock:
            self.get(object_id).name = str(name)
            self._autosave()

    def confirm(self, object_id: int | None = None, locked: bool = True) -> SegObject:
        """Confirm (lock) an object: it can no longer be prompted, and predictions on other
        objects never take its voxels (with ``respect_locked``). ``locked=False`` unlocks."""
        with self._lock:
            obj = self.get(object_id)
            obj.locked = bool(locked)
            if locked:
                self._pm.hook.nnint_object_confirmed(session=self, obj=obj)
            self._autosave()
            return obj

    def remove(self, object_id: int) -> None:
        """Delete an object with its mask and history."""
        with self._lock:
            obj = self.get(object_id)
            del self._objects[obj.id]
            if self._active == obj.id:
                self._active = max(self._objects) if self._objects else None
            self._pm.hook.nnint_object_removed(session=self, obj=obj)
            self._autosave()

    def object_from_mask(
        self, mask: np.ndarray, *, name: str | None = None, label: int | None = None, predict: bool = False
    ) -> SegObject:
        """Create an object initialised from an existing full-size mask (optionally refined by the model)."""
        with self._lock:
            mask = validate_mask(mask, self.image.shape, "initial mask")
            prompt = InitialMask.from_full_mask(mask, predict=predict)
            self._check_prompt(prompt)
            previous = self._active
            obj = self.new_object(name, label)
            try:
                self.add(prompt, object_id=obj.id)
            except BaseException:
                del self._objects[obj.id]
                self._next_id -= 1
                self._active = previous
                raise
            return obj

    # --- interaction --------------------------------------------------------------------------

    def add(self, prompt: Prompt, *, object_id: int | None = None, predict: bool = True) -> MaskChange | None:
        """Add a prompt to an object (default: the active one) and, with ``predict``, update its mask.

        Returns the mask change, or None when the mask did not change. With ``predict=False`` the
        prompt is recorded and :meth:`predict` runs later (several prompts, one forward pass).
        """
        with self._lock:
            obj = self.get(object_id)
            self._check_writable(obj)
            self._check_prompt(prompt)
            before = obj._mask
            if isinstance(prompt, InitialMask):
                base = np.zeros_like(before)
                base[tuple(slice(a, b) for a, b in zip(prompt.lo, prompt.hi))] = prompt.mask
                update = MaskUpdate((0, 0, 0), base)
                if prompt.predict:
                    refined = self._run_engine([prompt], base, obj)
                    if refined is not None:
                        base = base.copy()
                        base[refined.slices] = refined.values
                        update = MaskUpdate((0, 0, 0), base)
            elif predict:
                update = self._run_engine([*obj.prompts, prompt], before, obj)
            else:
                update = None
            ran = prompt.predict if isinstance(prompt, InitialMask) else predict
            return self._commit(obj, Entry("prompt", prompt, predicted=ran), update, event_prompt=prompt)

    def predict(self, object_id: int | None = None) -> MaskChange | None:
        """Run the model on an object's pending prompts (those added with ``predict=False``)."""
        with self._lock:
            obj = self.get(object_id)
            self._check_writable(obj)
            prompts = obj.prompts
            if not prompts:
                raise SessionError("the object has no prompts to predict from; add a prompt first")
            update = self._run_engine(prompts, obj._mask, obj)
            return self._commit(obj, Entry("predict", predicted=True), update)

    def reset(self, object_id: int | None = None) -> MaskChange | None:
        """Clear an object's mask and prompts (undoable)."""
        with self._lock:
            obj = self.get(object_id)
            self._check_writable(obj)
            update = MaskUpdate((0, 0, 0), np.zeros_like(obj._mask))
            return self._commit(obj, Entry("reset"), update)

    def undo(self, object_id: int | None = None) -> MaskChange | None:
        """Undo the newest applied action of an object. Returns the mask change (None if the mask
        did not change or there was nothing to undo; see ``SegObject.can_undo``)."""
        with self._lock:
            obj = self.get(object_id)
            self._check_writable(obj)
            if not obj.can_undo:
                return None
            entry = obj._entries[obj._cursor - 1]
            change = self._apply_delta(obj, entry.delta, "old")
            obj._cursor -= 1
            if entry.prompt is not None:
                self._pm.hook.nnint_prompt_undone(session=self, obj=obj, prompt=entry.prompt)
            self._notify(change)
            return change

    def redo(self, object_id: int | None = None) -> MaskChange | None:
        """Re-apply the newest undone action of an object."""
        with self._lock:
            obj = self.get(object_id)
            self._check_writable(obj)
            if not obj.can_redo:
                return None
            entry = obj._entries[obj._cursor]
            change = self._apply_delta(obj, entry.delta, "new")
            obj._cursor += 1
            if entry.prompt is not None:
                self._pm.hook.nnint_prompt_added(session=self, obj=obj, prompt=entry.prompt)
            self._notify(change)
            return change

    # --- output -----------------------------------------------------------------------------

    def compose(self, overlap: Overlap = "keep") -> np.ndarray:
        """All objects as one label map (uint8, or uint16 above 255).

        Where objects overlap: ``"keep"`` gives the voxel to the earlier object, ``"overwrite"`` to
        the later one, ``"error"`` raises. Confirmed (locked) objects always win over open ones.
        """
        if overlap not in ("keep", "overwrite", "error"):
            raise SessionError(f"unknown overlap policy {overlap!r}; use 'keep', 'overwrite' or 'error'")
        with self._lock:
            objs = sorted(self._objects.values(), key=lambda o: o.id)
            top = max((o.label for o in objs), default=0)
            out = np.zeros(self.image.shape, np.uint8 if top < 256 else np.uint16)
            if overlap == "error":
                count = np.zeros(self.image.shape, np.uint16)
                for o in objs:
                    count += o._mask
                if (count > 1).any():
                    clash = np.argwhere(count > 1)[0].tolist()
                    raise SessionError(f"objects overlap (e.g. at z, y, x = {clash}); pick 'keep' or 'overwrite'")
            # paint lowest priority first: open before locked, then by creation order
            order = sorted(objs, key=lambda o: (o.locked, o.id if overlap != "keep" else -o.id))
            for o in order:
                out[o._mask.astype(bool)] = o.label
            return out

    def __iter__(self) -> Iterator[SegObject]:
        return iter(self.objects)

    # --- persistence ------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Save prompts, masks, histories, object metadata and the image reference to one file."""
        from nnint.persistence import save_session

        with self._lock:
            save_session(self, Path(path))

    @classmethod
    def load(cls, path: str | Path, engine: Engine, image: Image | None = None, **kwargs) -> Session:
        """Load a saved session. The image is re-read from its saved path unless given."""
        from nnint.persistence import load_session

        return load_session(cls, Path(path), engine, image, **kwargs)

    # --- internals ----------------------------------------------------------------------------

    def _check_writable(self, obj: SegObject) -> None:
        if obj.locked:
            raise ObjectLockedError(
                f"object {obj.id} ({obj.name!r}) is confirmed; unlock it with session.confirm({obj.id}, locked=False)"
            )

    def _check_prompt(self, prompt: Prompt) -> None:
        from nnint.prompts import PROMPT_TYPES

        if not isinstance(prompt, tuple(PROMPT_TYPES.values())):
            raise UnsupportedPromptError(
                f"{type(prompt).__name__} is not a prompt; use Point, Box, Scribble, Lasso or InitialMask"
            )
        kind = prompt_kind(prompt)
        supported = self.engine.capabilities.prompt_kinds
        if kind not in supported:
            hint = " (draw a 2D box on one slice instead)" if kind == "box3d" else ""
            raise UnsupportedPromptError(
                f"this model does not support {kind} prompts{hint}; it supports {sorted(supported)}"
            )
        check_in_image(prompt, self.image.shape)

    def _run_engine(self, prompts: list[Prompt], mask: np.ndarray, obj: SegObject) -> MaskUpdate | None:
        update = self.engine.predict(prompts, mask)
        if update is None:
            return None
        update = clip_update(update, self.image.shape)
        if update is None:
            return None
        values = np.asarray(update.values)
        if values.shape != tuple(b - a for a, b in zip(update.lo, update.hi)) or values.dtype.kind not in "biu":
            raise NnintError(f"backend returned a malformed update ({values.dtype}, {values.shape}); this is a backend bug")
        values = (values != 0).astype(np.uint8)
        if self.respect_locked:
            for other in self._objects.values():
                if other.locked and other.id != obj.id:
                    values &= 1 - other._mask[update.slices]
        return MaskUpdate(update.lo, values)

    def _commit(self, obj: SegObject, entry: Entry, update: MaskUpdate | None, event_prompt=None) -> MaskChange | None:
        if update is not None:
            entry.delta = Delta.between(obj._mask[update.slices], update.values, update.lo)
        # from here on nothing can fail: mutate
        del obj._entries[obj._cursor :]
        obj._entries.append(entry)
        obj._cursor += 1
        change = self._apply_delta(obj, entry.delta, "new")
        if event_prompt is not None:
            self._pm.hook.nnint_prompt_added(session=self, obj=obj, prompt=event_prompt)
        self._notify(change)
        return change

    def _apply_delta(self, obj: SegObject, delta: Delta | None, which: str) -> MaskChange | None:
        if delta is None:
            return None
        values = delta.values(which)
        obj._mask[delta.slices] = values
        obj.version += 1
        return MaskChange(obj.id, delta.lo, values, obj.version, obj.version - 1)

    def _notify(self, change: MaskChange | None) -> None:
        if change is not None:
            self._pm.hook.nnint_mask_changed(session=self, change=change)
        self._autosave()

    def _autosave(self) -> None:
        if self.autosave_path is not None:
            self.save(self.autosave_path)
