"""Simulated users for training: real :mod:`nnint.prompts` objects from a target and the current error.

Everything here works on one patch (z, y, x) and returns ordinary nnint prompts (:class:`Point`,
:class:`Box` 2D/3D, :class:`Scribble`, :class:`Lasso`, :class:`InitialMask`) in patch index
coordinates, so the network input is built by the same rasteriser the torch backend uses at
inference (:func:`prompt_channels`).

* :func:`first_prompt` -- the first interaction of an episode, of a given or random kind, from the
  ground truth alone (an empty previous segmentation, or a corrupted one for ``initial_mask``).
* :func:`correction_prompt` -- the next interaction from the error ``pred != target``: one error
  component (false negatives and false positives separately; the largest or one chosen with
  probability proportional to its size); points are drawn with probability ``EDT^alpha`` inside it
  (alpha 1 = uniform, 8 = centre-biased); scribbles, lassos and 2D boxes are drawn on the slice where
  that component has its largest cross-section. Missed foreground gives positive prompts, false
  positives negative ones.
* Agents (:class:`Agent`) decide the kind of every follow-up interaction (reference-behaviour.md
  §7.2): a new random kind every step, one fixed kind for the episode, or "sunk cost" (keep the
  last kind, switch with a small probability per step).
* :func:`corrupt_mask` -- plausible bad previous segmentations (blocky, dilated, eroded, shifted,
  partial) for ``initial_mask`` episodes and for corrupted feedback.

All randomness comes from the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from nnint.errors import EmptyPromptError, InvalidMaskError
from nnint.evaluate.clicks import pick_error_slice, simulate_box2d, simulate_lasso, simulate_scribble, slice_crop
from nnint.prompts import Box, InitialMask, Lasso, Point, Prompt, Scribble

__all__ = [
    "FIRST_KINDS", "CORRECTION_KINDS", "Agent", "sample_agent", "choose_kind", "first_prompt", "correction_prompt",
    "corrupt_mask", "corrected_region", "edt_point", "prompt_channels", "point_kernel", "LEGACY_MAPPING", "DEFAULT_DECAY", "DEFAULT_POINT_RADIUS",
]

#: first-interaction kinds and their default probabilities
FIRST_KINDS: dict[str, float] = {
    # 3-D boxes were 0.08 until session 3: the model then answered a 3-D box with the filled box
    # (Dice ~0.69 on a ball) and ignored the clicks after it; they are the CVPR 2025 protocol's prompt
    "point": 0.28, "box2d": 0.16, "box3d": 0.20, "scribble": 0.12, "lasso": 0.12, "initial_mask": 0.12,
}
#: follow-up (correction) kinds and their default probabilities for agents that pick at random
CORRECTION_KINDS: dict[str, float] = {"point": 0.55, "scribble": 0.18, "lasso": 0.15, "box2d": 0.12}

#: the legacy 7-channel layout (interaction channels, prev_seg first) of the official model
LEGACY_MAPPING: dict = {"prev_seg": 0, "bbox2d": (1, 2), "bbox3d": (1, 2), "lasso": (1, 2), "points": (3, 4),
                        "scribble": (5, 6)}
DEFAULT_DECAY = 0.98
DEFAULT_POINT_RADIUS = 4

_S26 = np.ones((3, 3, 3), bool)


def choose_kind(rng: np.random.Generator, table: dict[str, float]) -> str:
    """A key of ``table`` drawn with probability proportional to its value."""
    keys = list(table)
    p = np.asarray([table[k] for k in keys], float)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


# --- agents ---------------------------------------------------------------------------------------


class Agent:
    """Chooses the kind of each follow-up interaction.

    ``mode``: ``"random"`` (a new random kind each step), ``"single"`` (one kind for the episode),
    ``"sunk_cost"`` (keep the previous kind; switch to a random one with ``p_switch`` per step).
    """

    def __init__(self, mode: str, kinds: dict[str, float] | None = None, p_switch: float = 0.2,
                 fixed: str | None = None) -> None:
        if mode not in ("random", "single", "sunk_cost"):
            raise ValueError(f"unknown agent mode {mode!r}")
        self.mode, self.kinds, self.p_switch = mode, dict(kinds or CORRECTION_KINDS), float(p_switch)
        self.current = fixed

    def next_kind(self, rng: np.random.Generator, previous: str | None = None) -> str:
        if self.current is None:
            self.current = previous if previous in self.kinds else choose_kind(rng, self.kinds)
        if self.mode == "random":
            self.current = choose_kind(rng, self.kinds)
        elif self.mode == "sunk_cost" and rng.random() < self.p_switch:
            self.current = choose_kind(rng, self.kinds)
        return self.current

    def __repr__(self) -> str:
        return f"Agent({self.mode!r}, current={self.current!r}, p_switch={self.p_switch})"


def sample_agent(rng: np.random.Generator, kinds: dict[str, float] | None = None) -> Agent:
    """One agent per episode, with the mix of reference-behaviour.md §7.2 (collapsed onto 3 modes):
    random 0.1, single type 0.3 (+0.1 "same generator"), sunk cost p_switch 0.3 / 0.1 / 0.2."""
    u = rng.random()
    if u < 0.1:
        return Agent("random", kinds)
    if u < 0.5:
        return Agent("single", kinds)
    p_switch = 0.3 if u < 0.7 else 0.1 if u < 0.9 else 0.2
    return Agent("sunk_cost", kinds, p_switch)


# --- helpers --------------------------------------------------------------------------------------


def _bbox(mask: np.ndarray):
    sl = ndi.find_objects(mask.astype(np.uint8, copy=False))
    return sl[0] if sl else None


def _components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels, n = ndi.label(mask, _S26)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:] if n else np.zeros(0, np.int64)
    return labels, sizes


def _pick_component(mask: np.ndarray, rng: np.random.Generator, mode: str = "weighted") -> np.ndarray | None:
    """One 26-connected component of ``mask`` (largest, or probability proportional to size)."""
    box = _bbox(mask)
    if box is None:
        return None
    labels, sizes = _components(mask[box])
    if mode == "largest":
        k = int(np.argmax(sizes)) + 1
    else:
        k = int(rng.choice(len(sizes), p=sizes / sizes.sum())) + 1
    out = np.zeros(mask.shape, bool)
    out[box] = labels == k
    return out


def edt_point(region: np.ndarray, rng: np.random.Generator, alpha: float = 4.0) -> tuple[int, int, int]:
    """A voxel of ``region`` drawn with probability proportional to ``(EDT / max EDT) ** alpha``
    (EDT = distance to the nearest voxel outside the region; the image border counts as outside)."""
    box = _bbox(region)
    if box is None:
        raise InvalidMaskError("cannot place a point in an empty region")
    sub = np.pad(region[box], 1)
    edt = ndi.distance_transform_edt(sub)[1:-1, 1:-1, 1:-1]
    w = (edt / edt.max()) ** float(alpha)
    w[~region[box]] = 0
    flat = w.ravel()
    idx = int(rng.choice(flat.size, p=flat / flat.sum()))
    local = np.unravel_index(idx, w.shape)
    return tuple(int(s.start + i) for s, i in zip(box, local))  # type: ignore[return-value]


def _sample_slice(mask: np.ndarray, rng: np.random.Generator, axis: int | None = None) -> tuple[int, int]:
    """An axis and slice index with probability proportional to the mask's area on it."""
    axes = [axis] if axis is not None else [0, 1, 2]
    options, weights = [], []
    for ax in axes:
        areas = mask.sum(axis=tuple(a for a in range(3) if a != ax)).astype(float)
        for i in np.flatnonzero(areas):
            options.append((ax, int(i)))
            weights.append(areas[i])
    w = np.asarray(weights)
    w = w ** 1.5  # prefer the big cross-sections a person would draw on
    return options[int(rng.choice(len(options), p=w / w.sum()))]


