"""Prompt channels, rasterised straight into the region a forward pass needs.

The official session keeps a full-volume float16 tensor of interaction channels and crops it for
every forward pass (docs/reference-behaviour.md §3). nnint never stores that tensor. Instead a
:class:`RasterPlan` lists, in prompt order, the elementary writes the official session would have
made (an element-wise maximum of a point kernel or a scribble/lasso crop, the assignment of a box,
a renormalisation of every channel), and :func:`rasterise` replays them into any region.
Every write acts voxel by voxel, so replaying the plan into a region gives exactly the crop of the
full-volume tensor: same float16 values, bit for bit.

Numerics (§3.6, checked against the installed official package):

* the intensity ``I`` starts at 1; every point/box/scribble/lasso first does ``I = I * (1 / d)``
  (Python floats), then, if ``I > 65504``, multiplies all stored channels by ``6550.4 / I`` (float16
  tensor times Python float) and sets ``I = 6550.4``, then writes its value scaled by ``I``;
* points write ``float16(kernel * I)`` (kernel in float64, see :func:`point_kernel`) with an
  element-wise maximum; boxes assign ``float16(I)``; scribbles and lassos take the element-wise
  maximum with ``float16(mask * I)``;
* an :class:`~nnint.prompts.InitialMask` (only ever first) resets ``I`` to 1 and writes nothing here
  (its voxels are the ``prev_seg`` channel, which is the object's mask);
* the network is fed ``stored / I``, computed on the float16 region (:func:`feed`).

Everything is NumPy: float16 maximum and assignment are exact, and the two float16 products
(renormalisation, feeding) are computed in float32 and rounded once, like PyTorch's CPU kernels.

Channel indices are *interaction* channel indices (``prev_seg`` included, as in the model folder's
``channel_mapping``); the ``prev_seg`` channel is left at zero by :func:`rasterise`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import attrs
import numpy as np

from nnint.errors import UnsupportedPromptError
from nnint.prompts import Box, InitialMask, Lasso, Point, Prompt, Scribble

__all__ = [
    "FP16_MAX",
    "RENORM_TARGET",
    "RasterConfig",
    "RasterOp",
    "RasterPlan",
    "build_plan",
    "feed",
    "point_kernel",
    "prompt_channel",
    "rasterise",
    "rasterise_written",
]

FP16_MAX = 65504.0
RENORM_TARGET = 6550.4

Index3 = tuple[int, int, int]


@lru_cache(maxsize=8)
def point_kernel(radius: float) -> np.ndarray:
    """The official point footprint (§3.2): a ball of ``radius`` on a ``(2r+1)^3`` grid, replaced by
    its Euclidean distance transform (distance of each inside voxel to the nearest outside voxel of
    the grid) divided by its maximum. float64, read-only. For r = 4: 257 voxels, centre 1.0."""
    from scipy.ndimage import distance_transform_edt

    r = int(round(float(radius)))
    if r < 0:
        raise ValueError(f"point radius must be >= 0, got {radius}")
    ax = np.arange(-r, r + 1)
    dz, dy, dx = np.meshgrid(ax, ax, ax, indexing="ij")
    ball = (dz * dz + dy * dy + dx * dx) <= r * r
    edt = distance_transform_edt(ball)
    kernel = edt / edt.max()
    kernel.setflags(write=False)
    return kernel


@attrs.frozen
class RasterConfig:
    """What rasterisation needs to know about the model and the image."""

    shape: Index3
    #: ``prev_seg`` -> int, interaction key -> (positive, negative); non-negative indices
    channel_mapping: dict
    num_interaction_channels: int
    #: interaction key -> bool (scribble, lasso, points, bbox2d, bbox3d)
    supported: dict
    decay: float
    point_radius: float = 4

    @property
    def prev_seg_channel(self) -> int:
        return int(self.channel_mapping["prev_seg"])

    @classmethod
    def from_model_folder(cls, folder, shape: Sequence[int]) -> RasterConfig:
        return cls(
            shape=tuple(int(s) for s in shape),  # type: ignore[arg-type]
            channel_mapping=dict(folder.channel_mapping),
            num_interaction_channels=int(folder.num_interaction_channels),
            supported=dict(folder.supported_interactions),
            decay=float(folder.interaction_decay),
            point_radius=float(folder.point_radius),
        )


@attrs.frozen(eq=False)
class RasterOp:
    """One write into one channel over ``[lo, hi)`` (image coordinates, inside the image).

    ``mode`` ``"max"``: element-wise maximum with ``values`` (float16 array of the region's shape,
    or a float16 scalar times the uint8 ``mask``); ``"set"``: assign the float16 scalar ``value``.
    ``renorm`` (applied *before* the write, to every channel): a factor or None.
    """

    channel: int
    mode: str
    lo: Index3
    hi: Index3
    value: np.float16
    values: np.ndarray | None = None
    mask: np.ndarray | None = None
    renorm: float | None = None

    @property
    def empty(self) -> bool:
        return any(b <= a for a, b in zip(self.lo, self.hi))


@attrs.frozen(eq=False)
class RasterPlan:
    """The writes of a prompt sequence, in order, and the final intensity ``I``."""

    ops: tuple[RasterOp, ...]
    intensity: float
    num_channels: int
    shape: Index3

    def channel_bbox(self, channel: int) -> tuple[Index3, Index3] | None:
        """Bounding box (image coordinates) of everything ever written into ``channel``."""
        boxes = [(op.lo, op.hi) for op in self.ops if op.channel == channel and not op.empty]
        if not boxes:
            return None
        lo = tuple(int(min(b[0][i] for b in boxes)) for i in range(3))
        hi = tuple(int(max(b[1][i] for b in boxes)) for i in range(3))
        return lo, hi  # type: ignore[return-value]

    @property
    def renorms(self) -> list[float]:
        return [op.renorm for op in self.ops if op.renorm is not None]


def box_kind(box: Box, supported: dict) -> str:
    """The capability key of a box (§1.6): ``bbox2d`` when an axis has length 1 and bbox2d is
    supported, else ``bbox3d``. A 3D box on a model without bbox3d raises UnsupportedPromptError."""
    is_2d = min(box.extent) == 1
    if is_2d and supported.get("bbox2d", False):
        return "bbox2d"
    if not supported.get("bbox3d", False):
        if is_2d:
            raise UnsupportedPromptError("this model supports neither 2D nor 3D box prompts")
        raise UnsupportedPromptError(
            f"3D bounding box {box.lo}-{box.hi} is not supported by this model; draw a 2D box on one slice"
        )
    return "bbox3d"


_KIND_KEY = {Point: "points", Scribble: "scribble", Lasso: "lasso"}


def prompt_channel(prompt: Prompt, config: RasterConfig) -> int:
    """The interaction channel a (non-initial-mask) prompt writes into."""
    if isinstance(prompt, Box):
        key = box_kind(prompt, config.supported)
    else:
        key = _KIND_KEY.get(type(prompt))
        if key is None:
            raise UnsupportedPromptError(f"{type(prompt).__name__} has no prompt channel")
        if not config.supported.get(key, False):
            raise UnsupportedPromptError(f"this model does not support {prompt.kind} prompts")
    if key not in config.channel_mapping:
        raise UnsupportedPromptError(f"the model's channel mapping has no channel for {key!r}")
    pos, neg = config.channel_mapping[key]
    return int(pos if prompt.positive else neg)


def _clip(lo, hi, shape) -> tuple[Index3, Index3]:
    clo = tuple(int(max(0, min(a, s))) for a, s in zip(lo, shape))
    chi = tuple(int(max(c, min(b, s))) for b, s, c in zip(hi, shape, clo))
    return clo, chi  # type: ignore[return-value]


def build_plan(prompts: Sequence[Prompt], config: RasterConfig, start: RasterPlan | None = None) -> RasterPlan:
    """Translate the active prompts (oldest first) into raster writes. Raises
    UnsupportedPromptError (before anything else) for prompts the model cannot take.

    ``start``: the plan of the prompts that precede ``prompts`` (to extend a plan by the newest
    prompt without redoing the older ones); its ops are reused, not copied.
    """
    decay = float(config.decay)
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"interaction_decay must lie in (0, 1], got {decay}")
    for i, p in enumerate(prompts):
        if isinstance(p, InitialMask):
            if i != 0 or (start is not None and start.ops):
                raise ValueError("an InitialMask can only be the first of the active prompts")
        else:
            prompt_channel(p, config)
    intensity = 1.0 if start is None else start.intensity
    ops: list[RasterOp] = [] if start is None else list(start.ops)
    shape = config.shape
    kernel = point_kernel(config.point_radius)
    ks = kernel.shape[0]
    for p in prompts:
        if isinstance(p, InitialMask):
            intensity = 1.0  # reset; the mask itself is the prev_seg channel
            continue
        intensity = intensity * (1.0 / decay)
        renorm = None
        if intensity > FP16_MAX:
            renorm = RENORM_TARGET / intensity
            intensity = RENORM_TARGET
        ch = prompt_channel(p, config)
        if isinstance(p, Point):
            c = p.index
            wlo = tuple(ci - ks // 2 for ci in c)
            whi = tuple(ci + ks // 2 + ks % 2 for ci in c)
            lo, hi = _clip(wlo, whi, shape)
            sl = tuple(slice(a - w, b - w) for a, b, w in zip(lo, hi, wlo))
            values = (kernel[sl] * intensity).astype(np.float16)
            ops.append(RasterOp(ch, "max", lo, hi, np.float16(intensity), values=values, renorm=renorm))
        elif isinstance(p, Box):
            lo, hi = _clip(p.lo, p.hi, shape)
            # a box collapsed by clipping is widened to one voxel (official rule; in-image boxes never are)
            lo, hi = list(lo), list(hi)
            for ax in range(3):
                if hi[ax] == lo[ax] and shape[ax] > 0:
                    if lo[ax] == 0:
                        hi[ax] = 1
                    else:
                        lo[ax] -= 1
            lo, hi = tuple(lo), tuple(hi)
            ops.append(RasterOp(ch, "set", lo, hi, np.float16(intensity), renorm=renorm))
        else:  # Scribble / Lasso crop
            lo, hi = _clip(p.lo, p.hi, shape)
            sl = tuple(slice(a - o, b - o) for a, b, o in zip(lo, hi, p.lo))
            mask = np.array(p.mask[sl], dtype=np.uint8)  # writable copy (torch.from_numpy)
            ops.append(RasterOp(ch, "max", lo, hi, np.float16(intensity), mask=mask, renorm=renorm))
    return RasterPlan(tuple(ops), float(intensity), int(config.num_interaction_channels), shape)


def rasterise(
    plan: RasterPlan, lo: Sequence[int], hi: Sequence[int], channels: Sequence[int] | None = None
) -> np.ndarray:
    """The stored (intensity-scaled, float16) prompt channels over the region ``[lo, hi)``.

    The region may reach outside the image (zero there, like the official zero padding). Returns a
    float16 array ``[len(channels), *size]`` (default: all interaction channels, prev_seg left 0).
    """
    return rasterise_written(plan, lo, hi, channels)[0]


def rasterise_written(
    plan: RasterPlan, lo: Sequence[int], hi: Sequence[int], channels: Sequence[int] | None = None
) -> tuple[np.ndarray, set[int]]:
    """:func:`rasterise`, plus the set of output slots (indices into ``channels``) that were written
    (all other slots are zero)."""
    lo = tuple(int(v) for v in lo)
    hi = tuple(int(v) for v in hi)
    size = tuple(max(0, b - a) for a, b in zip(lo, hi))
    chans = list(range(plan.num_channels)) if channels is None else [int(c) for c in channels]
    slot = {c: i for i, c in enumerate(chans)}
    out = np.zeros((len(chans), *size), dtype=np.float16)
    written: set[int] = set()
    for op in plan.ops:
        if op.renorm is not None:
            # float16 tensor times a Python float: float32 product, one rounding to float16 (PyTorch)
            for w in written:
                out[w] = out[w].astype(np.float32) * np.float32(op.renorm)
        i = slot.get(op.channel)
        if i is None:
            continue
        olo = tuple(max(a, b) for a, b in zip(op.lo, lo))
        ohi = tuple(min(a, b) for a, b in zip(op.hi, hi))
        if any(b <= a for a, b in zip(olo, ohi)):
            continue
        dst = out[(i, *(slice(a - r, b - r) for a, b, r in zip(olo, ohi, lo)))]
        src_sl = tuple(slice(a - o, b - o) for a, b, o in zip(olo, ohi, op.lo))
        if op.mode == "set":
            dst[...] = op.value
        elif op.values is not None:
            np.maximum(dst, op.values[src_sl], out=dst)
        else:
            np.maximum(dst, op.mask[src_sl] * op.value, out=dst)  # type: ignore[index]
        written.add(i)
    return out, written


def feed(stored: np.ndarray, intensity: float) -> np.ndarray:
    """What the network sees of stored prompt channels: ``stored / I`` computed on the float16
    values and rounded to float16 (bit-identical to PyTorch's float16 tensor / Python float)."""
    if intensity == 1.0:
        return stored
    return (stored.astype(np.float32) / np.float32(intensity)).astype(np.float16)
