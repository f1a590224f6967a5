"""Coarse-to-fine refinement after a zoomed-out prediction (docs/reference-behaviour.md §4.8-4.10).

* :func:`upsample_coarse`: the zoomed-out argmax, trilinearly upsampled to the window and
  thresholded at 0.5 (bit-identical to PyTorch's ``interpolate``), computed only over the part of
  the window inside the image.
* :func:`opening`: the 5^3 binary opening (min filter then max filter, edge-replicated).
* :func:`plan_boxes`: the greedy cover of the diff map by patch-sized boxes.
* :func:`first_in_c_order_fallback` / :class:`OfficialRandomFallback`: what covers the voxels
  the greedy grid search leaves. The official package draws random voxels from NumPy's global
  generator (non-deterministic unless seeded); nnint's default is deterministic (a fixed set of
  evenly spaced candidates in C order). The official variant is kept for compatibility testing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from nnint.backends.torch.zoom import clip_box, linear_taps

__all__ = [
    "Box3",
    "OfficialRandomFallback",
    "evenly_spaced_fallback",
    "opening",
    "plan_boxes",
    "shrunk_box",
    "full_box",
    "union_box",
    "upsample_coarse",
]

Index3 = tuple[int, int, int]
Box3 = tuple[Index3, Index3]
#: ``fallback(uncovered, box_size, margin) -> centres``; must clear ``uncovered`` completely
Fallback = Callable[[np.ndarray, Sequence[int], Sequence[int]], list[Index3]]


# ---------------------------------------------------------------------------------------------
# coarse mask
# ---------------------------------------------------------------------------------------------


def upsample_coarse(
    pred: np.ndarray, size: Sequence[int], lo: Sequence[int], hi: Sequence[int], z_chunk: int = 32
) -> np.ndarray:
    """The binary network output ``pred`` (patch shape) trilinearly upsampled to the window ``size``
    and thresholded ``>= 0.5``, returned only for window coordinates ``[lo, hi)`` (uint8).

    Bit-identical to ``F.interpolate(pred, size, mode="trilinear") >= 0.5`` cropped to ``[lo, hi)``.
    Where the 2x2x2 source cell of an output voxel is uniform the result is that value (exactly 0,
    or 1 up to rounding); only the voxels of non-uniform cells (the band along the prediction's
    surface) are interpolated, with PyTorch's exact arithmetic.
    """
    from nnint.backends.torch.zoom import _lerp

    p = np.asarray(pred) != 0
    taps = []
    for ax in range(3):
        i0, i1, l0, l1 = linear_taps(p.shape[ax], int(size[ax]))
        sl = slice(int(lo[ax]), int(hi[ax]))
        taps.append((i0[sl], i1[sl], l0[sl], l1[sl]))
    # uniform source cells (neighbour i0 + 1, clamped at the end like the taps)
    pe = np.pad(p, ((0, 1), (0, 1), (0, 1)), mode="edge")
    n0, n1, n2 = p.shape
    any_set = np.zeros(p.shape, bool)
    all_set = np.ones(p.shape, bool)
    for a in (0, 1):
        for b in (0, 1):
            for c in (0, 1):
                v = pe[a : a + n0, b : b + n1, c : c + n2]
                any_set |= v
                all_set &= v
    mixed = any_set & ~all_set
    out = np.empty(tuple(int(b) - int(a) for a, b in zip(lo, hi)), np.uint8)
    (dz0, dz1, lz0, lz1), (dy0, dy1, ly0, ly1), (dx0, dx1, lx0, lx1) = taps
    pf = p.astype(np.float32)
    for o0 in range(0, len(dz0), z_chunk):
        o1 = min(len(dz0), o0 + z_chunk)
        idx = np.ix_(dz0[o0:o1], dy0, dx0)
        block = p[idx].view(np.uint8)
        band = np.nonzero(mixed[idx])
        if band[0].size:
            z, y, x = band
            zo = z + o0
            a0, a1, b0, b1, c0, c1 = dz0[zo], dz1[zo], dy0[y], dy1[y], dx0[x], dx1[x]
            wz0, wz1, wy0, wy1, wx0, wx1 = lz0[zo], lz1[zo], ly0[y], ly1[y], lx0[x], lx1[x]

            # PyTorch's nesting: x innermost, then y, then z
            v0 = _lerp(
                _lerp(pf[a0, b0, c0], pf[a0, b0, c1], wx0, wx1),
                _lerp(pf[a0, b1, c0], pf[a0, b1, c1], wx0, wx1),
                wy0,
                wy1,
            )
            v1 = _lerp(
                _lerp(pf[a1, b0, c0], pf[a1, b0, c1], wx0, wx1),
                _lerp(pf[a1, b1, c0], pf[a1, b1, c1], wx0, wx1),
                wy0,
                wy1,
            )
            block[band] = _lerp(v0, v1, wz0, wz1) >= np.float32(0.5)
        out[o0:o1] = block
    return out


# ---------------------------------------------------------------------------------------------
# morphology
# ---------------------------------------------------------------------------------------------


def opening(diff: np.ndarray, size: int = 5) -> np.ndarray:
    """Binary opening with a ``size``^3 cube: min filter then max filter, edges replicated.

    Only the bounding box of ``diff`` (plus the filter reach) is processed; the result equals the
    whole-array filter."""
    from scipy.ndimage import maximum_filter, minimum_filter

    from nnint.backends.torch.zoom import nonzero_bbox

    diff = np.asarray(diff, np.uint8)
    out = np.zeros_like(diff)
    bb = nonzero_bbox(diff)
    if bb is None:
        return out
    r = size // 2
    lo = np.maximum(np.asarray(bb[0]) - r, 0)
    hi = np.minimum(np.asarray(bb[1]) + r, diff.shape)
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    sub = diff[sl]
    eroded = minimum_filter(sub, size=size, mode="nearest")
    out[sl] = maximum_filter(eroded, size=size, mode="nearest")
    return out


# ---------------------------------------------------------------------------------------------
# boxes
# ---------------------------------------------------------------------------------------------


def full_box(center: Sequence[int], box_size: Sequence[int]) -> Box3:
    """The patch-sized box ``[c - s//2, c - s//2 + s)`` around a centre."""
    lo = tuple(int(c) - int(s) // 2 for c, s in zip(center, box_size))
    hi = tuple(a + int(s) for a, s in zip(lo, box_size))
    return lo, hi  # type: ignore[return-value]


def shrunk_box(center: Sequence[int], box_size: Sequence[int], margin: Sequence[int]) -> Box3:
    """The full box shrunk by ``margin`` on every side (what a box is credited to cover)."""
    lo, hi = full_box(center, box_size)
    return (tuple(a + int(m) for a, m in zip(lo, margin)), tuple(b - int(m) for b, m in zip(hi, margin)))  # type: ignore[return-value]


def union_box(boxes: Sequence[Box3]) -> Box3:
    lo = tuple(int(min(b[0][i] for b in boxes)) for i in range(3))
    hi = tuple(int(max(b[1][i] for b in boxes)) for i in range(3))
    return lo, hi  # type: ignore[return-value]


def _slices(box: Box3, shape: Sequence[int]) -> tuple[slice, ...] | None:
    lo, hi = clip_box(box[0], box[1], shape)
    if any(b <= a for a, b in zip(lo, hi)):
        return None
    return tuple(slice(a, b) for a, b in zip(lo, hi))


def _covered(u: np.ndarray, center, box_size, margin) -> int:
    sl = _slices(shrunk_box(center, box_size, margin), u.shape)
    return 0 if sl is None else int(np.count_nonzero(u[sl]))


def _clear(u: np.ndarray, center, box_size, margin) -> None:
    sl = _slices(shrunk_box(center, box_size, margin), u.shape)
    if sl is not None:
        u[sl] = 0


def _best_of(u: np.ndarray, candidates: Sequence[Index3], box_size, margin) -> tuple[Index3 | None, int]:
    best, best_n = None, 0
    for c in candidates:
        n = _covered(u, c, box_size, margin)
        if n > best_n:
            best, best_n = c, n
    return best, best_n


def evenly_spaced_fallback(n_samples: int = 10) -> Fallback:
    """nnint's deterministic fallback: repeatedly take ``n_samples`` evenly spaced voxels of the
    uncovered set (in C order, first and last included), keep the one whose shrunk box covers
    most uncovered voxels (first on ties), clear its shrunk box."""

    def fallback(u: np.ndarray, box_size: Sequence[int], margin: Sequence[int]) -> list[Index3]:
        centres: list[Index3] = []
        while True:
            coords = np.argwhere(u)
            if len(coords) == 0:
                return centres
            k = min(n_samples, len(coords))
            pick = np.unique(np.round(np.linspace(0, len(coords) - 1, k)).astype(np.int64))
            cands = [tuple(int(v) for v in coords[i]) for i in pick]
            best, n = _best_of(u, cands, box_size, margin)
            if best is None:  # shrunk box empty (margin >= half the box): cover the voxel itself
                best = cands[0]
                u[best] = 0
            else:
                _clear(u, best, box_size, margin)
            centres.append(best)  # type: ignore[arg-type]

    return fallback


class OfficialRandomFallback:
    """The official fallback: draw ``n_samples`` uncovered voxels with ``rng.choice`` (a NumPy
    ``RandomState``-like object, e.g. ``np.random`` seeded identically to the official process),
    keep the best, clear its shrunk box, repeat until nothing is uncovered."""

    def __init__(self, rng, n_samples: int = 10, replace: bool = True) -> None:
        self.rng = rng
        self.n_samples = int(n_samples)
        self.replace = bool(replace)

    def __call__(self, u: np.ndarray, box_size: Sequence[int], margin: Sequence[int]) -> list[Index3]:
        centres: list[Index3] = []
        while True:
            coords = np.argwhere(u)
            if len(coords) == 0:
                return centres
            k = self.n_samples if self.replace else min(self.n_samples, len(coords))
            idx = self.rng.choice(len(coords), k, replace=self.replace)
            cands = [tuple(int(v) for v in coords[i]) for i in idx]
            best, n = _best_of(u, cands, box_size, margin)
            if best is None:
                best = cands[0]
                u[best] = 0
            else:
                _clear(u, best, box_size, margin)
            centres.append(best)  # type: ignore[arg-type]


def plan_boxes(
    diff: np.ndarray,
    box_size: Sequence[int],
    margin: Sequence[int],
    max_depth: int = 3,
    fallback: Fallback | None = None,
    stride: Sequence[int] | None = None,
    _depth: int = 0,
) -> list[Box3]:
    """Greedy cover of the binary map ``diff`` by boxes of ``box_size`` (§4.10).

    Candidate centres lie on a grid over ``diff``'s bounding box (stride ``max(1, round(extent / 4))``
    per axis, Python rounding; extent = max - min index) where ``diff`` is set, in C order. Each
    step picks the candidate whose shrunk box (``margin`` inside the full box) covers the most
    still-uncovered voxels (the first on ties), clears that shrunk box and drops candidates that
    are now covered; it stops when no candidate covers anything. Without any candidate the grid is
    refined (stride halved) up to ``max_depth``; voxels left uncovered go to ``fallback``
    (default: :func:`evenly_spaced_fallback`). The margin is capped at ``(box - 1) // 2`` so that
    a shrunk box always holds its centre (only matters for patches below 2 x margin). Returns the full boxes (array coordinates of
    ``diff``, possibly reaching outside it) in planning order.
    """
    u = np.array(diff, dtype=bool, copy=True)
    if not u.any():
        return []
    # a margin of half the box or more would leave empty shrunk boxes (nothing ever covered)
    margin = tuple(min(int(m), (int(s) - 1) // 2) for m, s in zip(margin, box_size))
    if fallback is None:
        fallback = evenly_spaced_fallback()
    from nnint.backends.torch.zoom import nonzero_bbox

    bb = nonzero_bbox(u)
    assert bb is not None
    mn, mx = np.asarray(bb[0]), np.asarray(bb[1]) - 1
    if stride is None:
        stride = [max(1, int(round(float(b - a) / 4))) for a, b in zip(mn, mx)]
    grids = [range(int(a), int(b) + 1, int(s)) for a, b, s in zip(mn, mx, stride)]
    cands = [(z, y, x) for z in grids[0] for y in grids[1] for x in grids[2] if u[z, y, x]]
    if not cands:
        if _depth < max_depth:
            half = [max(1, int(s) // 2) for s in stride]
            return plan_boxes(diff, box_size, margin, max_depth, fallback, half, _depth + 1)
        return [full_box(c, box_size) for c in fallback(u, box_size, margin)]
    centres: list[Index3] = []
    while cands and u.any():
        best, n = _best_of(u, cands, box_size, margin)
        if best is None:
            break
        _clear(u, best, box_size, margin)
        centres.append(best)
        cands = [c for c in cands if u[c]]
    if u.any():
        centres += fallback(u, box_size, margin)
    return [full_box(c, box_size) for c in centres]
