"""Typed prompts: what a person clicks, drags, paints or draws.

All prompts are frozen, validated ``attrs`` classes in **index coordinates, array order (z, y, x)**.

* Boxes and crop placements are **half-open** ``[lo, hi)``.
* **Rounding rule** for continuous coordinates: ``floor(x + 0.5)`` (round half up), the rule MITK
  uses (``RoundHalfIntegerUp``). It differs from Python's ``round`` (half to even) only at exact
  ``.5`` values.
* Every prompt except :class:`InitialMask` is positive (include) or negative (exclude).
* Scribbles and lassos are *sparse*: a small uint8 crop plus the corner ``lo`` where it sits
  (one axis of extent 1 for a slice). :meth:`Scribble.from_polyline` and
  :meth:`Lasso.from_polygon` rasterise drawn lines and polygons on an axis-aligned plane.
* ``from_world`` constructors take world points (x, y, z) in mm through a
  :class:`~nnint.image.Geometry`, in the LPS or RAS frame.

Validation against a particular image (bounds) happens in :func:`check_in_image`, which the
session calls before it changes anything.
"""

from __future__ import annotations

from typing import ClassVar, Union

import attrs
import numpy as np

from nnint.errors import EmptyPromptError, InvalidPromptError, PromptOutOfBoundsError
from nnint.image import Frame, Geometry

Index3 = tuple[int, int, int]


def round_index(values) -> np.ndarray:
    """The one rounding rule of nnint: ``floor(x + 0.5)``, as int64."""
    arr = np.asarray(values, dtype=float)
    if not np.all(np.isfinite(arr)):
        raise InvalidPromptError(f"coordinates must be finite numbers, got {values!r}")
    return np.floor(arr + 0.5).astype(np.int64)


def _zyx_float(value) -> tuple[float, float, float]:
    arr = np.asarray(value, dtype=float).reshape(-1)
    if arr.shape != (3,):
        raise InvalidPromptError(f"expected 3 coordinates (z, y, x), got {value!r}")
    if not np.all(np.isfinite(arr)):
        raise InvalidPromptError(f"coordinates must be finite, got {value!r}")
    return (float(arr[0]), float(arr[1]), float(arr[2]))


def _zyx_int(value) -> Index3:
    arr = np.asarray(value).reshape(-1)
    if arr.shape != (3,):
        raise InvalidPromptError(f"expected 3 integer indices (z, y, x), got {value!r}")
    out = round_index(arr)
    return (int(out[0]), int(out[1]), int(out[2]))


def _crop(value) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim != 3:
        raise InvalidPromptError(
            f"a mask crop must be 3D (z, y, x) with extent 1 on the slice axis, got shape {arr.shape}"
        )
    if arr.dtype.kind not in "biuf" or (arr.dtype.kind == "f" and not np.isfinite(arr).all()):
        raise InvalidPromptError(f"a mask crop must be boolean or numeric and finite, got {arr.dtype}")
    out = np.ascontiguousarray(arr != 0, dtype=np.uint8)
    out.setflags(write=False)
    return out


@attrs.frozen
class Point:
    """A click at ``zyx`` (continuous index coordinates; rounded with :func:`round_index`)."""

    kind: ClassVar[str] = "point"
    zyx: tuple[float, float, float] = attrs.field(converter=_zyx_float)
    positive: bool = attrs.field(default=True, converter=bool)

    @property
    def index(self) -> Index3:
        return _zyx_int(self.zyx)

    @property
    def bbox(self) -> tuple[Index3, Index3]:
        lo = self.index
        return lo, (lo[0] + 1, lo[1] + 1, lo[2] + 1)

    @classmethod
    def from_world(cls, xyz, geometry: Geometry, positive: bool = True, frame: Frame = "LPS") -> Point:
        return cls(geometry.world_to_index(xyz, frame), positive)