def _largest_2d(region2d: np.ndarray) -> np.ndarray:
    labels, n = ndi.label(region2d, np.ones((3, 3), bool))
    if n <= 1:
        return region2d.astype(bool)
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (int(np.argmax(sizes)) + 1)


def _prompt_on_slice(kind: str, region2d: np.ndarray, axis: int, index: int, positive: bool,
                     rng: np.random.Generator, thickness: float = 2.0) -> Prompt:
    """A 2D prompt of ``kind`` (scribble, lasso, box2d) drawn on ``region2d`` of slice ``index``."""
    if kind == "box2d":
        lo2, hi2 = simulate_box2d(region2d, rng, jitter=float(rng.uniform(0.0, 0.15)))
        lo, hi = list(lo2), list(hi2)
        lo.insert(axis, index)
        hi.insert(axis, index + 1)
        return Box(lo, hi, positive)
    if kind == "scribble":
        m2 = simulate_scribble(region2d, rng, thickness=thickness)
        if not m2.any():
            m2 = region2d.astype(np.uint8)
        crop, (lo, _) = slice_crop(m2, axis, index)
        return Scribble(crop, lo, positive)
    if kind == "lasso":
        m2 = simulate_lasso(region2d, rng)
        crop, (lo, _) = slice_crop(m2, axis, index)
        return Lasso(crop, lo, positive)
    raise ValueError(f"not a 2D prompt kind: {kind!r}")


