"""An intensity veto on the network's answer: drop voxels whose intensity the object does not have.

Sessions 15-18 found that nnint's small networks answer a prompt with a blob of a typical size
and read visible edges only weakly, so a blob often spills over the object's border into tissue
of a clearly different intensity. This module lets the image have a say after the forward pass:

1. Within the window, the network's own answer (logit difference ``d > 0``) is the object sample
   and the rest is the background sample. The image channel is lightly smoothed (3^3 mean) and
   binned over its 0.5-99.5 % range.
2. Per bin, the log-likelihood ratio ``log p(bin | object) - log p(bin | background)``
   (Laplace-smoothed histograms, clipped to ``+-clip``).
3. ``d' = min(d, d + weight * llr)``: a voxel can only *lose* support, never gain it. Where the
   object and its surroundings look alike (an atlas region inside grey matter) the ratio is about
   0 and the network's answer stands; where the blob covers tissue the object's voxels do not
   have, those voxels go. Steps 1-3 repeat ``rounds`` times, each time with the object sample
   taken from the vetoed answer (a purer sample).

Adding voxels by the same evidence was measured too and rejected (session 19, docs/training.md):
it fills whole organs well, but an object whose intensity continues into its neighbours (a
region of the brain, a lesion in same-looking tissue) grows into them without bound.

Off by default (the official package has no such step); nnint's own model cards turn it on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["intensity_veto", "valid_region"]


def valid_region(
    win_lo: Sequence[int], size: Sequence[int], shape: Sequence[int], patch: Sequence[int]
) -> tuple[slice, slice, slice]:
    """The part of a ``patch``-shaped network input that shows the image (not padding).

    The window ``[win_lo, win_lo + size)`` in image coordinates is resampled to ``patch``; voxels
    outside ``[0, shape)`` are padding. Returned as slices on the patch grid (rounded inwards)."""
    out = []
    for lo, n, s, p in zip(win_lo, size, shape, patch):
        a = max(0, -int(lo))
        b = min(int(n), int(s) - int(lo))
        f = int(p) / int(n)
        pa = min(int(p), math.ceil(a * f))
        pb = max(pa, math.floor(b * f))
        out.append(slice(pa, pb))
    return tuple(out)  # type: ignore[return-value]


def intensity_veto(
    image: torch.Tensor,
    logit: torch.Tensor,
    weight: float,
    *,
    valid: tuple[slice, slice, slice] | None = None,
    bins: int = 32,
    rounds: int = 2,
    clip: float = 4.0,
) -> torch.Tensor:
    """``logit`` (foreground minus background, patch-shaped) lowered where ``image`` (the same
    shape: the network input's first image channel, normalised) is unlike the predicted object;
    see the module doc.

    ``valid``: the slices that show the image (padding elsewhere is left out of the statistics
    and left unchanged). Returns a float32 tensor (``logit`` itself where nothing changes);
    ``logit`` is never modified in place."""
    d = logit.float()
    if weight <= 0:
        return d
    sl = valid if valid is not None else (slice(None),) * 3
    d_in = d[sl]
    if d_in.numel() == 0:
        return d
    smooth = F.avg_pool3d(image.float()[sl][None, None], 3, 1, 1, count_include_pad=False)[0, 0]
    flat = smooth.flatten()
    sample = flat[:: max(1, flat.numel() // 20000)]
    lo, hi = torch.quantile(sample, 0.005), torch.quantile(sample, 0.995)
    if not bool(hi > lo):
        return d  # a flat window: nothing to tell object from background
    idx = ((flat - lo) * (bins / (hi - lo))).clamp_(0, bins - 1).to(torch.int64)
    h_all = torch.bincount(idx, minlength=bins).float()
    base = d_in.flatten()
    out = base
    for _ in range(max(1, rounds)):
        fg = out > 0
        n_fg = int(fg.sum())
        if n_fg < 8 or fg.numel() - n_fg < 8:
            break
        h_fg = torch.bincount(idx, weights=fg.float(), minlength=bins).float()
        h_bg = h_all - h_fg + 1.0
        h_fg += 1.0
        llr = (torch.log(h_fg / h_fg.sum()) - torch.log(h_bg / h_bg.sum())).clamp_(-clip, clip)
        out = torch.minimum(base, base + float(weight) * llr[idx])
    result = d.clone()
    result[sl] = out.view_as(d_in)
    return result