@attrs.frozen
class Box:
    """An axis-aligned box ``[lo, hi)``. It is 2D when one axis has extent 1, else 3D."""

    kind: ClassVar[str] = "box"
    lo: Index3 = attrs.field(converter=_zyx_int)
    hi: Index3 = attrs.field(converter=_zyx_int)
    positive: bool = attrs.field(default=True, converter=bool)

    def __attrs_post_init__(self) -> None:
        for axis, (a, b) in enumerate(zip(self.lo, self.hi)):
            if b <= a:
                raise EmptyPromptError(
                    f"box has zero size along axis {axis} (lo={a}, hi={b}); boxes are half-open [lo, hi): "
                    "a box on one slice s has lo=s, hi=s+1 on that axis"
                )

    @property
    def is_2d(self) -> bool:
        return min(self.extent) == 1

    @property
    def slice_axis(self) -> int | None:
        """The axis of extent 1 for a 2D box (the first such axis), else None."""
        return self.extent.index(1) if self.is_2d else None

    @property
    def extent(self) -> Index3:
        return tuple(b - a for a, b in zip(self.lo, self.hi))  # type: ignore[return-value]

    @property
    def bbox(self) -> tuple[Index3, Index3]:
        return self.lo, self.hi

    @classmethod
    def from_world(
        cls, corner_a, corner_b, geometry: Geometry, positive: bool = True, frame: Frame = "LPS"
    ) -> Box:
        """A box spanning two world corners (x, y, z mm) inclusively: ``lo = round(min)``, ``hi = round(max) + 1``.

        Two corners on the same slice therefore give a 2D box of extent 1 on that axis.
        """
        a = geometry.world_to_index(corner_a, frame)
        b = geometry.world_to_index(corner_b, frame)
        lo = round_index(np.minimum(a, b))
        hi = round_index(np.maximum(a, b)) + 1
        return cls(lo, hi, positive)


@attrs.frozen(eq=False)
class _CropPrompt:
    """A binary crop ``mask`` whose voxel (0, 0, 0) sits at index ``lo``."""

    kind: ClassVar[str] = "crop"
    mask: np.ndarray = attrs.field(converter=_crop, repr=lambda m: f"<{m.shape} crop, {int(m.sum())} set>")
    lo: Index3 = attrs.field(default=(0, 0, 0), converter=_zyx_int)
    positive: bool = attrs.field(default=True, converter=bool)

    def __attrs_post_init__(self) -> None:
        if not self.mask.any():
            raise EmptyPromptError(f"{self.kind} is empty: its mask has no voxel set; draw at least one voxel")

    @property
    def hi(self) -> Index3:
        return tuple(a + s for a, s in zip(self.lo, self.mask.shape))  # type: ignore[return-value]

    @property
    def bbox(self) -> tuple[Index3, Index3]:
        return self.lo, self.hi

    def __eq__(self, other: object) -> bool:
        return (
            type(self) is type(other)
            and self.lo == other.lo  # type: ignore[attr-defined]
            and self.positive == other.positive  # type: ignore[attr-defined]
            and np.array_equal(self.mask, other.mask)  # type: ignore[attr-defined]
        )

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def from_full_mask(cls, mask: np.ndarray, positive: bool = True):
        """Build the sparse form from a full-volume mask (the crop is tight around its voxels)."""
        mask = np.asarray(mask)
        nz = np.argwhere(mask)
        if nz.size == 0:
            raise EmptyPromptError(f"{cls.kind} is empty: the mask has no voxel set")
        lo, hi = nz.min(0), nz.max(0) + 1
        return cls(mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]], tuple(lo), positive)


