"""Magnified windows: a small object answered at the scale the network answers best.

nnInteractive's AutoZoom only ever zooms *out* (window larger than the patch). A network that
has learnt a typical object size behind a click answers a 3-voxel speck with a blob of that size;
shown the same speck magnified 3x, it answers at the speck's scale (docs/training.md, session 18:
dev targets under 50 voxels, first click 0.04 -> 0.29 Dice, after 5 clicks 0.27 -> 0.70). With the
engine option ``magnify`` the ladder starts *below* zoom 1: the window is ``patch * zoom`` voxels
of the image, trilinearly upsampled to the patch, and AutoZoom steps out from there as usual.

A magnified input is built as if the window were an image of its own at the finer grid:

* the image: the normalised crop, trilinearly resampled (:func:`zoom.zoomed_image`);
* prompts: the raster plan's writes moved onto the fine grid (:func:`magnified_plan`): a point
  keeps its footprint in *patch* voxels (as in training), a box covers the fine voxels of its
  extent, scribbles and lassos are nearest-resampled; decay and renormalisation are unchanged;
* the previous mask: nearest-resampled.

The answer goes back to the image grid by area averaging (a voxel is in the object when at least
half of its fine voxels are, :func:`shrink`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from nnint.backends.torch import zoom as _zoom
from nnint.backends.torch.rasterise import RasterOp, RasterPlan, feed, point_kernel, rasterise_written

__all__ = ["build_magnified_input", "magnified_plan", "shrink"]


def _fine_index(native: np.ndarray | int, win_lo: int, scale: float) -> np.ndarray:
    """The fine voxel that holds the centre of each native voxel."""
    return np.floor((np.asarray(native) - win_lo + 0.5) * scale).astype(np.int64)


def magnified_plan(
    plan: RasterPlan, win_lo: Sequence[int], size: Sequence[int], patch: Sequence[int], point_radius: float
) -> RasterPlan:
    """``plan``'s writes on the fine grid of the window ``[win_lo, win_lo + size)`` magnified to
    ``patch`` (fine coordinates ``[0, patch)``). Writes that miss the window stay as empty ops, so
    their renormalisations still apply."""
    scale = [p / s for p, s in zip(patch, size)]
    kernel = point_kernel(point_radius)
    ks = kernel.shape[0]
    ops: list[RasterOp] = []

    def clipped(lo, hi):
        lo = tuple(int(min(max(a, 0), p)) for a, p in zip(lo, patch))
        hi = tuple(int(max(min(b, p), a)) for a, b, p in zip(lo, hi, patch))
        return lo, hi

    for op in plan.ops:
        if op.values is not None:  # a point: re-stamp its kernel around the fine centre
            peak = np.unravel_index(int(np.argmax(op.values)), op.values.shape)
            centre = [int(_fine_index(a + k, w, s)) for a, k, w, s in zip(op.lo, peak, win_lo, scale)]
            wlo = [c - ks // 2 for c in centre]
            lo, hi = clipped(wlo, [c + ks // 2 + ks % 2 for c in centre])
            sl = tuple(slice(a - w, b - w) for a, b, w in zip(lo, hi, wlo))
            values = (kernel[sl] * float(op.value)).astype(np.float16)
            ops.append(RasterOp(op.channel, "max", lo, hi, op.value, values=values, renorm=op.renorm))
        elif op.mode == "set":  # a box: the fine voxels of its extent
            lo = [int(round((a - w) * s)) for a, w, s in zip(op.lo, win_lo, scale)]
            hi = [max(a + 1, int(round((b - w) * s))) for a, b, w, s in zip(lo, op.hi, win_lo, scale)]
            lo, hi = clipped(lo, hi)
            ops.append(RasterOp(op.channel, "set", lo, hi, op.value, renorm=op.renorm))
        else:  # a scribble or lasso crop: nearest resampling
            idx, lo, hi = [], [], []
            for ax in range(3):
                # the same nearest rule as the prev_seg channel (zoom.zoomed_nearest)
                nat = _zoom.nearest_index(int(size[ax]), int(patch[ax])) + int(win_lo[ax])
                inside = np.flatnonzero((nat >= op.lo[ax]) & (nat < op.hi[ax]))
                if inside.size == 0:
                    lo.append(0)
                    hi.append(0)
                    idx.append(np.zeros(0, np.int64))
                    continue
                lo.append(int(inside[0]))
                hi.append(int(inside[-1]) + 1)
                idx.append(nat[inside[0] : inside[-1] + 1] - op.lo[ax])
            assert op.mask is not None
            mask = (
                np.ascontiguousarray(op.mask[np.ix_(*idx)])
                if all(len(i) for i in idx)
                else np.zeros((0, 0, 0), np.uint8)
            )
            ops.append(RasterOp(op.channel, "max", tuple(lo), tuple(hi), op.value, mask=mask, renorm=op.renorm))
    return RasterPlan(tuple(ops), plan.intensity, plan.num_channels, tuple(int(p) for p in patch))


def build_magnified_input(
    source: _zoom.ImageSource,
    plan: RasterPlan,
    mask: np.ndarray,
    center: Sequence[int],
    zoom: float,
    patch: Sequence[int],
    prev_channel: int,
    point_radius: float,
) -> _zoom.NetworkInput:
    """The network input for the window around ``center`` at a zoom factor below 1."""
    patch = tuple(int(p) for p in patch)
    size = _zoom.scaled_size(patch, zoom)
    win_lo, win_hi = _zoom.window(center, size)
    n_img = source.channels
    x = np.empty((1, n_img + plan.num_channels, *patch), dtype=np.float32)
    x[0, :n_img] = _zoom.zoomed_image(source, win_lo, size, patch).numpy()
    fine = magnified_plan(plan, win_lo, size, patch, point_radius)
    stored, written = rasterise_written(fine, (0, 0, 0), patch)
    for ch in range(plan.num_channels):
        x[0, n_img + ch] = feed(stored[ch], plan.intensity) if ch in written else 0.0
    prev = _zoom.zoomed_nearest(mask, win_lo, size, patch)
    x[0, n_img + prev_channel] = prev
    return _zoom.NetworkInput(torch.from_numpy(x), prev, win_lo, win_hi, size, zoom)


def shrink(pred: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """A fine (patch-shaped) binary prediction back on the window's ``size`` grid: a voxel is set
    when at least half of the fine voxels it covers are (uint8)."""
    frac = _zoom.area_resample(torch.from_numpy(np.asarray(pred, dtype=np.float32)), size, "float").numpy()
    return (frac >= 0.5).astype(np.uint8)
