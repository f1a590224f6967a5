"""Windows, image normalisation, zoomed-out network inputs and the AutoZoom border test.

Everything here reproduces docs/reference-behaviour.md §4.1 and §4.5-4.6, but builds each input
from the original image and the prompt plan directly, touching only what the window needs:

* the image is normalised crop by crop (``(float32(x) - mean) / std``, the same element-wise
  float32 operations as the official whole-volume normalisation, so the same values);
* a zoomed-out window is never materialised: the trilinear downsampling reads only the image rows
  its taps use, and each prompt channel is rasterised, dilated and area-averaged only over the
  block its non-zero voxels influence.

Resampling conventions (PyTorch's, verified bit for bit against ``torch.nn.functional.interpolate``
in the tests):

* **linear** (align_corners=False, no antialias): ``scale = float32(L_in) / float32(L_out)``;
  ``src = float32(scale * (dst + 0.5) - 0.5)`` with one rounding (PyTorch uses a fused
  multiply-add), clamped at 0; ``i0 = floor(src)``, ``i1 = min(i0 + 1, L_in - 1)``,
  ``l1 = src - i0``, ``l0 = 1 - l1``. Three-dimensional interpolation is separable with the last
  axis innermost; each 1-D step is ``fma(a, l0, float32(b * l1))``, emulated in float64.
* **area** (adaptive average pooling): output ``o`` averages inputs
  ``[floor(o L / n), ceil((o + 1) L / n))``.
* **nearest** (legacy): ``src = min(floor(float32(o) * float32(L / n)), L - 1)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from nnint.errors import InvalidImageError

__all__ = [
    "MAX_ZOOM",
    "ZOOM_STEP",
    "ImageSource",
    "area_bins",
    "area_resample",
    "border_changed",
    "clip_box",
    "dilation_kernel_size",
    "image_statistics",
    "linear_resample",
    "linear_taps",
    "nearest_index",
    "nonzero_bbox",
    "round_to_nearest_odd",
    "scaled_size",
    "window",
    "zoomed_channel",
    "zoomed_image",
    "zoomed_nearest",
]

MAX_ZOOM = 4.0
ZOOM_STEP = 1.5

Index3 = tuple[int, int, int]


# ---------------------------------------------------------------------------------------------
# windows
# ---------------------------------------------------------------------------------------------


def window(center: Sequence[int], size: Sequence[int]) -> tuple[Index3, Index3]:
    """``[c - s//2, c + s//2 + s%2)`` per axis (may reach outside the image)."""
    lo = tuple(int(c) - int(s) // 2 for c, s in zip(center, size))
    hi = tuple(int(c) + int(s) // 2 + int(s) % 2 for c, s in zip(center, size))
    return lo, hi  # type: ignore[return-value]


def clip_box(lo: Sequence[int], hi: Sequence[int], shape: Sequence[int]) -> tuple[Index3, Index3]:
    """``[lo, hi)`` clipped to ``[0, shape)``; empty axes get ``hi == lo``."""
    clo = tuple(int(min(max(a, 0), s)) for a, s in zip(lo, shape))
    chi = tuple(int(max(min(b, s), c)) for b, s, c in zip(hi, shape, clo))
    return clo, chi  # type: ignore[return-value]


def scaled_size(patch: Sequence[int], zoom: float) -> Index3:
    """The window size for a zoom factor: ``round(patch * zoom)`` per axis (Python rounding)."""
    return tuple(int(round(p * zoom)) for p in patch)  # type: ignore[return-value]


def round_to_nearest_odd(x: float) -> int:
    """The ceiling if odd, else the floor if odd, else ``x + 1`` (nnInteractive's helper)."""
    up, down = int(np.ceil(x)), int(np.floor(x))
    if up % 2 == 1:
        return up
    if down % 2 == 1:
        return down
    return int(x) + 1


def dilation_kernel_size(zoom: float) -> int:
    """Max-filter size for point and scribble channels at a zoom factor (1 = none)."""
    return round_to_nearest_odd(2.0 * zoom - 1.0)


# ---------------------------------------------------------------------------------------------
# image statistics and normalised crops
# ---------------------------------------------------------------------------------------------


def _as_czyx(array: np.ndarray) -> np.ndarray:
    if array.ndim == 3:
        return array[None]
    if array.ndim == 4:
        return array
    raise InvalidImageError(f"image must be 3D (z, y, x) or 4D (c, z, y, x), got shape {array.shape}")


def _z_chunks(n: int, slab: int):
    for z0 in range(0, n, slab):
        yield z0, min(n, z0 + slab)


def _slab(array: np.ndarray, voxel_budget: int = 1 << 24) -> int:
    per_z = int(np.prod(array.shape[-2:])) * max(1, array.shape[0] if array.ndim == 4 else 1)
    return max(1, voxel_budget // max(1, per_z))


def nonzero_bbox(array: np.ndarray) -> tuple[Index3, Index3] | None:
    """Half-open bounding box of the voxels that are non-zero in any channel (chunked over z)."""
    arr = _as_czyx(array)
    _, Z, Y, X = arr.shape
    any_z = np.zeros(Z, bool)
    any_y = np.zeros(Y, bool)
    any_x = np.zeros(X, bool)
    for z0, z1 in _z_chunks(Z, _slab(arr)):
        nz = np.any(arr[:, z0:z1] != 0, axis=0)
        any_z[z0:z1] = nz.any(axis=(1, 2))
        any_y |= nz.any(axis=(0, 2))
        any_x |= nz.any(axis=(0, 1))
    if not any_z.any():
        return None
    lo, hi = [], []
    for a in (any_z, any_y, any_x):
        idx = np.flatnonzero(a)
        lo.append(int(idx[0]))
        hi.append(int(idx[-1]) + 1)
    return tuple(lo), tuple(hi)  # type: ignore[return-value]


def _check_finite(arr: np.ndarray) -> None:
    if arr.dtype.kind != "f":
        return
    for z0, z1 in _z_chunks(arr.shape[1], _slab(arr)):
        if not np.isfinite(arr[:, z0:z1]).all():
            raise InvalidImageError("image has NaN or infinite voxels; replace them (e.g. np.nan_to_num) first")


def image_statistics(array: np.ndarray) -> tuple[float, float, tuple[Index3, Index3]]:
    """``(mean, std, bbox)`` exactly as the official preprocessing (§4.1): channel 0 as float32,
    inside the bounding box of non-zero voxels, mean and *unbiased* std in torch float32.

    The float32 values of the bbox are placed into an uninitialised full-size float32 array (only
    the bbox pages are ever touched, so only they use memory) and reduced through a view with the
    full-volume strides - the memory layout, hence the summation order, of the official code.
    Raises InvalidImageError for NaN/inf, all-zero images and a zero or non-finite std.
    """
    if array.dtype.kind not in "iuf":
        raise InvalidImageError(f"image dtype {array.dtype} is not an intensity type")
    arr = _as_czyx(array)
    _check_finite(arr)
    bbox = nonzero_bbox(arr)
    if bbox is None:
        raise InvalidImageError("image is all zero; there is nothing to segment")
    (z0, y0, x0), (z1, y1, x1) = bbox
    ch0 = arr[0]
    if ch0.dtype == np.float32 and ch0.flags.c_contiguous:
        full = ch0
    else:
        full = np.empty(ch0.shape, np.float32)  # pages outside the bbox are never touched
        for a, b in _z_chunks(z1 - z0, _slab(arr)):
            full[z0 + a : z0 + b, y0:y1, x0:x1] = ch0[z0 + a : z0 + b, y0:y1, x0:x1]
    view = torch.from_numpy(full)[z0:z1, y0:y1, x0:x1]
    mean = float(view.mean())
    std = float(view.std()) if view.numel() > 1 else float("nan")
    del view, full
    if not np.isfinite(mean) or not np.isfinite(std) or std == 0.0:
        raise InvalidImageError(
            "image intensities inside the non-zero region are constant; it cannot be z-score normalised"
        )
    return mean, std, bbox


class ImageSource:
    """The original image plus its normalisation; serves normalised float32 crops on demand.

    No normalised copy of the volume is kept: crops are converted and normalised when read.
    """

    def __init__(self, array: np.ndarray, mean: float, std: float) -> None:
        self.array = _as_czyx(array)
        self.mean = float(mean)
        self.std = float(std)

    @property
    def shape(self) -> Index3:
        return tuple(int(s) for s in self.array.shape[1:])  # type: ignore[return-value]

    @property
    def channels(self) -> int:
        return int(self.array.shape[0])

    def normalise(self, values: np.ndarray) -> np.ndarray:
        """``(float32(x) - mean) / std`` in float32 (the same IEEE operations as the official torch code)."""
        t = np.asarray(values, dtype=np.float32)
        return (t - np.float32(self.mean)) / np.float32(self.std)

    def crop(self, lo: Sequence[int], hi: Sequence[int]) -> np.ndarray:
        """Normalised float32 ``[C, *size]`` for ``[lo, hi)``; zero (normalised space) outside."""
        size = tuple(int(b) - int(a) for a, b in zip(lo, hi))
        out = np.zeros((self.channels, *size), dtype=np.float32)
        clo, chi = clip_box(lo, hi, self.shape)
        if any(b <= a for a, b in zip(clo, chi)):
            return out
        src = self.array[(slice(None), *(slice(a, b) for a, b in zip(clo, chi)))]
        out[(slice(None), *(slice(a - o, b - o) for a, b, o in zip(clo, chi, lo)))] = self.normalise(src)
        return out

    def gather(self, zi: np.ndarray, yi: np.ndarray, xi: np.ndarray) -> np.ndarray:
        """Normalised float32 ``[C, len(zi), len(yi), len(xi)]`` at image indices (outer product);
        indices outside the image read 0."""
        idx, valid, ranges = [], [], []
        for v, s in zip((zi, yi, xi), self.shape):
            v = np.asarray(v, np.int64)
            ok = (v >= 0) & (v < s)
            c = np.clip(v, 0, s - 1)
            a = int(c.min())
            idx.append(c - a)
            ranges.append(slice(a, int(c.max()) + 1))
            valid.append(ok)
        vals = self.array[(slice(None), *ranges)]  # a view of the tapped range
        for ax in range(3):  # np.take copies whole rows: much faster than an outer-product index
            vals = np.take(vals, idx[ax], axis=ax + 1)
        vals = self.normalise(vals)
        mask = valid[0][:, None, None] & valid[1][None, :, None] & valid[2][None, None, :]
        if not mask.all():
            vals = np.where(mask[None], vals, np.float32(0.0))
        return vals


# ---------------------------------------------------------------------------------------------
# resampling conventions
# ---------------------------------------------------------------------------------------------


def linear_taps(in_len: int, out_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """PyTorch's linear taps (align_corners=False): ``(i0, i1, l0, l1)`` per output index."""
    scale = np.float32(in_len) / np.float32(out_len)
    dst = np.arange(out_len, dtype=np.float64)
    src = (np.float64(scale) * (dst + 0.5) - 0.5).astype(np.float32)  # fused multiply-add: one rounding
    src = np.maximum(src, np.float32(0.0))
    i0 = src.astype(np.int64)
    l1 = (src - i0.astype(np.float32)).astype(np.float32)
    l1 = np.clip(l1, np.float32(0.0), np.float32(1.0))
    l0 = (np.float32(1.0) - l1).astype(np.float32)
    i1 = np.where(i0 < in_len - 1, i0 + 1, i0)
    return i0, i1, l0, l1


def _lerp(a: np.ndarray, b: np.ndarray, l0: np.ndarray, l1: np.ndarray) -> np.ndarray:
    """``fma(a, l0, float32(b * l1))`` in float32, emulated in float64."""
    bl = (b * l1).astype(np.float32)
    return (a.astype(np.float64) * l0.astype(np.float64) + bl).astype(np.float32)


def _lerp_axis(x: np.ndarray, axis: int, taps) -> np.ndarray:
    i0, i1, l0, l1 = taps
    shape = [1] * x.ndim
    shape[axis] = -1
    return _lerp(np.take(x, i0, axis=axis), np.take(x, i1, axis=axis), l0.reshape(shape), l1.reshape(shape))


def linear_resample(x: np.ndarray, out_shape: Sequence[int]) -> np.ndarray:
    """Trilinear resampling of a 3-D float32 array, bit-identical to
    ``F.interpolate(mode="trilinear", align_corners=False)`` (for reference and small inputs)."""
    x = np.asarray(x, np.float32)
    for ax in (2, 1, 0):
        x = _lerp_axis(x, ax, linear_taps(x.shape[ax], int(out_shape[ax])))
    return x


def area_bins(in_len: int, out_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Adaptive-average-pooling bins: ``start = floor(o L / n)``, ``end = ceil((o + 1) L / n)``."""
    o = np.arange(out_len, dtype=np.int64)
    return (o * in_len) // out_len, ((o + 1) * in_len + out_len - 1) // out_len


def _take(x: np.ndarray, idx: np.ndarray, axis: int) -> np.ndarray:
    return np.take(x, idx, axis=axis)


def _area_sum_axis(x: np.ndarray, axis: int, start: np.ndarray, end: np.ndarray, offset: int) -> np.ndarray:
    """Sum ``x`` (float32) along ``axis`` over bins ``[start, end)`` (indices relative to ``offset``)."""
    n_in = x.shape[axis]
    length = end - start
    out = None
    shape = [1] * x.ndim
    shape[axis] = -1
    for j in range(int(length.max())):
        v = _take(x, np.minimum(start + j - offset, n_in - 1), axis)
        if (j >= length).any():
            v = v * (j < length).astype(np.float32).reshape(shape)
        out = v if out is None else out + v
    assert out is not None
    return out


def _half_divide(s: torch.Tensor, bins) -> torch.Tensor:
    """float16 ``s / kd / kh / kw`` with a float16 rounding after each division (PyTorch's CPU
    float16 adaptive average pooling)."""
    for ax in range(3):
        st, en = bins[ax]
        shape = [1, 1, 1]
        shape[ax] = -1
        s = s / torch.from_numpy((en - st).astype(np.float16)).view(shape)
    return s


def _area_block(
    x: np.ndarray, bins: Sequence[tuple[np.ndarray, np.ndarray]], offsets: Sequence[int], mode: str = "float"
) -> torch.Tensor:
    """Area-average a block ``x`` whose voxel 0 is input index ``offsets``; ``bins`` are the
    (start, end) of the outputs wanted per axis.

    ``mode``: ``"float"`` sums in float32 and divides by the bin volume (float32 result);
    ``"half"`` reproduces PyTorch's CPU float16 kernel: a float16 running sum in (d, h, w) order,
    then three float16 divisions by kd, kh, kw (float16 result); ``"binary"`` gives the same result
    as ``"half"`` for 0/1 inputs (whose running sums are exact small integers), faster.
    """
    if mode == "half":
        xs = np.asarray(x, dtype=np.float16)
        (sd, ed), (sh, eh), (sw, ew) = bins
        ld, lh, lw = ed - sd, eh - sh, ew - sw
        acc = torch.zeros((len(sd), len(sh), len(sw)), dtype=torch.float16)
        for jd in range(int(ld.max())):
            xd = _take(xs, np.minimum(sd + jd - offsets[0], xs.shape[0] - 1), 0)
            md = jd < ld
            for jh in range(int(lh.max())):
                xdh = _take(xd, np.minimum(sh + jh - offsets[1], xs.shape[1] - 1), 1)
                mh = jh < lh
                for jw in range(int(lw.max())):
                    v = _take(xdh, np.minimum(sw + jw - offsets[2], xs.shape[2] - 1), 2)
                    mw = jw < lw
                    if not (md.all() and mh.all() and mw.all()):
                        m = md[:, None, None] & mh[None, :, None] & mw[None, None, :]
                        v = np.where(m, v, np.float16(0))
                    acc = acc + torch.from_numpy(np.ascontiguousarray(v))
        return _half_divide(acc, bins)
    s = np.asarray(x, dtype=np.float32)
    for ax in (2, 1, 0):
        s = _area_sum_axis(s, ax, *bins[ax], offsets[ax])
    if mode == "binary":
        return _half_divide(torch.from_numpy(s).to(torch.float16), bins)
    counts = [(e - st).astype(np.float32) for st, e in bins]
    vol = counts[0].reshape(-1, 1, 1) * counts[1].reshape(1, -1, 1) * counts[2].reshape(1, 1, -1)
    return torch.from_numpy(s / vol)


def area_resample(x: torch.Tensor, out_shape: Sequence[int], mode: str = "float") -> torch.Tensor:
    """Area (adaptive average) downsampling of a 3-D tensor; see :func:`_area_block` for ``mode``
    (``"half"`` equals ``F.interpolate(x.half(), mode="area")`` on the CPU, bit for bit)."""
    x = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    bins = [area_bins(x.shape[a], int(out_shape[a])) for a in range(3)]
    return _area_block(x, bins, (0, 0, 0), mode)


def nearest_index(in_len: int, out_len: int) -> np.ndarray:
    """PyTorch's legacy nearest source index for each output index."""
    scale = np.float32(in_len) / np.float32(out_len)
    src = np.floor(np.arange(out_len, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(src, in_len - 1)


# ---------------------------------------------------------------------------------------------
# zoomed-out inputs
# ---------------------------------------------------------------------------------------------


def zoomed_image(
    source: ImageSource, win_lo: Sequence[int], size: Sequence[int], patch: Sequence[int], z_chunk: int = 16
) -> torch.Tensor:
    """The normalised image over the window ``[win_lo, win_lo + size)`` (zero outside the image),
    trilinearly resampled to ``patch``: float32 ``[C, *patch]``. Reads only the tapped rows."""
    taps = [linear_taps(int(s), int(p)) for s, p in zip(size, patch)]
    out = np.empty((source.channels, *(int(p) for p in patch)), np.float32)
    ty, tx = taps[1], taps[2]
    ny, nx = len(ty[0]), len(tx[0])
    yi = np.concatenate([ty[0], ty[1]]) + int(win_lo[1])
    xi = np.concatenate([tx[0], tx[1]]) + int(win_lo[2])
    yt = (np.arange(ny), np.arange(ny, 2 * ny), ty[2], ty[3])
    xt = (np.arange(nx), np.arange(nx, 2 * nx), tx[2], tx[3])
    tz = taps[0]
    for o0 in range(0, len(tz[0]), z_chunk):
        o1 = min(len(tz[0]), o0 + z_chunk)
        n = o1 - o0
        zi = np.concatenate([tz[0][o0:o1], tz[1][o0:o1]]) + int(win_lo[0])
        block = source.gather(zi, yi, xi)  # [C, 2n, 2ny, 2nx]
        block = _lerp_axis(block, 3, xt)
        block = _lerp_axis(block, 2, yt)
        block = _lerp(block[:, :n], block[:, n:], tz[2][o0:o1].reshape(1, -1, 1, 1), tz[3][o0:o1].reshape(1, -1, 1, 1))
        out[:, o0:o1] = block
    return torch.from_numpy(out)


def zoomed_nearest(mask: np.ndarray, win_lo: Sequence[int], size: Sequence[int], patch: Sequence[int]) -> np.ndarray:
    """A mask over the window (0 outside the image) nearest-resampled to ``patch`` (uint8)."""
    idx, valid = [], []
    for a in range(3):
        g = nearest_index(int(size[a]), int(patch[a])) + int(win_lo[a])
        ok = (g >= 0) & (g < mask.shape[a])
        idx.append(np.clip(g, 0, mask.shape[a] - 1))
        valid.append(ok)
    vals = mask[np.ix_(*idx)]
    m = valid[0][:, None, None] & valid[1][None, :, None] & valid[2][None, None, :]
    return np.where(m, vals, 0).astype(np.uint8)


def _affected(lo: int, hi: int, start: np.ndarray, end: np.ndarray) -> tuple[int, int]:
    """Outputs whose bins intersect ``[lo, hi)``: ``[o0, o1)``."""
    hit = np.flatnonzero((start < hi) & (end > lo))
    if hit.size == 0:
        return 0, 0
    return int(hit[0]), int(hit[-1]) + 1


def zoomed_channel(
    read,
    nz_lo: Sequence[int],
    nz_hi: Sequence[int],
    size: Sequence[int],
    patch: Sequence[int],
    kernel: int = 1,
    mode: str = "half",
) -> torch.Tensor:
    """One channel over a window of ``size`` (window coordinates), optionally max-dilated with a
    ``kernel``^3 filter (edge-replicated at the window border), area-downsampled to ``patch``.

    ``read(lo, hi)`` returns the channel's values (NumPy) over window coordinates ``[lo, hi)``
    (inside ``[0, size)``); ``[nz_lo, nz_hi)`` (window coordinates) bounds its non-zero voxels.
    Only the block those voxels influence is read and computed. ``mode``: see :func:`_area_block`
    (``"half"`` and ``"binary"`` return float16, ``"float"`` float32).
    """
    out = torch.zeros(tuple(int(p) for p in patch), dtype=torch.float32 if mode == "float" else torch.float16)
    r = (int(kernel) - 1) // 2
    bins = [area_bins(int(s), int(p)) for s, p in zip(size, patch)]
    o_lo, o_hi, a_lo, a_hi = [], [], [], []
    for ax in range(3):
        lo = max(0, int(nz_lo[ax]) - r)
        hi = min(int(size[ax]), int(nz_hi[ax]) + r)
        if hi <= lo:
            return out
        o0, o1 = _affected(lo, hi, *bins[ax])
        if o1 <= o0:
            return out
        o_lo.append(o0)
        o_hi.append(o1)
        a_lo.append(int(bins[ax][0][o0]))
        a_hi.append(int(bins[ax][1][o1 - 1]))
    if r > 0:
        s_lo = [max(0, a - r) for a in a_lo]
        s_hi = [min(int(s), b + r) for b, s in zip(a_hi, size)]
        block = torch.from_numpy(np.asarray(read(s_lo, s_hi), dtype=np.float32))[None, None]
        pad = []
        for ax in (2, 1, 0):  # F.pad order: last axis first
            pad += [r - (a_lo[ax] - s_lo[ax]), r - (s_hi[ax] - a_hi[ax])]
        if any(pad):
            block = F.pad(block, pad, mode="replicate")
        block = F.max_pool3d(block, kernel_size=int(kernel), stride=1)[0, 0].numpy()
    else:
        block = read(a_lo, a_hi)
    sub_bins = [(b[0][o0:o1], b[1][o0:o1]) for b, o0, o1 in zip(bins, o_lo, o_hi)]
    out[tuple(slice(a, b) for a, b in zip(o_lo, o_hi))] = _area_block(block, sub_bins, a_lo, mode)
    return out


def border_changed(
    pred: torch.Tensor,
    prev: torch.Tensor,
    abs_threshold=1500.0,
    min_threshold=100.0,
    rel_threshold: float = 0.2,
    prev_sum_fp16: bool = False,
) -> bool:
    """The AutoZoom border test (§4.6): on the six faces (axis 0 first/last, axis 1, axis 2) compare
    the new binary prediction with the previous segmentation at the same resolution. A face
    triggers when ``n_diff > abs_threshold`` or ``n_diff > min_threshold and rel > rel_threshold``
    with ``rel = max(n_prev, n_cur) / max(min(n_prev, n_cur), 1e-5) - 1``. Thresholds are numbers
    or one per axis (for the faces orthogonal to it). ``prev_sum_fp16`` rounds ``n_prev`` to
    float16 like nnInteractive 2.5.0 (2.6.0 counts exactly)."""
    pred = np.asarray(pred.cpu() if isinstance(pred, torch.Tensor) else pred) != 0
    prev = np.asarray(prev.cpu() if isinstance(prev, torch.Tensor) else prev) != 0
    abs_t = tuple(abs_threshold) if isinstance(abs_threshold, (tuple, list)) else (abs_threshold,) * 3
    min_t = tuple(min_threshold) if isinstance(min_threshold, (tuple, list)) else (min_threshold,) * 3
    for ax in range(3):
        for idx in (0, pred.shape[ax] - 1):
            p = np.take(pred, idx, axis=ax)
            q = np.take(prev, idx, axis=ax)
            n_cur = float(np.count_nonzero(p))
            n_prev = float(np.count_nonzero(q))
            if prev_sum_fp16:
                n_prev = float(np.float16(n_prev))
            n_diff = float(np.count_nonzero(p != q))
            rel = max(n_prev, n_cur) / max(min(n_prev, n_cur), 1e-5) - 1.0
            if n_diff > abs_t[ax] or (n_diff > min_t[ax] and rel > rel_threshold):
                return True
    return False


# ---------------------------------------------------------------------------------------------
# the network input for one window
# ---------------------------------------------------------------------------------------------


class NetworkInput:
    """One forward pass worth of input and what the AutoZoom test compares against.

    ``x``: float32 tensor ``[1, C_img + C_int, *patch]``; ``prev``: uint8 array ``patch`` (the previous
    segmentation at network resolution); ``win_lo``/``win_hi``: the window in image coordinates;
    ``size``: the window size ``P``; ``zoom``: the zoom factor.
    """

    __slots__ = ("x", "prev", "win_lo", "win_hi", "size", "zoom")

    def __init__(self, x, prev, win_lo, win_hi, size, zoom) -> None:
        self.x, self.prev, self.win_lo, self.win_hi, self.size, self.zoom = x, prev, win_lo, win_hi, size, zoom


def mask_crop(mask: np.ndarray, lo: Sequence[int], hi: Sequence[int]) -> np.ndarray:
    """``mask[lo:hi]`` with zeros outside the image (uint8)."""
    size = tuple(int(b) - int(a) for a, b in zip(lo, hi))
    out = np.zeros(size, np.uint8)
    clo, chi = clip_box(lo, hi, mask.shape)
    if all(b > a for a, b in zip(clo, chi)):
        out[tuple(slice(a - o, b - o) for a, b, o in zip(clo, chi, lo))] = mask[
            tuple(slice(a, b) for a, b in zip(clo, chi))
        ]
    return out


def build_network_input(
    source: ImageSource,
    plan,
    mask: np.ndarray,
    center: Sequence[int],
    zoom: float,
    patch: Sequence[int],
    prev_channel: int,
    dilate_channels: Sequence[int],
    mask_bbox: tuple[Index3, Index3] | None = None,
) -> NetworkInput:
    """The network input for the window around ``center`` at ``zoom`` (§4.5).

    ``plan``: the :class:`~.rasterise.RasterPlan` of the active prompts; ``mask``: the object's
    current mask (the prev_seg channel); ``mask_bbox``: its non-zero bbox if known (saves a scan).
    """
    from nnint.backends.torch.rasterise import feed, rasterise, rasterise_written

    patch = tuple(int(p) for p in patch)
    size = scaled_size(patch, zoom)
    win_lo, win_hi = window(center, size)
    n_img, n_int = source.channels, plan.num_channels
    x = np.empty((1, n_img + n_int, *patch), dtype=np.float32)
    if size == patch:
        x[0, :n_img] = source.crop(win_lo, win_hi)
        stored, written = rasterise_written(plan, win_lo, win_hi)
        for ch in range(n_int):
            x[0, n_img + ch] = feed(stored[ch], plan.intensity) if ch in written else 0.0
        prev = mask_crop(mask, win_lo, win_hi)
        x[0, n_img + prev_channel] = prev
        return NetworkInput(torch.from_numpy(x), prev, win_lo, win_hi, size, zoom)

    k = dilation_kernel_size(zoom)
    x[0, :n_img] = zoomed_image(source, win_lo, size, patch).numpy()
    for ch in range(n_int):
        if ch == prev_channel:
            continue
        bb = plan.channel_bbox(ch)
        if bb is None:
            x[0, n_img + ch] = 0.0
            continue
        nz_lo = [a - w for a, w in zip(bb[0], win_lo)]
        nz_hi = [b - w for b, w in zip(bb[1], win_lo)]

        def read(lo, hi, ch=ch):
            return rasterise(plan, [a + w for a, w in zip(lo, win_lo)], [b + w for b, w in zip(hi, win_lo)], [ch])[0]

        kern = k if (ch in dilate_channels and k > 1) else 1
        area = zoomed_channel(read, nz_lo, nz_hi, size, patch, kern, "half").numpy()
        x[0, n_img + ch] = feed(area, plan.intensity)
    # prev_seg: area-averaged, not decayed
    if mask_bbox is None:
        mask_bbox = _mask_bbox_in(mask, win_lo, win_hi)
    if mask_bbox is None:
        x[0, n_img + prev_channel] = 0.0
    else:
        nz_lo = [a - w for a, w in zip(mask_bbox[0], win_lo)]
        nz_hi = [b - w for b, w in zip(mask_bbox[1], win_lo)]

        def read_mask(lo, hi):
            return mask_crop(mask, [a + w for a, w in zip(lo, win_lo)], [b + w for b, w in zip(hi, win_lo)])

        x[0, n_img + prev_channel] = zoomed_channel(read_mask, nz_lo, nz_hi, size, patch, 1, "binary").numpy()
    prev = zoomed_nearest(mask, win_lo, size, patch)
    return NetworkInput(torch.from_numpy(x), prev, win_lo, win_hi, size, zoom)


def _mask_bbox_in(mask: np.ndarray, lo: Sequence[int], hi: Sequence[int]) -> tuple[Index3, Index3] | None:
    """Bounding box (image coordinates) of the mask's voxels inside ``[lo, hi)``."""
    clo, chi = clip_box(lo, hi, mask.shape)
    if any(b <= a for a, b in zip(clo, chi)):
        return None
    sub = mask[tuple(slice(a, b) for a, b in zip(clo, chi))]
    bb = nonzero_bbox(sub)
    if bb is None:
        return None
    return (tuple(a + o for a, o in zip(bb[0], clo)), tuple(b + o for b, o in zip(bb[1], clo)))  # type: ignore[return-value]