@attrs.frozen(eq=False)
class Scribble(_CropPrompt):
    """A painted stroke (already thick) as a crop; see :meth:`from_polyline` for drawn lines."""

    kind: ClassVar[str] = "scribble"

    @classmethod
    def from_polyline(
        cls, points_zyx, thickness: float = 2.0, positive: bool = True
    ) -> Scribble:
        """Rasterise a polyline on an axis-aligned plane: every voxel whose centre lies within
        ``thickness / 2`` of the line (and at least the voxels the line passes through)."""
        if not np.isfinite(thickness) or thickness <= 0:
            raise InvalidPromptError(f"scribble thickness must be a positive number of voxels, got {thickness}")
        axis, index, pts2d = _plane_points(points_zyx, min_points=1, what="scribble")
        radius = max(thickness / 2.0, 0.5)
        lo2 = np.floor(pts2d.min(0) - radius).astype(int)
        hi2 = np.ceil(pts2d.max(0) + radius).astype(int) + 1
        grid = np.stack(np.meshgrid(*(np.arange(a, b) for a, b in zip(lo2, hi2)), indexing="ij"), -1)
        dist = _distance_to_polyline(grid.reshape(-1, 2).astype(float), pts2d).reshape(grid.shape[:2])
        mask2d = dist <= radius
        return cls(*_lift(mask2d, lo2, axis, index), positive)

    @classmethod
    def from_world_polyline(
        cls, points_xyz, geometry: Geometry, thickness: float = 2.0, positive: bool = True, frame: Frame = "LPS"
    ) -> Scribble:
        return cls.from_polyline(geometry.world_to_index(points_xyz, frame), thickness, positive)


@attrs.frozen(eq=False)
class Lasso(_CropPrompt):
    """A filled closed contour on one slice, as a crop; see :meth:`from_polygon`."""

    kind: ClassVar[str] = "lasso"

    @classmethod
    def from_polygon(cls, vertices_zyx, positive: bool = True) -> Lasso:
        """Fill a closed polygon on an axis-aligned plane (even-odd rule on voxel centres; the
        voxels under the outline are included so thin lassos are never empty)."""
        axis, index, pts2d = _plane_points(vertices_zyx, min_points=3, what="lasso")
        lo2 = np.floor(pts2d.min(0)).astype(int)
        hi2 = np.ceil(pts2d.max(0)).astype(int) + 1
        grid = np.stack(np.meshgrid(*(np.arange(a, b) for a, b in zip(lo2, hi2)), indexing="ij"), -1)
        flat = grid.reshape(-1, 2).astype(float)
        inside = _inside_polygon(flat, pts2d)
        closed = np.vstack([pts2d, pts2d[:1]])
        on_outline = _distance_to_polyline(flat, closed) <= 0.5
        mask2d = (inside | on_outline).reshape(grid.shape[:2])
        return cls(*_lift(mask2d, lo2, axis, index), positive)

    @classmethod
    def from_world_polygon(
        cls, vertices_xyz, geometry: Geometry, positive: bool = True, frame: Frame = "LPS"
    ) -> Lasso:
        return cls.from_polygon(geometry.world_to_index(vertices_xyz, frame), positive)


@attrs.frozen(eq=False)
class InitialMask(_CropPrompt):
    """Start (or restart) an object from an existing mask. It has no polarity.

    It replaces the object's mask and clears its earlier prompts; with ``predict=True`` the model
    then refines it. ``lo`` places a crop; a full-volume mask has ``lo = (0, 0, 0)``.
    """

    kind: ClassVar[str] = "initial_mask"
    positive: bool = attrs.field(default=True, init=False)
    predict: bool = attrs.field(default=False, converter=bool, kw_only=True)

    def __eq__(self, other: object) -> bool:
        return super().__eq__(other) and self.predict == other.predict  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def from_full_mask(cls, mask: np.ndarray, predict: bool = False) -> InitialMask:  # type: ignore[override]
        """The sparse form of a full-volume mask; an all-zero mask is an error."""
        mask = np.asarray(mask)
        nz = np.argwhere(mask)
        if nz.size == 0:
            raise EmptyPromptError("initial mask is empty: it has no voxel set")
        lo, hi = nz.min(0), nz.max(0) + 1
        return cls(mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]], tuple(lo), predict=predict)


Prompt = Union[Point, Box, Scribble, Lasso, InitialMask]
PROMPT_TYPES: dict[str, type] = {t.kind: t for t in (Point, Box, Scribble, Lasso, InitialMask)}


def prompt_kind(prompt: Prompt) -> str:
    """The capability key a model must support for this prompt: point, box2d, box3d, scribble, lasso, initial_mask."""
    if isinstance(prompt, Box):
        return "box2d" if prompt.is_2d else "box3d"
    return prompt.kind