def _clip_box(lo, hi, shape) -> tuple[list[int], list[int]]:
    lo = [int(min(max(a, 0), s - 1)) for a, s in zip(lo, shape)]
    hi = [int(min(max(b, a + 1), s)) for a, b, s in zip(lo, hi, shape)]
    return lo, hi


# --- corrupted masks ------------------------------------------------------------------------------


def corrupt_mask(target: np.ndarray, rng: np.random.Generator, mode: str | None = None) -> np.ndarray:
    """A plausible imperfect segmentation of ``target`` (bool (z, y, x)); may be empty.

    ``mode``: ``blocky`` (nearest down/up-sampling by 3-8, like a coarse prediction), ``dilate``,
    ``erode``, ``shift``, ``partial`` (a random half-space of the object removed), ``noisy``
    (smooth random boundary perturbation); random when None.
    """
    t = target.astype(bool)
    mode = mode or str(rng.choice(["blocky", "dilate", "erode", "shift", "partial", "noisy"]))
    if mode == "blocky":
        f = int(rng.integers(3, 9))
        small = t[::f, ::f, ::f]
        out = np.repeat(np.repeat(np.repeat(small, f, 0), f, 1), f, 2)[: t.shape[0], : t.shape[1], : t.shape[2]]
        off = rng.integers(0, f, 3)
        out = np.roll(out, tuple(int(o) - f // 2 for o in off), axis=(0, 1, 2))
    elif mode == "dilate":
        out = ndi.binary_dilation(t, _S26, iterations=int(rng.integers(1, 5)))
    elif mode == "erode":
        out = ndi.binary_erosion(t, _S26, iterations=int(rng.integers(1, 4)))
    elif mode == "shift":
        out = np.roll(t, tuple(int(v) for v in rng.integers(-4, 5, 3)), axis=(0, 1, 2))
    elif mode == "partial":
        zz, yy, xx = np.indices(t.shape, dtype=np.float32)
        n = rng.standard_normal(3)
        c = np.argwhere(t).mean(0) if t.any() else np.asarray(t.shape) / 2
        out = t & ((zz - c[0]) * n[0] + (yy - c[1]) * n[1] + (xx - c[2]) * n[2] > rng.normal(0, 3))
    elif mode == "noisy":
        if not t.any():
            return t.copy()
        sd = ndi.distance_transform_edt(~t) - ndi.distance_transform_edt(t)
        noise = ndi.gaussian_filter(rng.standard_normal(t.shape).astype(np.float32), 3.0)
        noise *= rng.uniform(1.0, 4.0) / max(float(noise.std()), 1e-6)
        out = sd + noise < 0
    else:
        raise ValueError(f"unknown corruption mode {mode!r}")
    return out.astype(bool)


# --- first prompt ---------------------------------------------------------------------------------


def first_prompt(target: np.ndarray, rng: np.random.Generator, kind: str | None = None, *,
                 kinds: dict[str, float] | None = None, alpha: float | None = None,
                 thickness: float = 2.0) -> tuple[Prompt, np.ndarray]:
    """The first interaction on ``target`` (bool (z, y, x), non-empty).

    Returns ``(prompt, prev_seg)``: ``prev_seg`` is all zero except for ``initial_mask`` episodes,
    where it is a corrupted copy of the target (and the prompt an :class:`InitialMask` of it).
    """
    t = np.asarray(target).astype(bool)
    if not t.any():
        raise InvalidMaskError("the target is empty")
    kind = kind or choose_kind(rng, kinds or FIRST_KINDS)
    empty = np.zeros(t.shape, np.uint8)
    if kind == "point":
        comp = _pick_component(t, rng, "largest" if rng.random() < 0.7 else "weighted")
        a = float(alpha if alpha is not None else rng.uniform(1.0, 8.0))
        return Point(edt_point(comp, rng, a), True), empty
    if kind == "box3d":
        box = _bbox(t)
        lo = [s.start for s in box]
        hi = [s.stop for s in box]
        slack = float(rng.uniform(0.04, 0.15))  # users' boxes vary from tight to loose
        for d in range(3):
            j = max(1, int(round(slack * (hi[d] - lo[d]))))
            lo[d] -= int(rng.integers(-j // 2, j + 1))
            hi[d] += int(rng.integers(-j // 2, j + 1))
        lo, hi = _clip_box(lo, hi, t.shape)
        return Box(lo, hi, True), empty
    if kind in ("box2d", "scribble", "lasso"):
        axis, index = _sample_slice(t, rng)
        region = _largest_2d(np.take(t, index, axis=axis)) if kind != "box2d" else np.take(t, index, axis=axis)
        return _prompt_on_slice(kind, region, axis, index, True, rng, thickness), empty
    if kind == "initial_mask":
        for _ in range(4):
            m = corrupt_mask(t, rng)
            if m.any():
                return InitialMask.from_full_mask(m, predict=True), m.astype(np.uint8)
        return InitialMask.from_full_mask(t, predict=True), t.astype(np.uint8)
    raise ValueError(f"unknown first prompt kind {kind!r}")


# --- corrections ----------------------------------------------------------------------------------


def correction_prompt(target: np.ndarray, pred: np.ndarray, rng: np.random.Generator, kind: str = "point", *,
                      component: str | None = None, alpha: float | None = None,
                      thickness: float = 2.0) -> Prompt | None:
    """A correction of ``pred`` towards ``target`` (both (z, y, x)); ``None`` when they agree.

    ``kind``: point, scribble, lasso or box2d. ``component``: ``"largest"`` or ``"weighted"``
    (random 50/50 when None). Positive for missed foreground, negative for false positives.
    """
    t = np.asarray(target).astype(bool)
    p = np.asarray(pred).astype(bool)
    if not (t ^ p).any():
        return None
    component = component or ("largest" if rng.random() < 0.5 else "weighted")
    if kind == "point":
        # one polarity per component: label FN and FP separately
        fn, fp = t & ~p, p & ~t
        comps = []
        for positive, m in ((True, fn), (False, fp)):
            if not m.any():
                continue
            box = _bbox(m)
            labels, sizes = _components(m[box])
            comps += [(positive, box, labels, i + 1, int(s)) for i, s in enumerate(sizes)]
        sizes = np.asarray([c[4] for c in comps], float)
        if component == "largest":
            pick = int(np.argmax(sizes))
        else:
            pick = int(rng.choice(len(comps), p=sizes / sizes.sum()))
        positive, box, labels, k, _ = comps[pick]
        region = np.zeros(t.shape, bool)
        region[box] = labels == k
        a = float(alpha if alpha is not None else rng.uniform(1.0, 8.0))
        return Point(edt_point(region, rng, a), positive)
    if kind in ("scribble", "lasso", "box2d"):
        es = pick_error_slice(p, t, rng, component=component)
        if es is None:
            return None
        region = es.region
        if kind == "box2d" and not es.positive:
            # a negative box around a false positive is legal but rarely meaningful when the box
            # would also cover much of the object; fall back to a lasso then
            lo2, hi2 = simulate_box2d(region, rng, jitter=0.0)
            t2 = np.take(t, es.index, axis=es.axis)[lo2[0]:hi2[0], lo2[1]:hi2[1]]
            if t2.mean() > 0.1:
                kind = "lasso"
        try:
            return _prompt_on_slice(kind, region, es.axis, es.index, es.positive, rng, thickness)
        except (EmptyPromptError, InvalidMaskError):
            return None
    raise ValueError(f"unknown correction kind {kind!r}")


def corrected_region(target: np.ndarray, pred: np.ndarray, prompt: Prompt) -> np.ndarray:
    """The error that a correction ``prompt`` points at: every 26-connected component of the
    missed foreground (positive prompt) or of the false positives (negative prompt) of ``pred``
    against ``target`` that the prompt touches (a click's voxel, a scribble's or lasso's voxels, a
    2-D box's rectangle). Empty when it touches none. Training weights these voxels up so that the
    network learns to act on a correction (session 8: after a box it ignored 40 % of the negative
    clicks)."""
    t = np.asarray(target).astype(bool)
    p = np.asarray(pred).astype(bool)
    error = (t & ~p) if prompt.positive else (p & ~t)
    touched = np.zeros(t.shape, bool)
    if isinstance(prompt, Point):
        z, y, x = (int(round(v)) for v in prompt.zyx)
        if 0 <= z < t.shape[0] and 0 <= y < t.shape[1] and 0 <= x < t.shape[2]:
            touched[z, y, x] = True
    elif isinstance(prompt, Box):
        touched[tuple(slice(max(0, a), max(0, b)) for a, b in zip(prompt.lo, prompt.hi))] = True
    elif isinstance(prompt, (Scribble, Lasso)):
        lo = [max(0, a) for a in prompt.lo]
        hi = [min(n, a + s) for n, a, s in zip(t.shape, prompt.lo, prompt.mask.shape)]
        if all(b > a for a, b in zip(lo, hi)):
            touched[tuple(slice(a, b) for a, b in zip(lo, hi))] = prompt.mask[
                tuple(slice(a - o, b - o) for a, b, o in zip(lo, hi, prompt.lo))]
    touched &= error
    if not touched.any():
        return touched
    labels, _ = _components(error)
    return np.isin(labels, np.unique(labels[touched]))


# --- rasterisation (the inference code path) ------------------------------------------------------


def _torch_rasteriser():
    """The torch backend's rasteriser module, or None while it does not exist."""
    try:
        from nnint.backends.torch import rasterise  # noqa: F401
    except ImportError:
        return None
    return rasterise


_ALL_SUPPORTED = {"scribble": True, "lasso": True, "points": True, "bbox2d": True, "bbox3d": True}


def prompt_channels(prompts: Sequence[Prompt], prev_seg: np.ndarray, *, decay: float = DEFAULT_DECAY,
                    point_radius: float = DEFAULT_POINT_RADIUS, mapping: dict | None = None,
                    num_channels: int = 7) -> np.ndarray:
    """The interaction channels ``[C, z, y, x]`` (float32) the network sees for ``prompts`` (oldest
    first) on a window equal to the whole array, with ``prev_seg`` the current mask: exactly what
    the torch backend feeds at inference (zoom 1, window = array). Built with the torch backend's
    own rasteriser (:mod:`nnint.backends.torch.rasterise`: plan, rasterise, feed); a stand-alone
    implementation of the same rules is used only if that module is missing."""
    mapping = mapping or LEGACY_MAPPING
    ras = _torch_rasteriser()
    if ras is None:
        return _reference_channels(prompts, prev_seg, decay=decay, point_radius=point_radius, mapping=mapping,
                                   num_channels=num_channels)
    shape = tuple(int(s) for s in prev_seg.shape)
    config = ras.RasterConfig(shape=shape, channel_mapping=dict(mapping), num_interaction_channels=int(num_channels),
                              supported=dict(_ALL_SUPPORTED), decay=float(decay), point_radius=float(point_radius))
    plan = ras.build_plan(list(prompts), config)
    out = np.zeros((int(num_channels),) + shape, np.float32)
    # only the channels some prompt writes (usually 2-3 of 6): half the work of all of them at 96^3,
    # where this runs once per sample and correction round in the training loop's main process
    written = sorted({op.channel for op in plan.ops})
    if written:
        stored = ras.rasterise(plan, (0, 0, 0), shape, written)
        out[written] = ras.feed(stored, plan.intensity)
    out[int(mapping["prev_seg"])] = np.asarray(prev_seg, np.float32)
    return out


_KERNELS: dict[float, np.ndarray] = {}


def point_kernel(radius: float = DEFAULT_POINT_RADIUS) -> np.ndarray:
    """The point stamp (reference-behaviour.md §3.2): a ball of radius r on a (2r+1)^3 grid, its EDT,
    divided by the maximum (centre 1)."""
    if radius not in _KERNELS:
        r = int(round(radius))
        g = np.arange(-r, r + 1)
        ball = (g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2) <= radius ** 2
        edt = ndi.distance_transform_edt(ball)
        _KERNELS[radius] = edt / edt.max()
    return _KERNELS[radius]


def _kind_key(prompt: Prompt) -> str:
    if isinstance(prompt, Point):
        return "points"
    if isinstance(prompt, Box):
        return "bbox2d" if prompt.is_2d else "bbox3d"
    return prompt.kind


def _reference_channels(prompts, prev_seg, *, decay, point_radius, mapping, num_channels):
    """Stand-alone implementation of reference-behaviour.md §3 (fp16 storage, global intensity
    ``I`` growing by ``1/decay`` per prompt, fed value ``stored / I``)."""
    shape = tuple(prev_seg.shape)
    ch = np.zeros((num_channels,) + shape, np.float16)
    intensity = 1.0
    prompts = list(prompts)
    start = 0
    for i, pr in enumerate(prompts):
        if isinstance(pr, InitialMask):
            start = i + 1  # an initial mask resets the prompts and the intensity
    for pr in prompts[start:]:
        intensity /= decay
        if intensity > 65504.0:
            ch[1:] = (ch[1:].astype(np.float32) * (6550.4 / intensity)).astype(np.float16)
            intensity = 6550.4
        key = _kind_key(pr)
        pos, neg = mapping[key]
        c = pos if pr.positive else neg
        val = np.float16(intensity)
        if isinstance(pr, Point):
            k = point_kernel(point_radius)
            s = k.shape[0]
            p = np.asarray(pr.index)
            lo = p - s // 2
            hi = p + s // 2 + s % 2
            if np.any(hi < 0) or np.any(lo > np.asarray(shape)):
                continue
            clo, chi = np.maximum(lo, 0), np.minimum(hi, shape)
            if np.any(chi <= clo):
                continue
            ksl = tuple(slice(a - l0, b - l0) for a, b, l0 in zip(clo, chi, lo))
            vsl = (c,) + tuple(slice(a, b) for a, b in zip(clo, chi))
            ch[vsl] = np.maximum(ch[vsl], (k[ksl] * np.float32(intensity)).astype(np.float16))
        elif isinstance(pr, Box):
            lo = np.clip(pr.lo, 0, shape)
            hi = np.clip(pr.hi, 0, shape)
            hi = np.maximum(hi, np.minimum(lo + 1, shape))
            ch[(c,) + tuple(slice(a, b) for a, b in zip(lo, hi))] = val
        else:
            lo, hi = np.asarray(pr.lo), np.asarray(pr.hi)
            clo, chi = np.maximum(lo, 0), np.minimum(hi, shape)
            if np.any(chi <= clo):
                continue
            m = pr.mask[tuple(slice(a - o, b - o) for a, b, o in zip(clo, chi, lo))]
            vals = m.astype(np.float16) if intensity == 1.0 else (m * np.float32(intensity)).astype(np.float16)
            vsl = (c,) + tuple(slice(a, b) for a, b in zip(clo, chi))
            ch[vsl] = np.maximum(ch[vsl], vals)
    prev_idx = mapping["prev_seg"]
    out = np.empty(ch.shape, np.float32)
    # fp16 tensor / Python float: computed in float32, rounded to fp16 (what torch does on the crop)
    divided = (ch.astype(np.float32) / np.float32(intensity)).astype(np.float16).astype(np.float32)
    out[:] = divided
    out[prev_idx] = np.asarray(prev_seg, np.float32)
    return out
