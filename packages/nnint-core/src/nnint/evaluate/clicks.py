"""Simulated-user prompts for the evaluation harness (pure numpy/scipy).

Volumes are numpy arrays in array-index order ``(z, y, x)``; 2D slices keep the order of the two
remaining axes (e.g. ``(y, x)`` for a slice along z). All boxes are half-open ``(lo, hi)``
tuples of ints. Masks may be ``bool`` or 0/1 integer/float arrays. Bad masks (wrong shape, ndim
or values) raise :class:`nnint.errors.InvalidMaskError`. Randomness comes only from the
``numpy.random.Generator`` passed in, so a fixed seed gives a fixed result.

Two families of simulators
--------------------------
**CVPR 2025 challenge protocol** (landscape.md section 3.1):

* :func:`initial_box2d` -- the challenge's initial 2D box on the middle slice, plus the slice range.
* :func:`next_click` -- one correction click at the deepest point of the largest error component.

**nnInteractive-paper style 2D prompts** (landscape.md section 3.2):

* :func:`pick_error_slice` -- an error region on one axis-aligned slice.
* :func:`simulate_scribble`, :func:`simulate_lasso`, :func:`simulate_box2d` -- prompts drawn on it.
* :func:`slice_crop` and :func:`slice_box` -- place a 2D result back in the volume.

Also: :func:`initial_point` (deepest ground-truth voxel) and :func:`initial_box3d` (tight box).

Decisions on points the protocols leave open, and deviations
------------------------------------------------------------
:func:`next_click` follows the challenge's ``CVPR25_iter_eval.py``:

* error = pred != gt; 3D components with 26-connectivity; the largest is kept;
* EDT of that component inside its bounding box, padded with zeros by
  ``max(int(0.25 * extent), 1)`` voxels per side. The padding is *not* clipped to the image, so
  outside the image counts as background, as in the original;
* 2x max-pool downsampling when the padded ROI has more than 6e7 voxels;
* click at the EDT argmax; positive iff gt is set there.

Deviations:

* *Ties between equal-size components* are broken by ``rng``. The original takes the first
  component in scan order (``np.argmax`` over the sizes).
* *Ties between EDT maxima* are broken by ``rng.choice``. The original re-seeds the legacy
  global RNG with 42 before every choice.
* *In the downsampled case* the click is restricted to voxels of the component. The original
  takes the argmax over the upsampled (repeated) EDT, which can land on a non-error voxel that
  shares a 2x2x2 block with the component.
* *If the EDT is all zero* (impossible with the padding, kept as a guard), a uniform voxel of
  the component is chosen.
* *Spacing.* The EDT is in voxel units by default (the challenge ignores spacing), or in mm
  when ``spacing`` is given.

:func:`initial_box2d` follows the challenge's ``get_boxes.py``:

* the middle slice is ``unique(occupied slices)[n // 2]``, which is always occupied;
* one shift ``s = rng.integers(0, max_shift_px + 1)`` (default ``max_shift_px = 5``, i.e. numpy
  ``randint(0, 6)``) is drawn per box and applied to all four sides, scaled per axis as
  ``int(s * dim / 256)``;
* the box is clipped to the image.

The challenge seeds the legacy global RNG with 2025; we use ``rng``, so the individual shifts
differ but their distribution is the same.

:func:`pick_error_slice`:

* false negatives and false positives are labelled *separately* (26-connectivity), so every
  component, and every prompt drawn on it, has one polarity;
* one component is chosen with probability proportional to its size (the nnInteractive rule;
  ``component="largest"`` picks the largest instead);
* the slice is the axis-aligned slice (over all three axes, or only ``axis``) where that
  component has the largest area in voxels, ties broken by ``rng``. The paper samples the slice
  at random; we take the largest cross-section, which is the most informative one;
* the 2D region is the largest 8-connected piece of the component on that slice, since one
  scribble or lasso targets one connected region.

The 2D simulators are our own, written from the paper's short description:

* *Scribble*: one of three kinds, picked uniformly:

  - a straight line between two points of the region;
  - a random geodesic piece of the region's skeleton (Zhang-Suen thinning);
  - a random arc of the contour of an eroded copy of the region.

  The 1-pixel path is thickened to a stroke of radius ``thickness / 2``. If fewer than 95 % of
  the stroke pixels fall inside the region, the stroke is clipped to the region.
* *Lasso*: closing with a small disk, hole filling, a dilation of 1-2 px (plus about 5 % of the
  region's equivalent radius), then a smooth random displacement field of at most about 2 px,
  and hole filling again.
* *Box*: the tight box with each side moved independently by up to ``jitter * extent`` pixels,
  outwards or inwards.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy import ndimage

from nnint.errors import EmptyPromptError, InvalidMaskError
from nnint.evaluate.metrics import as_binary_mask, bounding_box, check_mask_pair, check_spacing

__all__ = [
    "Click",
    "InitialBox2D",
    "ErrorSlice",
    "next_click",
    "initial_point",
    "initial_box3d",
    "initial_box2d",
    "pick_error_slice",
    "simulate_scribble",
    "simulate_lasso",
    "simulate_box2d",
    "slice_crop",
    "slice_box",
    "EDT_DOWNSAMPLE_VOXELS",
]

#: Padded-ROI size (voxels) above which the challenge computes the click EDT at 2x downsampling.
EDT_DOWNSAMPLE_VOXELS = 60_000_000

_STRUCT_26 = np.ones((3, 3, 3), dtype=bool)
_STRUCT_8 = np.ones((3, 3), dtype=bool)

Box = tuple[tuple[int, ...], tuple[int, ...]]


@dataclass(frozen=True)
class Click:
    """One simulated click: voxel index ``zyx`` and polarity (``True`` = add foreground)."""

    zyx: tuple[int, int, int]
    positive: bool


@dataclass(frozen=True)
class InitialBox2D:
    """The CVPR-style initial box: a 2D box on one slice, plus the object's slice range.

    ``lo``/``hi`` are the half-open 3D box in (z, y, x). Its extent along ``axis`` is 1; that
    slice is :attr:`index`. ``slice_range`` is the first and last occupied slice along
    ``axis``, both inclusive (the challenge's ``z_min``/``z_max``).
    """

    lo: tuple[int, int, int]
    hi: tuple[int, int, int]
    axis: int
    slice_range: tuple[int, int]

    @property
    def index(self) -> int:
        """Index of the slice the 2D box lies on (the challenge's ``z_mid``)."""
        return self.lo[self.axis]

    @property
    def box3d(self) -> Box:
        """The 2D box extruded over ``slice_range``, half-open: a 3D box of the whole object."""
        lo, hi = list(self.lo), list(self.hi)
        lo[self.axis], hi[self.axis] = self.slice_range[0], self.slice_range[1] + 1
        return tuple(lo), tuple(hi)


@dataclass(frozen=True, eq=False)
class ErrorSlice:
    """An error region on one axis-aligned slice, as chosen by :func:`pick_error_slice`.

    ``region`` is a 2D bool array of the full slice, shaped like ``volume.take(index, axis)``.
    ``positive`` is ``True`` for missed foreground (a prompt there should add) and ``False`` for
    a false positive (a prompt there should remove).
    """

    axis: int
    index: int
    region: np.ndarray = field(repr=False)
    positive: bool


# --- helpers ------------------------------------------------------------------------------------


def _choose(rng: np.random.Generator, n: int) -> int:
    """Uniform index in [0, n); draws from ``rng`` only when there is a real choice."""
    return 0 if n == 1 else int(rng.integers(n))


def _check_rng(rng: object) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}")
    return rng


def _deepest_voxel(
    component: np.ndarray,
    offset: Sequence[int],
    rng: np.random.Generator,
    spacing: tuple[float, ...] | None,
) -> tuple[int, int, int]:
    """Deepest voxel of a non-empty 3D ``component`` given as its tight bounding-box crop.

    Follows the challenge's ``compute_edt`` + ``sample_coord``: zero-pad by
    ``max(int(0.25 * extent), 1)`` per side, EDT (2x max-pooled above 6e7 voxels), argmax with
    ties broken uniformly. ``offset`` is the crop's position in the volume; the result is in
    volume coordinates.
    """
    shape = np.array(component.shape)
    pad = np.maximum((shape * 0.25).astype(int), 1)
    padded = np.pad(component, [(int(p), int(p)) for p in pad])
    sampling = None if spacing is None else np.asarray(spacing, dtype=float)

    if padded.size > EDT_DOWNSAMPLE_VOXELS:
        # Max-pool 2x2x2 (pad to even sizes first), EDT on the coarse grid, repeat back.
        even = [(0, int(s % 2)) for s in padded.shape]
        pooled = np.pad(padded, even)
        pooled = pooled.reshape(pooled.shape[0] // 2, 2, pooled.shape[1] // 2, 2, pooled.shape[2] // 2, 2).any(
            axis=(1, 3, 5)
        )
        coarse = ndimage.distance_transform_edt(pooled, sampling=None if sampling is None else 2 * sampling)
        edt = coarse.repeat(2, 0).repeat(2, 1).repeat(2, 2)[: padded.shape[0], : padded.shape[1], : padded.shape[2]]
    else:
        edt = ndimage.distance_transform_edt(padded, sampling=sampling)

    inner = edt[pad[0] : pad[0] + shape[0], pad[1] : pad[1] + shape[1], pad[2] : pad[2] + shape[2]]
    # Only voxels of the component are candidates (matters in the downsampled case only).
    values = np.where(component, inner, 0.0)
    best = values.max()
    if best > 0:
        candidates = np.flatnonzero(values == best)
    else:  # all-zero EDT: uniform voxel of the component
        candidates = np.flatnonzero(component)
    flat = int(candidates[_choose(rng, candidates.size)])
    local = np.unravel_index(flat, component.shape)
    return tuple(int(o + c) for o, c in zip(offset, local))  # type: ignore[return-value]


def _crop(mask: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]] | None:
    bbox = bounding_box(mask)
    if bbox is None:
        return None
    lo, hi = bbox
    return mask[tuple(slice(a, b) for a, b in zip(lo, hi))], lo