def check_in_image(prompt: Prompt, shape: tuple[int, int, int]) -> None:
    """Raise PromptOutOfBoundsError unless ``prompt`` lies inside an image of ``shape``.

    Points must lie inside. Boxes and crops must lie inside too: clip them first with
    :func:`clip_to_image` if a viewer lets people drag past the border. An initial mask must
    fit the image.
    """
    if isinstance(prompt, Point):
        idx = prompt.index
        if any(not 0 <= i < s for i, s in zip(idx, shape)):
            raise PromptOutOfBoundsError(
                f"point {idx} (z, y, x) lies outside the image of shape {tuple(shape)}; "
                "coordinates are 0-based indices in array order (z, y, x)"
            )
        return
    lo, hi = prompt.bbox
    if any(a < 0 or b > s for a, b, s in zip(lo, hi, shape)):
        raise PromptOutOfBoundsError(
            f"{prompt.kind} spans [{lo}, {hi}) (z, y, x, half-open) but the image has shape {tuple(shape)}; "
            "clip it to the image with nnint.prompts.clip_to_image"
        )


def clip_to_image(prompt: Prompt, shape: tuple[int, int, int]) -> Prompt:
    """Clip a box or crop prompt to the image; raise PromptOutOfBoundsError if nothing is left."""
    if isinstance(prompt, Point):
        check_in_image(prompt, shape)
        return prompt
    lo, hi = np.array(prompt.bbox[0]), np.array(prompt.bbox[1])
    clo, chi = np.maximum(lo, 0), np.minimum(hi, shape)
    if np.any(chi <= clo):
        raise PromptOutOfBoundsError(f"{prompt.kind} [{tuple(lo)}, {tuple(hi)}) lies entirely outside the image")
    if isinstance(prompt, Box):
        return Box(clo, chi, prompt.positive)
    sl = tuple(slice(a - o, b - o) for a, b, o in zip(clo, chi, lo))
    sub = prompt.mask[sl]
    if isinstance(prompt, InitialMask):
        return InitialMask(sub, clo, predict=prompt.predict)
    return type(prompt)(sub, clo, prompt.positive)


# --- serialisation (sessions, prompt files, the bridge) --------------------------------------


def prompt_to_dict(prompt: Prompt) -> dict:
    """A JSON-able dict; crop masks are returned as nested lists of their set voxel offsets."""
    if isinstance(prompt, Point):
        return {"kind": "point", "zyx": list(prompt.zyx), "positive": prompt.positive}
    if isinstance(prompt, Box):
        return {"kind": "box", "lo": list(prompt.lo), "hi": list(prompt.hi), "positive": prompt.positive}
    out = {
        "kind": prompt.kind,
        "lo": list(prompt.lo),
        "shape": list(prompt.mask.shape),
        "voxels": np.argwhere(prompt.mask).tolist(),
    }
    if isinstance(prompt, InitialMask):
        out["predict"] = prompt.predict
    else:
        out["positive"] = prompt.positive
    return out


def prompt_from_dict(data: dict) -> Prompt:
    """Inverse of :func:`prompt_to_dict`. Also accepts the hand-written forms of prompt files:
    ``{"kind": "point", "zyx": [...]}``, ``{"kind": "box", "lo": [...], "hi": [...]}``,
    ``{"kind": "scribble", "polyline": [[z,y,x], ...], "thickness": 2}``,
    ``{"kind": "lasso", "polygon": [[z,y,x], ...]}``; ``"positive": false`` for negatives."""
    if not isinstance(data, dict) or "kind" not in data:
        raise InvalidPromptError(f"a prompt must be an object with a 'kind' key, got {data!r}")
    kind = data["kind"]
    positive = bool(data.get("positive", True))
    try:
        if kind == "point":
            return Point(data["zyx"], positive)
        if kind == "box":
            return Box(data["lo"], data["hi"], positive)
        if kind == "scribble" and "polyline" in data:
            return Scribble.from_polyline(data["polyline"], float(data.get("thickness", 2.0)), positive)
        if kind == "lasso" and "polygon" in data:
            return Lasso.from_polygon(data["polygon"], positive)
        if kind in ("scribble", "lasso", "initial_mask"):
            mask = np.zeros(tuple(int(s) for s in data["shape"]), np.uint8)
            vox = np.asarray(data["voxels"], dtype=np.int64).reshape(-1, 3)
            if vox.size and (np.any(vox < 0) or np.any(vox >= np.array(mask.shape))):
                raise InvalidPromptError(f"{kind} voxel offsets lie outside its crop of shape {mask.shape}")
            mask[tuple(vox.T)] = 1
            if kind == "initial_mask":
                return InitialMask(mask, data["lo"], predict=bool(data.get("predict", False)))
            return PROMPT_TYPES[kind](mask, data["lo"], positive)
    except KeyError as exc:
        raise InvalidPromptError(f"{kind} prompt is missing the key {exc.args[0]!r}: {data!r}") from None
    except (TypeError, ValueError) as exc:
        if isinstance(exc, InvalidPromptError):
            raise
        raise InvalidPromptError(f"malformed {kind} prompt {data!r}: {exc}") from None
    raise InvalidPromptError(
        f"unknown prompt kind {kind!r}; use one of point, box, scribble, lasso, initial_mask"
    )


