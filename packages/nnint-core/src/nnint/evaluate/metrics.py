"""Segmentation metrics of the evaluation harness (pure numpy/scipy).

All volumes are numpy arrays in array-index order ``(z, y, x)``; spacings are given in the same
order, in millimetres. Masks may be ``bool`` or any integer/float dtype that holds only 0 and 1;
anything else (other values, mismatched shapes, wrong ndim) raises
:class:`nnint.errors.InvalidMaskError`. Non-mask arguments that are invalid (a negative tolerance,
an empty list of per-step values, ...) raise ``ValueError``.

Metrics
-------
* :func:`dice` -- Dice similarity coefficient; both masks empty -> 1.0.
* :func:`surface_dice` -- normalised surface Dice (NSD) in the style of DeepMind's
  ``surface-distance`` package, which the CVPR 2025 challenge uses with a 2 mm tolerance.
* :func:`challenge_nsd` -- the CVPR 2025 rule: NSD only if Dice > 0.2, else 0.
* :func:`auc_trapezoid` -- CVPR ``DSC_AUC``/``NSD_AUC``: trapezoid rule with unit spacing.
* :func:`auc_mean` -- the nnInteractive paper's "AUC": the mean over interaction steps.
* :func:`clicks_to_reach` -- NoC@80/NoC@90 style: first step reaching a threshold.

Decisions on points the protocols leave open
--------------------------------------------
* **Surfel areas.** A surface element ("surfel") is the piece of a marching-cubes style surface
  inside one 2x2x2 cube of voxel centres. Its polygon(s) have their vertices at the midpoints of
  the cube edges whose two corners differ, linked face by face (marching squares on each cube
  face). On a face with two diagonal "inside" corners we cut off the inside corners (they stay
  separated). Each closed polygon is triangulated as a fan around its vertex centroid, after
  scaling by the spacing, and the areas are summed. This is written from that definition; it
  is not DeepMind's hand-made lookup table. For every configuration whose polygons are planar
  (flat faces, straight edges and corners of axis-aligned shapes, isolated corners) the areas
  are identical to DeepMind's. For non-planar configurations any triangulation is a choice, and
  ours differs from theirs (ours is slightly smaller). Measured on smooth random 3D shapes, the
  NSD agrees with the reference table to about 2e-4 at 2 mm tolerance and 2e-3 at 0 tolerance.
* **Distances.** As in the reference, the surface of a mask is the set of 2x2x2 cubes that hold
  both inside and outside voxels. A surfel of one mask counts as "within tolerance" when its
  cube's position lies at most ``tolerance_mm`` from the nearest surface cube of the other mask,
  in mm with the voxel spacing. The reference reads that distance from a Euclidean distance
  transform (``scipy.ndimage.distance_transform_edt`` with ``sampling=spacing``). We get the
  same exact Euclidean nearest-surface distance from a KD-tree over the surface cubes. It is
  several times faster, because its cost grows with the surface, not the bounding volume. To
  absorb floating-point rounding, distances within ``1e-9`` (relative) of the tolerance count
  as inside.
* **Image border.** Voxels outside the array count as background, so a mask touching the border
  has a surface there. The reference pads with zeros too.
* **Empty masks.** NSD: both empty -> 1.0, exactly one empty -> 0.0.
* :func:`auc_trapezoid` needs at least two values; a single step has no area.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from scipy.spatial import cKDTree

from nnint.errors import InvalidMaskError

__all__ = [
    "as_binary_mask",
    "check_mask_pair",
    "check_spacing",
    "bounding_box",
    "dice",
    "surface_dice",
    "challenge_nsd",
    "auc_trapezoid",
    "auc_mean",
    "clicks_to_reach",
    "surfel_area_table",
    "CVPR_NSD_TOLERANCE_MM",
    "CVPR_NSD_MIN_DICE",
]

#: Tolerance of the CVPR 2025 NSD, in mm.
CVPR_NSD_TOLERANCE_MM = 2.0
#: The CVPR 2025 evaluation computes NSD only when Dice exceeds this value (else NSD = 0).
CVPR_NSD_MIN_DICE = 0.2


# --- input validation ---------------------------------------------------------------------------


def as_binary_mask(mask: object, name: str = "mask", *, ndim: int | None = None) -> np.ndarray:
    """Return ``mask`` as a ``bool`` array, or raise :class:`InvalidMaskError`.

    Accepts ``bool`` arrays and integer/float arrays whose values are all 0 or 1. ``ndim``, when
    given, is the required number of dimensions.
    """
    arr = np.asarray(mask)
    if ndim is not None and arr.ndim != ndim:
        raise InvalidMaskError(
            f"{name} must be a {ndim}D array, got shape {arr.shape}; pass a (z, y, x) volume"
            if ndim == 3
            else f"{name} must be a {ndim}D array, got shape {arr.shape}"
        )
    if arr.dtype == bool:
        return arr
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise InvalidMaskError(f"{name} has dtype {arr.dtype}; use bool or 0/1 integers")
    if arr.size and not np.all((arr == 0) | (arr == 1)):
        raise InvalidMaskError(f"{name} holds values other than 0 and 1; binarise it first (e.g. mask == label)")
    return arr.astype(bool)


def check_mask_pair(pred: object, gt: object, *, ndim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (prediction, ground truth) pair; return both as ``bool`` arrays of equal shape."""
    p = as_binary_mask(pred, "pred", ndim=ndim)
    g = as_binary_mask(gt, "gt", ndim=ndim)
    if p.shape != g.shape:
        raise InvalidMaskError(f"pred and gt must have the same shape, got {p.shape} and {g.shape}")
    return p, g