def _label_sizes(mask: np.ndarray, structure: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label ``mask``; return (labels, sizes) with ``sizes[i]`` the size of label ``i + 1``."""
    labels, n = ndimage.label(mask, structure=structure)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    return labels, sizes


# --- CVPR protocol ------------------------------------------------------------------------------


def next_click(
    pred: np.ndarray,
    gt: np.ndarray,
    *,
    rng: np.random.Generator,
    spacing: Sequence[float] | None = None,
) -> Click | None:
    """The CVPR 2025 correction click for one class, or ``None`` if ``pred`` equals ``gt``.

    Parameters
    ----------
    pred, gt:
        3D (z, y, x) binary masks of the same shape (the previous prediction and the ground
        truth of one class).
    rng:
        Breaks ties between equal-size components and between equally deep voxels.
    spacing:
        ``None`` (default, as in the challenge): EDT in voxel units. Otherwise (z, y, x) mm
        spacing for an EDT in mm.

    Returns
    -------
    Click
        At the deepest voxel of the largest 26-connected component of ``pred != gt``;
        ``positive`` iff ``gt`` is set there (missed foreground).
    """
    p, g = check_mask_pair(pred, gt, ndim=3)
    _check_rng(rng)
    sp = None if spacing is None else check_spacing(spacing)

    cropped = _crop(p != g)  # components never leave the error's bounding box
    if cropped is None:
        return None
    error, offset = cropped

    labels, sizes = _label_sizes(error, _STRUCT_26)
    largest = np.flatnonzero(sizes == sizes.max()) + 1
    label = int(largest[_choose(rng, largest.size)])
    box = ndimage.find_objects(labels, max_label=label)[label - 1]
    component = labels[box] == label
    comp_offset = [o + s.start for o, s in zip(offset, box)]

    zyx = _deepest_voxel(component, comp_offset, rng, sp)
    return Click(zyx=zyx, positive=bool(g[zyx]))


def initial_point(gt: np.ndarray, rng: np.random.Generator, *, spacing: Sequence[float] | None = None) -> Click:
    """A positive click at the deepest voxel of ``gt`` (EDT argmax, ties broken by ``rng``).

    Uses the same EDT as :func:`next_click`: outside the image counts as background; voxel units
    unless ``spacing`` is given. Raises :class:`InvalidMaskError` if ``gt`` is empty.
    """
    g = as_binary_mask(gt, "gt", ndim=3)
    _check_rng(rng)
    sp = None if spacing is None else check_spacing(spacing)
    cropped = _crop(g)
    if cropped is None:
        raise InvalidMaskError("gt is empty; an initial point needs at least one foreground voxel")
    component, offset = cropped
    return Click(zyx=_deepest_voxel(component, offset, rng, sp), positive=True)


def initial_box3d(gt: np.ndarray) -> Box:
    """Tight half-open 3D bounding box ``((z0, y0, x0), (z1, y1, x1))`` of ``gt``."""
    g = as_binary_mask(gt, "gt", ndim=3)
    bbox = bounding_box(g)
    if bbox is None:
        raise InvalidMaskError("gt is empty; a bounding box needs at least one foreground voxel")
    return bbox


def initial_box2d(gt: np.ndarray, rng: np.random.Generator, axis: int = 0, *, max_shift_px: int = 5) -> InitialBox2D:
    """The CVPR 2025 initial 2D box of one class.

    The slice is the middle of the occupied slices along ``axis``
    (``unique(occupied)[n // 2]``). On it: the tight 2D box, enlarged on every side by
    ``int(s * dim / 256)`` pixels, where ``s = rng.integers(0, max_shift_px + 1)`` is drawn once
    per box and ``dim`` is the image size along that side's axis. The box is clipped to the
    image.

    Returns an :class:`InitialBox2D`: a half-open 3D box with extent 1 along ``axis``, plus the
    inclusive range of occupied slices.
    """
    g = as_binary_mask(gt, "gt", ndim=3)
    _check_rng(rng)
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis!r}")
    if int(max_shift_px) < 0:
        raise ValueError(f"max_shift_px must be >= 0, got {max_shift_px!r}")
    others = tuple(a for a in range(3) if a != axis)
    occupied = np.flatnonzero(g.any(axis=others))
    if occupied.size == 0:
        raise InvalidMaskError("gt is empty; a bounding box needs at least one foreground voxel")
    mid = int(occupied[occupied.size // 2])

    lo2, hi2 = bounding_box(np.take(g, mid, axis=axis))  # type: ignore[misc]
    shift = int(rng.integers(0, int(max_shift_px) + 1))
    lo, hi = [0, 0, 0], [0, 0, 0]
    lo[axis], hi[axis] = mid, mid + 1
    for k, a in enumerate(others):
        dim = g.shape[a]
        grow = int(shift * dim / 256)
        lo[a] = max(0, lo2[k] - grow)
        hi[a] = min(dim, hi2[k] + grow)
    return InitialBox2D(lo=tuple(lo), hi=tuple(hi), axis=axis, slice_range=(int(occupied[0]), int(occupied[-1])))  # type: ignore[arg-type]


# --- paper-style 2D prompts ---------------------------------------------------------------------


def pick_error_slice(
    pred: np.ndarray,
    gt: np.ndarray,
    rng: np.random.Generator,
    axis: int | None = None,
    *,
    component: Literal["weighted", "largest"] = "weighted",
) -> ErrorSlice | None:
    """Choose an error region on one axis-aligned slice for a 2D prompt; ``None`` if no error.

    1. Label false negatives and false positives separately (26-connectivity).
    2. Choose one component: with probability proportional to its size (``"weighted"``, the
       nnInteractive rule) or the largest one (``"largest"``, ties by ``rng``).
    3. Take the slice where that component has the largest area, along ``axis`` or, when
       ``axis`` is ``None``, over all three axes (ties by ``rng``).
    4. Keep the largest 8-connected piece of the component on that slice.
    """
    p, g = check_mask_pair(pred, gt, ndim=3)
    _check_rng(rng)
    if axis is not None and axis not in (0, 1, 2):
        raise ValueError(f"axis must be None, 0, 1 or 2, got {axis!r}")
    if component not in ("weighted", "largest"):
        raise ValueError(f"component must be 'weighted' or 'largest', got {component!r}")

    cropped = _crop(p != g)
    if cropped is None:
        return None
    error, offset = cropped
    box = tuple(slice(o, o + s) for o, s in zip(offset, error.shape))
    g_box = g[box]

    # Components of each polarity; polarity True = missed foreground.
    comps: list[tuple[bool, np.ndarray, int, int]] = []  # (positive, labels, label, size)
    for positive, mask in ((True, error & g_box), (False, error & ~g_box)):
        labels, sizes = _label_sizes(mask, _STRUCT_26)
        comps.extend((positive, labels, i + 1, int(s)) for i, s in enumerate(sizes))
    sizes_all = np.array([c[3] for c in comps], dtype=np.float64)
    if component == "weighted":
        pick = int(rng.choice(len(comps), p=sizes_all / sizes_all.sum())) if len(comps) > 1 else 0
    else:
        largest = np.flatnonzero(sizes_all == sizes_all.max())
        pick = int(largest[_choose(rng, largest.size)])
    positive, labels, label, _ = comps[pick]
    comp = labels == label

    # Largest cross-section over the allowed axes.
    candidates: list[tuple[int, int]] = []
    best = -1
    for ax in (0, 1, 2) if axis is None else (axis,):
        areas = comp.sum(axis=tuple(a for a in range(3) if a != ax))
        m = int(areas.max())
        idx = [(ax, int(i)) for i in np.flatnonzero(areas == m)]
        if m > best:
            best, candidates = m, idx
        elif m == best:
            candidates.extend(idx)
    ax, local_index = candidates[_choose(rng, len(candidates))]

    # Back to full-slice coordinates, then keep the largest 8-connected piece.
    in_plane = [a for a in range(3) if a != ax]
    region = np.zeros([p.shape[a] for a in in_plane], dtype=bool)
    region[tuple(box[a] for a in in_plane)] = np.take(comp, local_index, axis=ax)
    index = offset[ax] + local_index
    pieces, piece_sizes = _label_sizes(region, _STRUCT_8)
    if piece_sizes.size > 1:
        top = np.flatnonzero(piece_sizes == piece_sizes.max()) + 1
        region = pieces == int(top[_choose(rng, top.size)])
    return ErrorSlice(axis=ax, index=int(index), region=region, positive=positive)


def _check_region(region2d: object) -> np.ndarray:
    r = as_binary_mask(region2d, "region2d", ndim=2)
    if not r.any():
        raise InvalidMaskError("region2d is empty; a 2D prompt needs at least one pixel to target")
    return r


def _depth(region: np.ndarray) -> np.ndarray:
    """EDT of ``region`` with the outside of the image counted as background."""
    return ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]


def _disk(radius: float) -> np.ndarray:
    r = int(np.floor(radius))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (yy * yy + xx * xx) <= radius * radius


def _thicken(path: np.ndarray, radius: float) -> np.ndarray:
    """Pixels within ``radius`` of ``path`` (a disk-shaped brush)."""
    if radius < 1:
        return path.copy()
    return ndimage.binary_dilation(path, structure=_disk(radius))


def _line(p0: Sequence[int], p1: Sequence[int], shape: tuple[int, ...]) -> np.ndarray:
    """1-pixel raster line from ``p0`` to ``p1`` (inclusive)."""
    n = int(max(abs(p1[0] - p0[0]), abs(p1[1] - p0[1]))) + 1
    ys = np.rint(np.linspace(p0[0], p1[0], n)).astype(int)
    xs = np.rint(np.linspace(p0[1], p1[1], n)).astype(int)
    out = np.zeros(shape, dtype=bool)
    out[ys, xs] = True
    return out


def _zhang_suen(mask: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning of a 2D bool mask to a 1-pixel skeleton (may vanish for 2x2 blobs)."""
    img = np.pad(mask, 1).astype(np.uint8)
    while True:
        changed = False
        for step in (0, 1):
            # Neighbours P2..P9, clockwise from north.
            P = [
                img[:-2, 1:-1], img[:-2, 2:], img[1:-1, 2:], img[2:, 2:],
                img[2:, 1:-1], img[2:, :-2], img[1:-1, :-2], img[:-2, :-2],
            ]  # fmt: skip
            b = sum(x.astype(np.int32) for x in P)
            seq = P + [P[0]]
            a = sum(((seq[i] == 0) & (seq[i + 1] == 1)).astype(np.int32) for i in range(8))
            p2, p4, p6, p8 = P[0], P[2], P[4], P[6]
            if step == 0:
                c = (p2 * p4 * p6 == 0) & (p4 * p6 * p8 == 0)
            else:
                c = (p2 * p4 * p8 == 0) & (p2 * p6 * p8 == 0)
            delete = (img[1:-1, 1:-1] == 1) & (b >= 2) & (b <= 6) & (a == 1) & c
            if delete.any():
                img[1:-1, 1:-1][delete] = 0
                changed = True
        if not changed:
            return img[1:-1, 1:-1].astype(bool)


def _geodesic_piece(pixels: np.ndarray, rng: np.random.Generator, lo: float, hi: float) -> np.ndarray:
    """A connected piece of the 1-pixel-wide set ``pixels``, truncated at random.

    Breadth-first search (8-connectivity) from a random seed pixel. Keeps the pixels whose
    geodesic distance from the seed is at most ``f * max_distance``, with
    ``f ~ U(lo, hi)``.
    """
    coords = np.argwhere(pixels)
    seed = tuple(coords[_choose(rng, len(coords))])
    dist = {seed: 0}
    queue = deque([seed])
    h, w = pixels.shape
    while queue:
        y, x = queue.popleft()
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                n = (y + dy, x + dx)
                if 0 <= n[0] < h and 0 <= n[1] < w and pixels[n] and n not in dist:
                    dist[n] = dist[(y, x)] + 1
                    queue.append(n)
    limit = rng.uniform(lo, hi) * max(dist.values())
    out = np.zeros_like(pixels)
    for (y, x), d in dist.items():
        if d <= limit:
            out[y, x] = True
    return out


def simulate_scribble(
    region2d: np.ndarray,
    rng: np.random.Generator,
    thickness: float = 2,
    *,
    kind: Literal["line", "skeleton", "contour"] | None = None,
) -> np.ndarray:
    """Draw a scribble inside a 2D region; returns a uint8 mask shaped like ``region2d``.

    ``kind`` (uniform at random when ``None``):

    * ``"line"``: a straight line between two points of the region;
    * ``"skeleton"``: a random geodesic piece of the region's skeleton;
    * ``"contour"``: a random arc of the contour of the region, eroded by a random depth.

    The 1-pixel path is thickened with a disk of radius ``thickness / 2``. If fewer than 95 % of
    the stroke pixels are inside the region, the stroke is clipped to it. The result is never
    empty for a non-empty region; an empty region raises :class:`InvalidMaskError`.
    """
    region = _check_region(region2d)
    _check_rng(rng)
    if not thickness > 0:
        raise ValueError(f"thickness must be > 0, got {thickness!r}")
    kinds = ("line", "skeleton", "contour")
    if kind is None:
        kind = kinds[int(rng.integers(3))]
    elif kind not in kinds:
        raise ValueError(f"kind must be one of {kinds} or None, got {kind!r}")
    radius = float(thickness) / 2.0
    depth = _depth(region)
    # Pixels where the whole brush fits inside the region; the deepest pixels if none do.
    core = depth > radius
    if not core.any():
        core = depth == depth.max()

    if kind == "line":
        pts = np.argwhere(core)
        best, best_inside = None, -1.0
        for _ in range(10):  # a line in a non-convex region may leave it: retry a few times
            a, b = pts[_choose(rng, len(pts))], pts[_choose(rng, len(pts))]
            path = _line(a, b, region.shape)
            inside = np.count_nonzero(path & region) / np.count_nonzero(path)
            if inside > best_inside:
                best, best_inside = path, inside
            if inside >= 0.95:
                break
        path = best  # type: ignore[assignment]
    elif kind == "skeleton":
        skeleton = _zhang_suen(region)
        if not skeleton.any():  # tiny blobs thin away entirely
            skeleton = depth == depth.max()
        path = _geodesic_piece(skeleton, rng, 0.3, 1.0)
    else:
        erode_by = rng.uniform(0.0, 0.5) * depth.max()
        eroded = depth > max(erode_by, 0.5)  # depth > 0.5 is the region itself
        if not eroded.any():
            eroded = depth == depth.max()
        contour = eroded & ~ndimage.binary_erosion(eroded, border_value=0)
        path = _geodesic_piece(contour, rng, 0.25, 0.75)

    stroke = _thicken(path, radius)
    if np.count_nonzero(stroke & region) < 0.95 * np.count_nonzero(stroke):
        stroke &= region
    if not stroke.any():  # cannot happen (path pixels are inside), but never return nothing
        stroke = core & (depth == depth[core].max())
    return stroke.astype(np.uint8)


def simulate_lasso(region2d: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A filled closed contour roughly covering a 2D region; uint8 mask shaped like ``region2d``.

    Closing with a disk of radius 1 .. ``1 + round(0.15 R)`` (``R`` = radius of the disk of the
    region's area), hole filling, dilation by 1 .. 2 px plus ``round(0.05 R)``. Then a smooth
    random displacement of at most ``min(2, 0.5 + 0.05 R)`` px, and hole filling again. An empty
    region raises :class:`InvalidMaskError`.
    """
    region = _check_region(region2d)
    _check_rng(rng)
    eq_radius = float(np.sqrt(np.count_nonzero(region) / np.pi))
    r_close = 1 + int(rng.integers(0, int(round(0.15 * eq_radius)) + 1))
    r_dilate = int(rng.integers(1, 3)) + int(round(0.05 * eq_radius))
    amplitude = min(2.0, 0.5 + 0.05 * eq_radius)

    # Work on a padded crop around the region: faster, and closing is not cut by the border.
    lo, hi = bounding_box(region)  # type: ignore[misc]
    margin = r_close + r_dilate + int(np.ceil(amplitude)) + 2
    crop = np.pad(region[lo[0] : hi[0], lo[1] : hi[1]], margin)

    shape_ = ndimage.binary_closing(crop, structure=_disk(r_close))
    shape_ = ndimage.binary_fill_holes(shape_ | crop)
    shape_ = _thicken(shape_, r_dilate)

    # Smooth random displacement field (nearest-neighbour resampling keeps the mask binary).
    sigma = max(2.0, eq_radius / 2.0)
    fields = []
    for _ in range(2):
        f = ndimage.gaussian_filter(rng.standard_normal(crop.shape), sigma)
        peak = np.abs(f).max()
        fields.append(f * (amplitude / peak) if peak > 0 else f)
    yy, xx = np.indices(crop.shape, dtype=np.float64)
    warped = ndimage.map_coordinates(
        shape_.astype(np.uint8), [yy + fields[0], xx + fields[1]], order=0, mode="constant"
    ).astype(bool)
    warped = ndimage.binary_fill_holes(warped)
    if not warped.any():
        warped = shape_

    out = np.zeros(region.shape, dtype=np.uint8)
    # Paste the crop back, dropping the parts of the margin that lie outside the image.
    y0, x0 = lo[0] - margin, lo[1] - margin
    ys, xs = max(0, -y0), max(0, -x0)
    ye = min(crop.shape[0], region.shape[0] - y0)
    xe = min(crop.shape[1], region.shape[1] - x0)
    out[y0 + ys : y0 + ye, x0 + xs : x0 + xe] = warped[ys:ye, xs:xe]
    if not out.any():  # the whole lasso warped off-image: fall back to the region itself
        out[region] = 1
    return out


def simulate_box2d(
    region2d: np.ndarray, rng: np.random.Generator, *, jitter: float = 0.1
) -> tuple[tuple[int, int], tuple[int, int]]:
    """A 2D box around a region, half-open ``((row0, col0), (row1, col1))``.

    Starts from the tight box and moves each of the four sides independently by a random
    integer in ``[-s, s]`` (positive = outwards), with ``s = round(jitter * extent)`` along
    that side's axis. Clipped to the image, never empty. An empty region raises
    :class:`InvalidMaskError`.
    """
    region = _check_region(region2d)
    _check_rng(rng)
    if not jitter >= 0:
        raise ValueError(f"jitter must be >= 0, got {jitter!r}")
    lo, hi = bounding_box(region)  # type: ignore[misc]
    new_lo, new_hi = [0, 0], [0, 0]
    for d in range(2):
        s = int(round(jitter * (hi[d] - lo[d])))
        a = lo[d] - int(rng.integers(-s, s + 1))
        b = hi[d] + int(rng.integers(-s, s + 1))
        a = min(max(a, 0), region.shape[d] - 1)
        b = min(max(b, a + 1), region.shape[d])
        new_lo[d], new_hi[d] = a, b
    return (new_lo[0], new_lo[1]), (new_hi[0], new_hi[1])


# --- placing 2D prompts in the volume ----------------------------------------------------------


def slice_box(lo2d: Sequence[int], hi2d: Sequence[int], axis: int, index: int) -> Box:
    """Turn a half-open 2D box on slice ``index`` along ``axis`` into a 3D (z, y, x) box."""
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis!r}")
    lo, hi = [int(v) for v in lo2d], [int(v) for v in hi2d]
    lo.insert(axis, int(index))
    hi.insert(axis, int(index) + 1)
    return tuple(lo), tuple(hi)


def slice_crop(mask2d: np.ndarray, axis: int, index: int) -> tuple[np.ndarray, Box]:
    """Place a 2D prompt mask on slice ``index`` along ``axis`` of a (z, y, x) volume.

    Returns ``(crop3d, (lo, hi))``: ``crop3d`` is the mask cropped tight to its non-zero pixels,
    as uint8 with a length-1 dimension inserted at ``axis``. ``(lo, hi)`` is the half-open 3D
    box where it belongs. An empty mask raises :class:`nnint.errors.EmptyPromptError`.
    """
    m = as_binary_mask(mask2d, "mask2d", ndim=2)
    bbox = bounding_box(m)
    if bbox is None:
        raise EmptyPromptError("mask2d is empty; a 2D prompt must cover at least one pixel")
    lo2, hi2 = bbox
    crop = m[lo2[0] : hi2[0], lo2[1] : hi2[1]].astype(np.uint8)
    return np.expand_dims(crop, axis), slice_box(lo2, hi2, axis, index)