# --- small geometry helpers for rasterisation --------------------------------------------------


def _plane_points(points_zyx, *, min_points: int, what: str) -> tuple[int, int, np.ndarray]:
    """Find the axis-aligned plane of ``points`` and return (axis, slice index, in-plane coordinates)."""
    pts = np.asarray(points_zyx, dtype=float)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise InvalidPromptError(f"{what} points must have shape (N, 3) in (z, y, x), got {pts.shape}")
    if len(pts) < min_points:
        raise EmptyPromptError(f"a {what} needs at least {min_points} point(s), got {len(pts)}")
    if not np.all(np.isfinite(pts)):
        raise InvalidPromptError(f"{what} points must be finite")
    spread = np.ptp(pts, axis=0)
    flat_axes = [a for a in range(3) if spread[a] < 1e-3]
    if not flat_axes:
        raise InvalidPromptError(
            f"{what} points do not lie on one axis-aligned slice (spread per axis {spread.round(3).tolist()}); "
            "draw on an axial, coronal or sagittal slice, or pass a rasterised mask crop"
        )
    axis = flat_axes[0]
    index = int(round_index(pts[0, axis]))
    in_plane = [a for a in range(3) if a != axis]
    return axis, index, pts[:, in_plane]


def _lift(mask2d: np.ndarray, lo2: np.ndarray, axis: int, index: int) -> tuple[np.ndarray, Index3]:
    """Insert a slice axis of extent 1 into a 2D mask placed at ``lo2`` on plane ``axis = index``."""
    if not mask2d.any():
        raise EmptyPromptError("the drawn shape covers no voxel centre")
    crop = np.expand_dims(mask2d, axis)
    lo = list(int(v) for v in lo2)
    lo.insert(axis, index)
    return crop, tuple(lo)  # type: ignore[return-value]


def _distance_to_polyline(pixels: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Distance of each (n, 2) pixel centre to a polyline of (m, 2) vertices (m = 1 is a dot)."""
    if len(pts) == 1:
        return np.linalg.norm(pixels - pts[0], axis=1)
    best = np.full(len(pixels), np.inf)
    for a, b in zip(pts[:-1], pts[1:]):
        ab = b - a
        denom = float(ab @ ab)
        t = np.zeros(len(pixels)) if denom == 0 else np.clip((pixels - a) @ ab / denom, 0.0, 1.0)
        best = np.minimum(best, np.linalg.norm(pixels - (a + t[:, None] * ab), axis=1))
    return best


def _inside_polygon(pixels: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd rule: is each (n, 2) point inside the closed polygon (m, 2)?"""
    inside = np.zeros(len(pixels), bool)
    u, v = pixels[:, 0], pixels[:, 1]
    for (u1, v1), (u2, v2) in zip(poly, np.roll(poly, -1, axis=0)):
        crosses = (v1 > v) != (v2 > v)
        with np.errstate(divide="ignore", invalid="ignore"):
            u_at = u1 + (v - v1) * (u2 - u1) / (v2 - v1)
        inside ^= crosses & (u < u_at)
    return inside