def check_spacing(spacing: object, ndim: int = 3) -> tuple[float, ...]:
    """Return ``spacing`` as a tuple of ``ndim`` positive finite floats, or raise ``ValueError``."""
    try:
        values = tuple(float(s) for s in spacing)  # type: ignore[union-attr]
    except TypeError as exc:
        raise ValueError(f"spacing must be a sequence of {ndim} numbers, got {spacing!r}") from exc
    if len(values) != ndim or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"spacing must be {ndim} positive finite numbers in (z, y, x) order, got {spacing!r}")
    return values


def bounding_box(mask: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """Tight half-open bounding box ``(lo, hi)`` of the non-zero voxels, or ``None`` if empty."""
    if not mask.any():
        return None
    lo, hi = [], []
    for d in range(mask.ndim):
        occupied = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != d)))
        lo.append(int(occupied[0]))
        hi.append(int(occupied[-1]) + 1)
    return tuple(lo), tuple(hi)


# --- Dice ---------------------------------------------------------------------------------------


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice coefficient ``2|P & G| / (|P| + |G|)`` of two binary masks of any (equal) shape.

    Both empty -> 1.0 (nothing to find, nothing found).
    """
    p, g = check_mask_pair(pred, gt)
    sp, sg = int(np.count_nonzero(p)), int(np.count_nonzero(g))
    if sp + sg == 0:
        return 1.0
    inter = int(np.count_nonzero(p & g))
    return 2.0 * inter / (sp + sg)


# --- surfel areas -------------------------------------------------------------------------------

# Corners of the 2x2x2 cube, as (dz, dy, dx); corner k contributes bit k (k = 4 dz + 2 dy + dx)
# to the neighbourhood code.
_CORNERS = np.array([(z, y, x) for z in (0, 1) for y in (0, 1) for x in (0, 1)], dtype=float)


def _cube_faces() -> list[list[int]]:
    """The six cube faces, each as its four corner indices in cyclic order."""
    faces = []
    for axis in range(3):
        a, b = (d for d in range(3) if d != axis)
        for value in (0, 1):
            cycle = []
            for u, v in ((0, 0), (0, 1), (1, 1), (1, 0)):
                c = [0, 0, 0]
                c[axis], c[a], c[b] = value, u, v
                cycle.append(4 * c[0] + 2 * c[1] + c[2])
            faces.append(cycle)
    return faces


def _surfel_polygons(code: int) -> list[list[tuple[int, int]]]:
    """Closed polygons of the surface inside a cube with neighbourhood ``code``.

    Each polygon is a list of cube edges (pairs of corner indices); its vertices are the edge
    midpoints. Built by marching squares on the six faces: a face with two crossing edges gets
    one segment; a face with four (two diagonal inside corners) gets two segments that cut off
    the inside corners. Every crossing edge lies on exactly two faces, so the segments chain
    into closed loops.
    """
    inside = [(code >> k) & 1 for k in range(8)]
    links: dict[tuple[int, int], list[tuple[int, int]]] = {}

    def link(e1: tuple[int, int], e2: tuple[int, int]) -> None:
        links.setdefault(e1, []).append(e2)
        links.setdefault(e2, []).append(e1)

    for cycle in _cube_faces():
        edges = [tuple(sorted((cycle[i], cycle[(i + 1) % 4]))) for i in range(4)]
        crossing = [i for i in range(4) if inside[edges[i][0]] != inside[edges[i][1]]]
        if len(crossing) == 2:
            link(edges[crossing[0]], edges[crossing[1]])
        elif len(crossing) == 4:
            for k in range(4):  # corner cycle[k] lies between edges k-1 and k
                if inside[cycle[k]]:
                    link(edges[(k - 1) % 4], edges[k])

    polygons, seen = [], set()
    for start in links:
        if start in seen:
            continue
        loop, current = [start], start
        seen.add(start)
        while True:
            nxt = [e for e in links[current] if e not in seen]
            if not nxt:
                break
            current = nxt[0]
            loop.append(current)
            seen.add(current)
        polygons.append(loop)
    return polygons


def _build_polygon_vertices() -> list[list[np.ndarray]]:
    """For each of the 256 codes, its polygons as (n, 3) arrays of unit-cube vertex positions."""
    table = []
    for code in range(256):
        table.append(
            [np.array([(_CORNERS[a] + _CORNERS[b]) / 2.0 for a, b in poly]) for poly in _surfel_polygons(code)]
        )
    return table


_POLYGONS = _build_polygon_vertices()


@lru_cache(maxsize=64)
def _surfel_area_table_cached(spacing: tuple[float, float, float]) -> np.ndarray:
    table = np.zeros(256, dtype=np.float64)
    scale = np.asarray(spacing)
    for code, polys in enumerate(_POLYGONS):
        for verts in polys:
            pts = verts * scale
            centre = pts.mean(axis=0)
            nxt = np.roll(pts, -1, axis=0)
            # fan of triangles (centre, v_i, v_i+1); area = |cross| / 2 each
            table[code] += 0.5 * np.linalg.norm(np.cross(pts - centre, nxt - centre), axis=1).sum()
    table.setflags(write=False)
    return table


def surfel_area_table(spacing_zyx: Sequence[float]) -> np.ndarray:
    """Surface area (mm^2) of the surfel of each 2x2x2 neighbourhood code, shape (256,), float64.

    Code bit ``k = 4*dz + 2*dy + dx`` is set when the cube corner at offset ``(dz, dy, dx)`` is
    inside the mask. Codes 0 and 255 (no surface) have area 0. See the module docstring for how
    the areas are defined.
    """
    return _surfel_area_table_cached(check_spacing(spacing_zyx))  # type: ignore[arg-type]


def _neighbour_codes(mask: np.ndarray) -> np.ndarray:
    """Code (uint8) of every 2x2x2 cube of ``mask``; output shape is ``mask.shape - 1``."""
    nz, ny, nx = (s - 1 for s in mask.shape)
    codes = np.zeros((nz, ny, nx), dtype=np.uint8)
    for k, (dz, dy, dx) in enumerate(_CORNERS.astype(int)):
        codes |= mask[dz : dz + nz, dy : dy + ny, dx : dx + nx].astype(np.uint8) << np.uint8(k)
    return codes


# --- surface Dice -------------------------------------------------------------------------------


def surface_dice(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing_zyx: Sequence[float],
    tolerance_mm: float = CVPR_NSD_TOLERANCE_MM,
) -> float:
    """Normalised surface Dice of two 3D binary masks (z, y, x).

    ``NSD = (area of pred surfels within tol of the gt surface + area of gt surfels within tol of
    the pred surface) / (total surfel area of pred + total surfel area of gt)``, in [0, 1].

    Parameters
    ----------
    pred, gt:
        3D masks of equal shape, bool or 0/1.
    spacing_zyx:
        Voxel size in mm, (z, y, x) order.
    tolerance_mm:
        Distances ``<= tolerance_mm`` count as agreement. Must be >= 0.

    Both empty -> 1.0; exactly one empty -> 0.0. The computation runs on the bounding box of
    ``pred | gt`` padded by one voxel, so its cost depends on the objects, not the image.
    """
    p, g = check_mask_pair(pred, gt, ndim=3)
    spacing = check_spacing(spacing_zyx)
    tol = float(tolerance_mm)
    if not (tol >= 0 and math.isfinite(tol)):
        raise ValueError(f"tolerance_mm must be a finite number >= 0, got {tolerance_mm!r}")

    has_p, has_g = bool(p.any()), bool(g.any())
    if not has_p and not has_g:
        return 1.0
    if not has_p or not has_g:
        return 0.0

    # Crop to the union's bounding box, then pad by one background voxel on every side so the
    # cubes straddling the outermost voxels exist (outside the image counts as background).
    lo, hi = bounding_box(p | g)  # type: ignore[misc]  # non-empty here
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    p = np.pad(p[box], 1)
    g = np.pad(g[box], 1)

    areas = surfel_area_table(spacing)
    code_p, code_g = _neighbour_codes(p), _neighbour_codes(g)
    border_p = (code_p != 0) & (code_p != 255)
    border_g = (code_g != 0) & (code_g != 255)

    # Nearest-surface distances (mm) via KD-trees over the surface cube positions: the same
    # exact Euclidean distances an EDT gives, at a cost that grows with the surface only.
    scale = np.asarray(spacing)
    pts_p = np.argwhere(border_p) * scale
    pts_g = np.argwhere(border_g) * scale
    limit = tol + 1e-9 * max(1.0, tol)  # absorb rounding at exact-tolerance distances
    bound = limit * (1.0 + 1e-6) + 1e-9  # queries beyond this return inf (and run faster)
    dist_p_to_g, _ = cKDTree(pts_g).query(pts_p, k=1, distance_upper_bound=bound)
    dist_g_to_p, _ = cKDTree(pts_p).query(pts_g, k=1, distance_upper_bound=bound)

    area_p = areas[code_p[border_p]]  # same C order as np.argwhere above
    area_g = areas[code_g[border_g]]
    close_p = dist_p_to_g <= limit
    close_g = dist_g_to_p <= limit

    total = float(area_p.sum() + area_g.sum())
    if total <= 0.0:  # cannot happen for non-empty masks; keep the division safe anyway
        return 0.0
    return float((area_p[close_p].sum() + area_g[close_g].sum()) / total)


def challenge_nsd(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float],
    dsc: float | None = None,
    tolerance_mm: float = CVPR_NSD_TOLERANCE_MM,
) -> float:
    """NSD under the CVPR 2025 rule: computed only if ``dsc > 0.2``, else 0.0.

    ``dsc`` is the Dice of the same pair. Pass it when you already have it; when ``None`` it is
    computed here.
    """
    if dsc is None:
        dsc = dice(pred, gt)
    if not dsc > CVPR_NSD_MIN_DICE:
        check_mask_pair(pred, gt, ndim=3)  # still reject bad inputs on the short path
        check_spacing(spacing)
        return 0.0
    return surface_dice(pred, gt, spacing, tolerance_mm)


# --- curves over interaction steps --------------------------------------------------------------


def _as_values(values: Sequence[float], name: str, min_len: int = 1) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size < min_len:
        raise ValueError(f"{name} must be a 1D sequence of at least {min_len} number(s), got {values!r}")
    return arr


def auc_trapezoid(values_per_click: Sequence[float]) -> float:
    """Area under the per-click curve by the trapezoid rule with unit spacing.

    For the CVPR 2025 ``DSC_AUC`` pass the 5 values after clicks 1..5 (the box step is not
    included): ``0.5*d1 + d2 + d3 + d4 + 0.5*d5``, range 0..4. For n values this is
    ``sum(values) - 0.5*(values[0] + values[-1])``, range 0..n-1. Needs at least 2 values.
    """
    v = _as_values(values_per_click, "values_per_click", min_len=2)
    return float(v.sum() - 0.5 * (v[0] + v[-1]))


def auc_mean(values_per_step: Sequence[float]) -> float:
    """The nnInteractive paper's "AUC": the plain mean of the per-step values (range 0..1)."""
    v = _as_values(values_per_step, "values_per_step")
    return float(v.mean())


def clicks_to_reach(values_per_step: Sequence[float], threshold: float) -> int | None:
    """Index of the first step whose value is ``>= threshold``, or ``None`` if none reaches it.

    The index is 0-based into ``values_per_step``: if ``values_per_step[k]`` is the Dice after
    ``k + 1`` interactions, then NoC@threshold = ``index + 1``.
    """
    v = _as_values(values_per_step, "values_per_step")
    hits = np.flatnonzero(v >= float(threshold))
    return int(hits[0]) if hits.size else None
