"""Saving and loading whole sessions to one file (a zip archive).

Layout of a ``.nnint`` file::

    session.json            format version, image reference + geometry + fingerprint, objects,
                            their histories (actions, prompts, delta placements), engine info
    blobs/<n>               bit-packed, zlib-compressed masks: object masks, prompt crops, deltas

Saving writes a temporary file next to the target and renames it, so a crash during autosave
never leaves a half-written session behind.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from nnint.errors import ImageIOError, NnintError, SessionFileError
from nnint.history import Delta, Entry, pack_mask, unpack_mask
from nnint.image import Image
from nnint.prompts import InitialMask, Point, Prompt, prompt_from_dict, prompt_to_dict

FORMAT = "nnint-session"
VERSION = 1


def image_fingerprint(image: Image) -> str:
    """sha256 over shape, dtype and voxel bytes: detects loading a session onto the wrong image."""
    h = hashlib.sha256(f"{image.array.shape}{image.array.dtype.str}".encode())
    h.update(np.ascontiguousarray(image.array).data)
    return h.hexdigest()


class _Blobs:
    def __init__(self) -> None:
        self.items: dict[str, bytes] = {}

    def add(self, data: bytes) -> str:
        name = f"blobs/{len(self.items)}"
        self.items[name] = data
        return name


def _prompt_record(prompt: Prompt, blobs: _Blobs) -> dict:
    if isinstance(prompt, (Point,)) or prompt.kind == "box":
        return prompt_to_dict(prompt)
    rec = {"kind": prompt.kind, "lo": list(prompt.lo), "shape": list(prompt.mask.shape), "blob": blobs.add(pack_mask(prompt.mask))}
    if isinstance(prompt, InitialMask):
        rec["predict"] = prompt.predict
    else:
        rec["positive"] = prompt.positive
    return rec


def _delta_record(delta: Delta | None, blobs: _Blobs) -> dict | None:
    if delta is None:
        return None
    return {"lo": list(delta.lo), "shape": list(delta.shape), "old": blobs.add(delta.old), "new": blobs.add(delta.new)}


def save_session(session, path: Path) -> None:
    """Write ``session`` to ``path`` atomically."""
    if session._fingerprint is None:
        session._fingerprint = image_fingerprint(session.image)
    blobs = _Blobs()
    objects = []
    for obj in session._objects.values():
        objects.append(
            {
                "id": obj.id,
                "name": obj.name,
                "label": obj.label,
                "locked": obj.locked,
                "version": obj.version,
                "cursor": obj._cursor,
                "mask": blobs.add(pack_mask(obj._mask)),
                "entries": [
                    {
                        "action": e.action,
                        "prompt": None if e.prompt is None else _prompt_record(e.prompt, blobs),
                        "delta": _delta_record(e.delta, blobs),
                        "predicted": e.predicted,
                    }
                    for e in obj._entries
                ],
            }
        )
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "image": {
            "source": session.image.source,
            "shape": list(session.image.shape),
            "dtype": session.image.array.dtype.str,
            "geometry": session.image.geometry.to_dict(),
            "sha256": session._fingerprint,
        },
        "active": session._active,
        "next_id": session._next_id,
        "respect_locked": session.respect_locked,
        "engine": session.engine_info,
        "objects": objects,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("session.json", json.dumps(doc, indent=1))
        for name, data in blobs.items.items():
            zf.writestr(name, data)
    os.replace(tmp, path)


def _load_prompt(rec: dict, zf: zipfile.ZipFile) -> Prompt:
    if "blob" not in rec:
        return prompt_from_dict(rec)
    mask = unpack_mask(zf.read(rec["blob"]), tuple(rec["shape"]))
    if rec["kind"] == "initial_mask":
        return InitialMask(mask, rec["lo"], predict=rec.get("predict", False))
    return prompt_from_dict({"kind": rec["kind"], "lo": rec["lo"], "shape": rec["shape"], "voxels": np.argwhere(mask).tolist(), "positive": rec.get("positive", True)})


def load_session(cls, path: Path, engine, image: Image | None, **kwargs):
    """Read a session written by :func:`save_session` (see ``Session.load``)."""
    from nnint.session import SegObject

    if not path.is_file():
        raise SessionFileError(f"session file {path} does not exist")
    try:
        with zipfile.ZipFile(path) as zf:
            doc = json.loads(zf.read("session.json"))
            if doc.get("format") != FORMAT:
                raise SessionFileError(f"{path} is not an nnint session file")
            if doc.get("version") != VERSION:
                raise SessionFileError(
                    f"{path} has session format version {doc.get('version')}; this nnint reads version {VERSION}. "
                    "Upgrade nnint to open it."
                )
            meta = doc["image"]
            if image is None:
                if not meta.get("source"):
                    raise SessionFileError(f"{path} has no image path (the image was made in memory); pass image=")
                try:
                    image = Image.read(meta["source"])
                except ImageIOError as exc:
                    raise SessionFileError(f"cannot re-open the session's image: {exc}; pass image=") from exc
            shape = tuple(meta["shape"])
            if image.shape != shape:
                raise SessionFileError(f"the session was made on an image of shape {shape}, not {image.shape}")
            if image_fingerprint(image) != meta["sha256"]:
                raise SessionFileError("the image's voxels differ from those the session was made on; pass the original image")
            session = cls(image, engine, respect_locked=doc.get("respect_locked", True), engine_info=doc.get("engine"), **kwargs)
            session._fingerprint = meta["sha256"]
            for rec in doc["objects"]:
                obj = SegObject(int(rec["id"]), rec["name"], int(rec["label"]), shape)
                obj.locked = bool(rec["locked"])
                obj.version = int(rec["version"])
                obj._mask[...] = unpack_mask(zf.read(rec["mask"]), shape)
                for e in rec["entries"]:
                    prompt = None if e["prompt"] is None else _load_prompt(e["prompt"], zf)
                    d = e["delta"]
                    delta = None if d is None else Delta(tuple(d["lo"]), tuple(d["shape"]), zf.read(d["old"]), zf.read(d["new"]))
                    obj._entries.append(Entry(e["action"], prompt, delta, bool(e.get("predicted", False))))
                obj._cursor = int(rec["cursor"])
                if not 0 <= obj._cursor <= len(obj._entries):
                    raise SessionFileError(f"object {obj.id} has an invalid history cursor")
                session._objects[obj.id] = obj
            session._active = doc["active"]
            session._next_id = int(doc["next_id"])
            if session._active is not None and session._active not in session._objects:
                raise SessionFileError("the active object id is not among the saved objects")
            return session
    except SessionFileError:
        raise
    except NnintError as exc:
        raise SessionFileError(f"{path} holds invalid data: {exc}") from exc
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError, json.JSONDecodeError, EOFError, zlib.error, io.UnsupportedOperation, OSError) as exc:
        raise SessionFileError(f"{path} is truncated or corrupt ({type(exc).__name__}: {exc}); restore it from a backup") from exc

