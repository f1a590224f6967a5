"""Overview pictures: three orthogonal slices through an object with its mask and prompts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nnint.image import Image
from nnint.prompts import Box, InitialMask, Point, Prompt

_AXES = ("axial (z)", "coronal (y)", "sagittal (x)")


def _centre(mask: np.ndarray, prompts: Sequence[Prompt], shape) -> tuple[int, int, int]:
    """Slice through the mask's centre of mass, else the first prompt, else the volume centre."""
    if mask.any():
        return tuple(int(round(c)) for c in np.argwhere(mask).mean(0))  # type: ignore[return-value]
    for p in prompts:
        lo, hi = p.bbox
        return tuple((a + b - 1) // 2 for a, b in zip(lo, hi))  # type: ignore[return-value]
    return tuple(s // 2 for s in shape)  # type: ignore[return-value]


def _window(array: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Grey-level window from the neighbourhood of the object (its bbox grown by a quarter of its
    size on each side), so air or empty background does not wash out the contrast that matters,
    narrowed to a few times the object's own intensity spread around it (an organ 50 HU brighter
    than its neighbours stays visible next to air at -1000 HU)."""
    if mask.any():
        nz = np.argwhere(mask)
        lo, hi = nz.min(0), nz.max(0) + 1
        grow = (hi - lo) // 4 + 2
        sl = tuple(slice(max(0, a - g), min(s, b + g)) for a, b, g, s in zip(lo, hi, grow, array.shape))
        sample = array[sl].astype(np.float32)
    else:
        sample = array[:: max(1, array.shape[0] // 32)].astype(np.float32)
    lo_v, hi_v = np.percentile(sample, (1.0, 99.0))
    if mask.any():
        a, b = np.percentile(array[mask.astype(bool)].astype(np.float32), (5.0, 95.0))
        w = max(float(b - a), 1e-3 * float(hi_v - lo_v))
        lo_v, hi_v = max(lo_v, a - 1.5 * w), min(hi_v, b + 1.5 * w)
    return float(lo_v), float(hi_v if hi_v > lo_v else lo_v + 1)


def write_overview(
    image: Image,
    mask: np.ndarray,
    prompts: Sequence[Prompt],
    path: str | Path,
    *,
    title: str = "",
    centre: tuple[int, int, int] | None = None,
) -> None:
    """Write a PNG with axial, coronal and sagittal slices through the object.

    The mask is drawn as a translucent fill with an outline; positive prompts in green, negative in
    red (points as markers on slices within 2 voxels, boxes as rectangles where they cut the slice,
    scribble/lasso voxels as dots). Pixel aspect follows the voxel spacing.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arr = image.array
    mask = np.asarray(mask).astype(bool)
    c = centre or _centre(mask, prompts, arr.shape)
    vmin, vmax = _window(arr, mask)
    sz, sy, sx = image.spacing_zyx
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.4))
    for axis, ax in enumerate(axes):
        sl = [slice(None)] * 3
        sl[axis] = c[axis]
        img2d = arr[tuple(sl)]
        m2d = mask[tuple(sl)]
        row_sp, col_sp = [(sy, sx), (sz, sx), (sz, sy)][axis]
        ax.imshow(img2d, cmap="gray", vmin=vmin, vmax=vmax, aspect=row_sp / col_sp, interpolation="nearest")
        if m2d.any():
            overlay = np.zeros((*m2d.shape, 4))
            overlay[m2d] = (1.0, 0.8, 0.0, 0.35)
            ax.imshow(overlay, aspect=row_sp / col_sp, interpolation="nearest")
            ax.contour(m2d.astype(float), levels=[0.5], colors=["#ffcc00"], linewidths=1.2)
        for p in prompts:
            _draw_prompt(ax, p, axis, c[axis])
        ax.set_title(f"{_AXES[axis]} = {c[axis]}", fontsize=11)
        ax.set_xticks([])
        ax.set_yticks([])
    n = int(mask.sum())
    vol_ml = n * sz * sy * sx / 1000.0
    fig.suptitle(f"{title}   mask: {n} voxels, {vol_ml:.1f} ml".strip(), fontsize=12)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _draw_prompt(ax, prompt: Prompt, axis: int, index: int) -> None:
    import matplotlib.patches as patches

    colour = "#33dd33" if prompt.positive or isinstance(prompt, InitialMask) else "#ff3333"
    keep = [a for a in range(3) if a != axis]
    if isinstance(prompt, Point):
        z = prompt.index
        if abs(z[axis] - index) <= 2:
            ax.plot(z[keep[1]], z[keep[0]], marker="o", ms=9, mfc=colour, mec="white", mew=1.5)
        return
    lo, hi = prompt.bbox
    if not lo[axis] <= index < hi[axis]:
        return
    if isinstance(prompt, Box):
        ax.add_patch(
            patches.Rectangle(
                (lo[keep[1]] - 0.5, lo[keep[0]] - 0.5),
                hi[keep[1]] - lo[keep[1]],
                hi[keep[0]] - lo[keep[0]],
                fill=False,
                edgecolor=colour,
                linewidth=1.8,
            )
        )
        return
    if isinstance(prompt, InitialMask):
        return
    sl = [slice(None)] * 3
    sl[axis] = index - lo[axis]
    pts = np.argwhere(prompt.mask[tuple(sl)])
    if len(pts):
        ax.plot(pts[:, 1] + lo[keep[1]], pts[:, 0] + lo[keep[0]], ".", color=colour, ms=2)
