"""A classical backend: seeded region growing with geodesic competition, no learned weights.

It is the evaluation floor (what any trained model must beat) and the development backend until a
trained model is available. Every prompt kind is supported. The result is a deterministic function
of ``(image, prompts)`` (an :class:`~nnint.prompts.InitialMask` carries its own crop), so undo, redo
and re-running a session give identical masks. The current mask is only used to clear voxels of an
earlier prediction that the new one no longer covers.

The algorithm, per :meth:`ClassicalEngine.predict` call:

1. **Region of interest.** Every positive prompt gets an *allowed box* in which it may grow:
   * a point: a cube of ``max_radius_mm`` around it;
   * a scribble: its bounding box enlarged by its own length;
   * a box: the box itself. A 2D box is held exactly on its own slice. Elsewhere the object may
     exceed the box by a margin of ``box_margin`` of its size, and along the slice axis of a 2D box
     it may reach a depth of 0.6 x the in-plane size;
   * a lasso: like a 2D box, and off its slice the object stays within the lasso's outline
     dilated by the margin (a generalised cylinder).

   Work happens on the union of these boxes, lightly smoothed with a Gaussian of
   ``smoothing_mm``. The noise of the smoothed image comes from neighbour differences of the raw
   image in the first prompt's box, scaled by the Gaussian's noise attenuation.
2. **Intensity model.** Each prompt has a sample of voxels:
   * a small ball around a click;
   * the voxels of a scribble;
   * the eroded interior of a lasso;
   * the central ellipse or ellipsoid of a box. For boxes, only the central voxels that look more
     like the inside than the ring around the box are used.

   The model is the median and robust deviation (1.4826 x MAD) of the sample, with the deviation
   floored at ``noise_floor`` x the noise.
3. **Candidates.** Voxels within ``k`` deviations of the median. For boxes and lassos, voxels whose
   intensity is more typical of a ring just outside the box or lasso on its slice are dropped (a
   two-class histogram test). For clicks and strokes the window widens from 1.5 deviations to ``k``
   and stops before the region's volume jumps by ``leak_factor`` (leak detection).
4. **Region.** A light opening cuts one-voxel bridges; it is skipped if it would remove the seeds.
   The components that touch the prompt's seeds are kept. The border is then moved out to half
   contrast, between the object's median and that of a ring around it (partial-volume voxels), and
   holes are filled. Scribble and lasso voxels are always object, and on a lasso's slice the object
   is the lasso.
5. **Order.** Prompts apply oldest first: a positive prompt adds its region, a negative prompt cuts.
   A *correcting* click or stroke (one that comes when an object already exists) reaches at most
   twice as far as it lies from the object, and uses the object's intensity spread centred on its
   own intensity. A missed rim stays a rim, and a missed lobe is found whole.
6. **Negative prompts.** Their own voxels go: a small ball for a click, and a box except any
   positive seeds. Around them, within twice their depth inside the object, voxels that are
   geodesically closer to the negative prompt than to any positive seed go too. The geodesic step
   cost grows with the local intensity change. Only components connected to a positive seed
   remain, and what a negative prompt removed stays removed unless a later positive prompt marks it.
7. **Initial mask.** An :class:`~nnint.prompts.InitialMask` is the starting region: positive prompts
   add to it, negative prompts cut it.

Smoothed regions of interest, noise levels and the regions of prompts that do not depend on other
prompts are cached per image, so a correction recomputes little.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import numpy as np
from scipy import ndimage as ndi

from nnint.engine import PROMPT_KINDS, Capabilities, MaskUpdate
from nnint.errors import InvalidImageError, InvalidMaskError
from nnint.image import validate_image_array
from nnint.prompts import Box, InitialMask, Lasso, Point, Prompt, Scribble, check_in_image

__all__ = ["ClassicalEngine"]

_INF = np.float32(np.inf)


@attrs.define
class _Grow:
    """One positive prompt, prepared for growing (all masks in the coordinates of ``lo``)."""

    lo: np.ndarray  # allowed box, image coordinates
    hi: np.ndarray
    seeds: np.ndarray | None = None  # voxels the object must be connected to (bool, allowed-box shape)
    sample: np.ndarray | None = None  # voxels of the intensity model
    background: np.ndarray | None = None  # voxels of the background model (two-class test)
    include: np.ndarray | None = None  # voxels that are always object (scribble, lasso)
    restrict: np.ndarray | None = None  # voxels allowed at all (None: the whole box)
    point: np.ndarray | None = None  # the click (image coordinates) of a point prompt


class ClassicalEngine:
    """Seeded region growing from the prompts (see the module docstring).

    Parameters (all optional; the defaults suit CT and MR):

    ``k``
        candidates lie within ``k`` robust deviations of the prompt's median intensity.
    ``smoothing_mm``
        standard deviation of the Gaussian smoothing, in mm (None: 0.75 x the finest spacing).
    ``max_radius_mm``
        how far a click or scribble may grow, in mm (also capped at ``max_radius_voxels``).
    ``box_margin``
        fraction of a box's size by which the object may exceed it off the box's own slice.
    ``noise_floor``
        floor of the intensity deviation, in units of the smoothed image's noise.
    ``geodesic_contrast``
        how much an intensity change (in noise units) lengthens a geodesic step.
    ``leak_factor``
        for clicks and strokes, the intensity window stops widening when the region's volume
        jumps by more than this factor (leak detection).
    """

    capabilities = Capabilities(PROMPT_KINDS, preferred_scribble_thickness=(2.0, 2.0, 2.0))

    def __init__(
        self,
        *,
        k: float = 3.0,
        smoothing_mm: float | None = None,
        max_radius_mm: float = 50.0,
        max_radius_voxels: int = 64,
        box_margin: float = 0.1,
        noise_floor: float = 2.0,
        geodesic_contrast: float = 1.0,
        leak_factor: float = 2.5,
        **_ignored,
    ) -> None:
        self.k = float(k)
        self.smoothing_mm = smoothing_mm
        self.max_radius_mm = float(max_radius_mm)
        self.max_radius_voxels = int(max_radius_voxels)
        self.box_margin = float(box_margin)
        self.noise_floor = float(noise_floor)
        self.geodesic_contrast = float(geodesic_contrast)
        self.leak_factor = float(leak_factor)
        self._image: np.ndarray | None = None
        # smoothed ROIs, noise levels and the regions of single prompts, by key (a few entries):
        # a correction then only recomputes what it changes
        self._cache: dict = {}
        self._spacing = np.ones(3)

    # --- Engine protocol ------------------------------------------------------------------------

    def set_image(self, image) -> None:
        array = getattr(image, "array", None)
        if array is None:
            raise InvalidImageError(f"set_image needs an nnint.image.Image, got {type(image).__name__}")
        validate_image_array(array)
        spacing = np.asarray(getattr(image, "spacing_zyx", (1.0, 1.0, 1.0)), dtype=float)
        if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
            raise InvalidImageError(f"image spacing must be three positive numbers, got {spacing}")
        self._image = np.asarray(array, dtype=np.float32)
        self._cache.clear()
        self._spacing = spacing

    def predict(self, prompts: Sequence[Prompt], mask: np.ndarray) -> MaskUpdate | None:
        if self._image is None:
            raise InvalidImageError("set_image must be called before predict")
        shape = self._image.shape
        if tuple(np.shape(mask)) != shape:
            raise InvalidMaskError(f"mask has shape {np.shape(mask)} but the image has shape {shape}")
        prompts = list(prompts)
        if not prompts:
            return None
        for p in prompts:
            check_in_image(p, shape)

        initial = prompts[0] if isinstance(prompts[0], InitialMask) else None
        grows = [self._prepare(p) for p in prompts if not isinstance(p, InitialMask) and p.positive]

        # region of interest: every allowed box and the initial mask (a function of the prompts
        # only, so the noise estimate and thus the result do not depend on the current mask)
        boxes = [(g.lo, g.hi) for g in grows]
        if initial is not None:
            boxes.append((np.array(initial.lo), np.array(initial.hi)))
        if not boxes:  # only negative prompts: nothing to grow, nothing to cut
            return None
        lo = np.min([b[0] for b in boxes], axis=0)
        hi = np.max([b[1] for b in boxes], axis=0)
        smooth = self._cached(("smooth", tuple(lo), tuple(hi)), lambda: self._smoothed(lo, hi))
        # the noise level comes from the first prompt's box, so a prompt's region does not change
        # when later prompts widen the ROI (and can be cached)
        first = (np.array(initial.lo), np.array(initial.hi)) if initial is not None else boxes[0]
        noise = self._cached(("noise", tuple(first[0]), tuple(first[1])), lambda: self._noise(*first))

        obj = np.zeros(tuple(hi - lo), bool)
        pos_seeds = np.zeros_like(obj)
        if initial is not None:
            sl = _local(initial.lo, initial.hi, lo)
            obj[sl] |= initial.mask.astype(bool)
            pos_seeds[sl] |= ndi.binary_erosion(initial.mask.astype(bool), iterations=1, border_value=1)
            if not pos_seeds[sl].any():
                pos_seeds[sl] |= initial.mask.astype(bool)
        # prompts apply in order: positives add, negatives cut; what a negative removed stays
        # removed unless a later positive prompt marks it explicitly (its own voxels, or a click)
        fine = float(self._spacing.min())
        forbidden = np.zeros_like(obj)
        pending = iter(grows)
        for p in prompts:
            if isinstance(p, InitialMask):
                continue
            if not p.positive:
                if obj.any():
                    obj, removed = self._cut(obj, pos_seeds, p, lo, smooth, noise)
                    forbidden |= removed
                    pos_seeds &= obj
                continue
            g = next(pending)
            sl = _local(g.lo, g.hi, lo)
            spread = None
            if g.point is not None and obj.any():
                # a correction click next to an object: it grows at most twice as far as it lies
                # from the object (a missed rim stays a rim, a missed lobe is found whole), with the
                # object's intensity spread centred on the click's own intensity
                dist = _distance_to(obj[sl], g.point - g.lo, self._spacing)
                radius = min(max(2.0 * dist + 2.0 * fine, 3.0 * fine), self.max_radius_mm)
                rv = self._radius_voxels(radius)
                blo, bhi = np.maximum(g.point - rv, g.lo), np.minimum(g.point + rv + 1, g.hi)
                g = _Grow(blo, bhi, point=g.point)
                g.seeds = self._ball(g.point, 1.01 * fine, blo, bhi)
                g.sample = self._ball(g.point, 1.5 * fine, blo, bhi)
                g.restrict = self._ball(g.point, radius, blo, bhi)
                sl = _local(g.lo, g.hi, lo)
                spread = _robust_dev(smooth[obj])
            elif isinstance(p, Scribble) and obj.any():
                # a correcting stroke: like a correcting click, it reaches at most twice as far
                # from itself as it lies from the object, with the object's intensity spread
                near = obj[sl]
                if near.any():
                    to_obj = ndi.distance_transform_edt(~near, sampling=self._spacing)
                    dist = float(to_obj[g.include].min())
                else:
                    dist = self.max_radius_mm
                radius = min(max(2.0 * dist + 2.0 * fine, 3.0 * fine), self.max_radius_mm)
                from_stroke = ndi.distance_transform_edt(~g.include, sampling=self._spacing)
                g.restrict = from_stroke <= radius
                spread = _robust_dev(smooth[obj])
            if spread is None:  # independent of the other prompts: cacheable
                region, seeds = self._cached(("grow", _prompt_key(p), noise),
                                             lambda g=g, sl=sl: self._grow(g, smooth[sl], noise, None))
                region = region.copy()
            else:
                region, seeds = self._grow(g, smooth[sl], noise, spread)
            if g.point is None:
                explicit = seeds if g.include is None else (seeds | g.include)
                region &= ~forbidden[sl] | explicit
            forbidden[sl] &= ~region
            obj[sl] |= region
            pos_seeds[sl] |= seeds & region

        # the update also covers the current mask's extent, so stale voxels outside the ROI clear
        nz = _bbox(np.asarray(mask))
        if nz is not None and (np.any(nz[0] < lo) or np.any(nz[1] > hi)):
            olo, ohi = np.minimum(lo, nz[0]), np.maximum(hi, nz[1])
            out = np.zeros(tuple(ohi - olo), np.uint8)
            out[_local(lo, hi, olo)] = obj
            return MaskUpdate(tuple(int(v) for v in olo), out)
        return MaskUpdate(tuple(int(v) for v in lo), obj.astype(np.uint8))

    # --- preparation --------------------------------------------------------------------------

    def _radius_voxels(self, radius_mm: float) -> np.ndarray:
        r = np.ceil(radius_mm / self._spacing).astype(int)
        return np.clip(r, 1, self.max_radius_voxels)

    def _clip_box(self, lo, hi) -> tuple[np.ndarray, np.ndarray]:
        shape = np.array(self._image.shape)  # type: ignore[union-attr]
        lo = np.clip(np.asarray(lo, int), 0, shape - 1)
        hi = np.clip(np.asarray(hi, int), lo + 1, shape)
        return lo, hi

    def _ball(self, center, radius_mm: float, lo, hi) -> np.ndarray:
        """A bool ball of ``radius_mm`` (at least the centre voxel) in the box [lo, hi)."""
        grids = np.ogrid[tuple(slice(a, b) for a, b in zip(lo, hi))]
        d2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, center, self._spacing))
        ball = d2 <= radius_mm**2
        idx = tuple(int(c - a) for c, a in zip(center, lo))
        if all(0 <= i < n for i, n in zip(idx, ball.shape)):
            ball[idx] = True
        return ball

    def _prepare(self, p: Prompt) -> _Grow:
        fine = float(self._spacing.min())
        if isinstance(p, Point):
            c = np.array(p.index)
            radius = self._radius_voxels(self.max_radius_mm)
            lo, hi = self._clip_box(c - radius, c + radius + 1)
            g = _Grow(lo, hi, point=c)
            g.seeds = self._ball(c, 1.01 * fine, lo, hi)
            g.sample = self._ball(c, 1.5 * fine, lo, hi)
            return g
        if isinstance(p, Scribble):
            # a stroke is drawn inside the object: let it grow about its own length around it
            length_mm = float(np.max((np.array(p.hi) - np.array(p.lo)) * self._spacing))
            radius = self._radius_voxels(min(length_mm + 4.0 * fine, self.max_radius_mm))
            lo, hi = self._clip_box(np.array(p.lo) - radius, np.array(p.hi) + radius)
            g = _Grow(lo, hi)
            crop = np.zeros(tuple(hi - lo), bool)
            crop[_local(p.lo, p.hi, lo)] = p.mask.astype(bool)
            g.seeds = g.sample = g.include = crop
            return g
        if isinstance(p, Box):
            return self._prepare_box(np.array(p.lo), np.array(p.hi), None)
        if isinstance(p, Lasso):
            return self._prepare_box(np.array(p.lo), np.array(p.hi), p.mask.astype(bool))
        raise InvalidMaskError(f"unexpected prompt {p!r}")  # pragma: no cover - InitialMask is handled above

    def _prepare_box(self, blo: np.ndarray, bhi: np.ndarray, lasso: np.ndarray | None) -> _Grow:
        """A positive box (2D or 3D) or lasso (a filled 2D crop on its slice)."""
        ext = bhi - blo
        flat = [a for a in range(3) if ext[a] == 1]
        axis = flat[0] if flat else None
        margin = np.ceil(self.box_margin * ext).astype(int) + 1
        lo, hi = blo - margin, bhi + margin
        if axis is not None:
            inplane_mm = max(float(ext[a] * self._spacing[a]) for a in range(3) if a != axis)
            depth = int(np.ceil(0.6 * inplane_mm / self._spacing[axis])) + 1
            depth = min(depth, self.max_radius_voxels)
            lo[axis], hi[axis] = blo[axis] - depth, bhi[axis] + depth
        lo, hi = self._clip_box(lo, hi)
        g = _Grow(lo, hi)
        shape = tuple(hi - lo)
        box_sl = _local(blo, bhi, lo)
        # central core of the box: an ellipse (2D) or ellipsoid (3D) of 0.35 x the half-extent
        grids = np.ogrid[tuple(slice(a, b) for a, b in zip(lo, hi))]
        centre = (blo + bhi - 1) / 2.0
        half = np.maximum(ext / 2.0, 0.5)
        r2 = sum(((gr - c) / h) ** 2 for gr, c, h, e in zip(grids, centre, half, ext) if e > 1)
        inside = np.zeros(shape, bool)
        inside[box_sl] = True
        if lasso is not None:
            inside[box_sl] &= lasso
        core = (r2 <= 0.35**2) & inside
        if lasso is not None:
            eroded = np.zeros(shape, bool)
            eroded[box_sl] = _erode_inplane(lasso, axis, 2)
            core = eroded if eroded.sum() >= 5 else inside.copy()
        if not core.any():
            core = (r2 <= 1.0) & inside
        if not core.any():
            core = inside.copy()
        g.sample = core
        g.seeds = core
        # background ring outside the box (or lasso) on its slice (2D) / around its middle (3D)
        ring_axis = axis if axis is not None else 0
        mid = int((blo[ring_axis] + bhi[ring_axis] - 1) // 2)
        plane = np.zeros(shape, bool)
        idx = [slice(None)] * 3
        idx[ring_axis] = slice(mid - lo[ring_axis], mid - lo[ring_axis] + 1)
        plane[tuple(idx)] = True
        inside_plane = inside & plane
        grown = _dilate_inplane(inside_plane, ring_axis, 3)
        g.background = grown & ~_dilate_inplane(inside_plane, ring_axis, 1)
        # the object may not leave the box on the box's own slice (2D) or along a 3D box's
        # slice axis; elsewhere it may exceed the box by the margin
        restrict = np.ones(shape, bool)
        if axis is not None:
            idx = [slice(None)] * 3
            idx[axis] = box_sl[axis]
            restrict[tuple(idx)] = inside[tuple(idx)]
        else:
            outside = np.ones(shape, bool)
            idx = [slice(None)] * 3
            idx[0] = box_sl[0]
            outside[tuple(idx)] = False
            restrict &= ~outside
        if lasso is not None and axis is not None:
            # off its slice the object stays near the lasso's outline (a generalised cylinder)
            grow = int(np.ceil(self.box_margin * max(ext))) + 1
            outline = np.zeros(shape, bool)
            outline[box_sl] = lasso
            outline = _dilate_inplane(outline, axis, grow)
            restrict &= np.take(outline, [box_sl[axis].start], axis=axis).any(axis=axis, keepdims=True)
        g.restrict = restrict
        if lasso is not None:
            g.include = inside
        return g

    # --- growing ------------------------------------------------------------------------------

    def _cached(self, key, compute):
        if key in self._cache:
            value = self._cache.pop(key)
        else:
            value = compute()
        self._cache[key] = value  # most recent last
        while len(self._cache) > 24:
            self._cache.pop(next(iter(self._cache)))
        return value

    def _smoothed(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """The image over [lo, hi), smoothed with a Gaussian of ``smoothing_mm`` (read-only)."""
        img = self._image
        assert img is not None
        sigma = self._sigma_mm() / self._spacing
        pad = np.ceil(3 * sigma).astype(int)
        plo = np.maximum(lo - pad, 0)
        phi = np.minimum(hi + pad, img.shape)
        crop = img[tuple(slice(a, b) for a, b in zip(plo, phi))]
        smooth = ndi.gaussian_filter(crop, sigma, mode="nearest", truncate=3.0) if sigma.max() > 0 else crop.copy()
        smooth = np.ascontiguousarray(smooth[tuple(slice(a - p, b - p) for a, b, p in zip(lo, hi, plo))],
                                      dtype=np.float32)
        smooth.setflags(write=False)
        return smooth

    def _sigma_mm(self) -> float:
        return self.smoothing_mm if self.smoothing_mm is not None else 0.75 * float(self._spacing.min())

    def _noise(self, lo, hi) -> float:
        """Noise of the smoothed image over [lo, hi): the raw image's noise from neighbour
        differences (robust: edges are a minority), scaled by how much the Gaussian attenuates
        white noise (the root sum of its squared weights)."""
        img = self._image
        assert img is not None
        raw = img[tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))]
        step = max(1, int(np.ceil((raw.size / 2_000_000) ** (1 / 3))))
        diffs = []
        for axis in range(3):
            if raw.shape[axis] > 1:
                idx = [slice(None, None, step)] * 3
                idx[axis] = slice(None)  # neighbours along this axis, a subsample of the others
                d = np.abs(np.diff(raw[tuple(idx)], axis=axis)).reshape(-1)
                diffs.append(d[:: max(1, d.size // 200_000)])
        noise = float(np.median(np.concatenate(diffs))) * 1.4826 / np.sqrt(2) if diffs else 0.0
        sigma = self._sigma_mm() / self._spacing
        noise *= _gaussian_attenuation(sigma) if sigma.max() > 0 else 1.0
        if not noise > 0:
            spread = float(np.percentile(raw, 99) - np.percentile(raw, 1))
            noise = max(spread * 1e-3, 1e-6)
        return noise

    def _grow(self, g: _Grow, smooth: np.ndarray, noise: float, spread: float | None = None):
        """The region of one positive prompt in its allowed box, and its seed voxels."""
        values = smooth[g.sample]
        seeds = g.seeds if g.seeds is not None else g.sample
        allowed = np.ones(smooth.shape, bool)
        if g.background is not None and g.background.any():
            allowed &= _two_class(smooth, values, smooth[g.background], noise)
            # the centre of a box is not always object (a thin oblique or C-shaped structure):
            # model the sample voxels that look more like the inside than the ring around
            inner = allowed[g.sample]
            if inner.sum() >= max(5, 0.1 * values.size):
                values = values[inner]
                seeds = seeds & allowed
        med = float(np.median(values))
        dev = _robust_dev(values) if spread is None else spread
        dev = max(dev, self.noise_floor * noise)
        score = np.abs(smooth - med) / np.float32(dev)
        if g.restrict is not None:
            allowed &= g.restrict
        k = self._leak_free_k(score, allowed, seeds) if g.restrict is None or g.point is not None else self.k
        cand = (score <= k) & allowed
        if g.include is not None:
            cand |= g.include
        else:
            cand |= seeds & (g.restrict if g.restrict is not None else True)
        # light opening to cut one-voxel bridges, unless it wipes out the seeds
        opened = ndi.binary_opening(cand, structure=ndi.generate_binary_structure(3, 1))
        if g.include is not None:
            opened |= g.include
        if (opened & seeds).any():
            cand_used = opened
        else:
            cand_used = cand
        labels, n = ndi.label(cand_used, structure=ndi.generate_binary_structure(3, 1))
        hit = np.unique(labels[seeds & cand_used])
        hit = hit[hit > 0]
        region = np.isin(labels, hit) if n else np.zeros_like(cand)
        if cand_used is opened:  # give back the boundary layer the opening took
            region = ndi.binary_dilation(region, structure=ndi.generate_binary_structure(3, 1), mask=cand)
        if region.any():
            region = self._refine_edge(region, smooth, med, g.restrict)
        region = ndi.binary_fill_holes(region)
        if g.restrict is not None:
            region &= g.restrict
        if g.include is not None:
            region |= g.include
        return region, seeds

    def _leak_free_k(self, score, allowed, seeds) -> float:
        """Widen the intensity window step by step and stop before the region explodes.

        With a click or a stroke there is no box to bound the object, so a window that reaches the
        intensity of a neighbouring tissue floods it. Growing with windows of 1.5, 2, 2.5, ... robust
        deviations up to ``k``, the region's volume grows slowly while it stays in one object and
        jumps (by more than ``leak_factor``) when it breaks into another: the window before the jump
        is used."""
        ks = [v for v in (1.5, 2.0, 2.5, 3.0, 3.5, 4.0) if v < self.k] + [self.k]
        structure = ndi.generate_binary_structure(3, 1)
        previous = None
        for i, k in enumerate(ks):
            cand = ((score <= k) & allowed) | seeds
            labels, _n = ndi.label(cand, structure=structure)
            hit = np.unique(labels[seeds])
            hit = hit[hit > 0]
            volume = int(np.isin(labels, hit).sum())
            if previous is not None and volume > self.leak_factor * previous and volume > 64:
                return ks[i - 1]
            previous = max(volume, 1)
        return ks[-1]

    def _refine_edge(self, region, smooth, fg, restrict, layers: int = 2) -> np.ndarray:
        """Move the border to half contrast: add outer neighbours whose intensity lies on the object's
        side of the midpoint between the object's median and the median of a ring around it (the
        k-sigma window alone stops short of partial-volume border voxels)."""
        cross = ndi.generate_binary_structure(3, 1)
        near = ndi.binary_dilation(region, cross, iterations=1)
        ring = ndi.binary_dilation(near, cross, iterations=2) & ~near
        if restrict is not None:
            ring &= restrict
        if ring.sum() < 8:
            return region
        bg = float(np.median(smooth[ring]))
        if abs(fg - bg) < 1e-12:
            return region
        mid = 0.5 * (fg + bg)
        side = (smooth - mid) * (fg - bg) > 0
        if restrict is not None:
            side &= restrict
        for _ in range(layers):
            grown = region | (ndi.binary_dilation(region, cross, iterations=1) & side)
            if grown.sum() == region.sum():
                break
            region = grown
        return region

    # --- negative prompts ----------------------------------------------------------------------

    def _cut(self, obj, pos_seeds, p, lo, smooth, noise) -> tuple[np.ndarray, np.ndarray]:
        """Apply one negative prompt; returns (object, removed voxels).

        The prompt's own voxels go (a small ball for a click; for a box all of it except positive
        seeds). Around them, within twice their depth inside the object (a click in a leak removes
        the leak, a click on a too-thick rim only that rim), voxels geodesically closer to the
        negative prompt than to any positive seed go too. Then only components connected to a
        positive seed remain."""
        shape = np.array(obj.shape)
        hi = lo + shape
        fine = float(self._spacing.min())
        plo, phi = np.array(p.bbox[0]), np.array(p.bbox[1])
        if np.any(phi <= lo) or np.any(plo >= hi):
            return obj, np.zeros_like(obj)
        seeds = np.zeros_like(obj)
        if isinstance(p, Point):
            c = np.array(p.index)
            r = self._radius_voxels(1.01 * fine)
            blo, bhi = np.maximum(c - r, lo), np.minimum(c + r + 1, hi)
            seeds[_local(blo, bhi, lo)] = self._ball(c, 1.01 * fine, blo, bhi)
        else:
            clo, chi = np.maximum(plo, lo), np.minimum(phi, hi)
            if isinstance(p, Box):
                seeds[_local(clo, chi, lo)] = True
                seeds &= ~pos_seeds
            else:
                seeds[_local(clo, chi, lo)] = p.mask[_local(clo, chi, plo)].astype(bool)
        if not seeds.any():
            return obj, np.zeros_like(obj)
        before = obj
        # the prompt's depth inside the object, measured in a box around it (capped at half the
        # maximal radius: the reach below is capped at the maximal radius anyway)
        slo, shi = _bbox(seeds)
        cap = self._radius_voxels(0.5 * self.max_radius_mm) + 1
        dlo, dhi = np.maximum(slo - cap, 0), np.minimum(shi + cap, shape)
        dsl = tuple(slice(a, b) for a, b in zip(dlo, dhi))
        pad = [(int(a == 0), int(b == n)) for a, b, n in zip(dlo, dhi, shape)]  # outside the ROI is background
        local = np.pad(obj[dsl], pad)
        depth = ndi.distance_transform_edt(local, sampling=self._spacing)
        depth = depth[tuple(slice(a[0], depth.shape[i] - a[1]) for i, a in enumerate(pad))]
        reach_mm = min(2.0 * float(depth[seeds[dsl]].max()) + fine, self.max_radius_mm)
        rv = self._radius_voxels(reach_mm)
        zlo, zhi = np.maximum(slo - rv - 1, 0), np.minimum(shi + rv + 1, shape)
        zsl = tuple(slice(a, b) for a, b in zip(zlo, zhi))
        zone = ndi.distance_transform_edt(~seeds[zsl], sampling=self._spacing) <= reach_mm
        obj = obj & ~seeds
        pos = pos_seeds & obj
        if not pos.any():
            return np.zeros_like(obj), before
        touching = seeds[zsl] & ndi.binary_dilation(obj[zsl], iterations=1)
        if touching.any() and (zone & obj[zsl]).any():
            passable = obj[zsl] | touching
            # positive seeds for the competition: the seeds inside the zone's box, and the object
            # voxels on the box's border where the box is inside the ROI (the object goes on there)
            border = np.zeros(passable.shape, bool)
            for axis in range(3):
                idx = [slice(None)] * 3
                if zlo[axis] > 0:
                    idx[axis] = 0
                    border[tuple(idx)] = True
                if zhi[axis] < shape[axis]:
                    idx[axis] = -1
                    border[tuple(idx)] = True
            pos_z = (pos[zsl] | (border & obj[zsl])) & ~touching
            if pos_z.any():
                d_pos = _geodesic(pos_z, passable, smooth[zsl], self._spacing, noise, self.geodesic_contrast)
                d_neg = _geodesic(touching, passable, smooth[zsl], self._spacing, noise, self.geodesic_contrast)
                cut = zone & (d_neg < d_pos)
            else:
                cut = zone
            obj[zsl] &= ~cut
        # keep what stays connected to a positive seed
        labels, n = ndi.label(obj, structure=ndi.generate_binary_structure(3, 1))
        if n:
            hit = np.unique(labels[pos & obj])
            hit = hit[hit > 0]
            obj = np.isin(labels, hit)
        return obj, before & ~obj


# --- helpers ---------------------------------------------------------------------------------


def _local(plo, phi, origin) -> tuple[slice, slice, slice]:
    return tuple(slice(int(a - o), int(b - o)) for a, b, o in zip(plo, phi, origin))  # type: ignore[return-value]


def _bbox(mask: np.ndarray):
    if not mask.any():
        return None
    lo, hi = [], []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(mask.any(axis=other))
        lo.append(idx[0])
        hi.append(idx[-1] + 1)
    return np.array(lo), np.array(hi)


def _gaussian_attenuation(sigma) -> float:
    """Factor by which a separable Gaussian of per-axis ``sigma`` (voxels) reduces white noise."""
    out = 1.0
    for sg in sigma:
        if sg <= 0:
            continue
        delta = np.zeros(2 * int(np.ceil(3 * sg)) + 1)
        delta[len(delta) // 2] = 1.0
        w = ndi.gaussian_filter1d(delta, sg, mode="constant", truncate=3.0)
        out *= float(np.sqrt((w**2).sum()))
    return out


def _prompt_key(p) -> tuple:
    if isinstance(p, Point):
        return ("point", p.index)
    if isinstance(p, Box):
        return ("box", p.lo, p.hi)
    return (p.kind, p.lo, p.mask.shape, p.mask.tobytes())


def _robust_dev(values: np.ndarray) -> float:
    """1.4826 x the median absolute deviation (a subsample of at most ~200k values)."""
    values = np.asarray(values).reshape(-1)
    if values.size == 0:
        return 0.0
    values = values[:: max(1, values.size // 200_000)]
    med = np.median(values)
    return 1.4826 * float(np.median(np.abs(values - med)))


def _distance_to(mask: np.ndarray, point, spacing) -> float:
    """Distance in mm from ``point`` (local index) to the nearest voxel of ``mask`` (inf if empty)."""
    idx = np.argwhere(mask)
    if idx.size == 0:
        return float("inf")
    idx = idx[:: max(1, len(idx) // 400_000)]
    d2 = (((idx - np.asarray(point)) * np.asarray(spacing)) ** 2).sum(1)
    return float(np.sqrt(d2.min()))


def _inplane_structure(axis: int | None) -> np.ndarray:
    s = ndi.generate_binary_structure(3, 1)
    if axis is not None:
        idx = [1, 1, 1]
        for v in (0, 2):
            idx[axis] = v
            s[tuple(idx)] = False
    return s


def _dilate_inplane(mask: np.ndarray, axis: int | None, iterations: int) -> np.ndarray:
    return ndi.binary_dilation(mask, structure=_inplane_structure(axis), iterations=iterations)


def _erode_inplane(mask: np.ndarray, axis: int | None, iterations: int) -> np.ndarray:
    return ndi.binary_erosion(mask, structure=_inplane_structure(axis), iterations=iterations, border_value=0)


def _two_class(smooth: np.ndarray, fg: np.ndarray, bg: np.ndarray, noise: float) -> np.ndarray:
    """True where a voxel's intensity is at least as typical of ``fg`` as of ``bg`` (smoothed histograms)."""
    lo = float(min(fg.min(), bg.min())) - 4 * noise
    hi = float(max(fg.max(), bg.max())) + 4 * noise
    bins = 96
    width = (hi - lo) / bins
    if not width > 0:
        return np.ones(smooth.shape, bool)
    sigma_bins = max(1.0, 1.5 * noise / width)
    hf = ndi.gaussian_filter1d(np.histogram(fg, bins, (lo, hi))[0].astype(float), sigma_bins, mode="constant")
    hb = ndi.gaussian_filter1d(np.histogram(bg, bins, (lo, hi))[0].astype(float), sigma_bins, mode="constant")
    hf /= max(hf.sum(), 1e-12)
    hb /= max(hb.sum(), 1e-12)
    keep = hf >= hb
    idx = np.clip(((smooth - lo) / width).astype(np.int64), 0, bins - 1)
    return keep[idx]  # intensities outside the histograms' range follow the nearer end


def _geodesic(seeds, passable, smooth, spacing, noise, contrast, sweeps: int = 2) -> np.ndarray:
    """Approximate geodesic distance (mm) from ``seeds`` through ``passable`` voxels.

    Step cost between face neighbours: ``spacing * (1 + contrast * |dI| / noise)``. Computed by
    forward and backward sweeps along each axis (vectorised over the other two), repeated.
    """
    dist = np.where(seeds, np.float32(0), _INF).astype(np.float32)
    costs = []
    for axis in range(3):
        d = np.abs(np.diff(smooth, axis=axis)) / np.float32(noise)
        c = np.float32(spacing[axis]) * (1 + np.float32(contrast) * d)
        both = np.logical_and(
            np.take(passable, range(0, passable.shape[axis] - 1), axis=axis),
            np.take(passable, range(1, passable.shape[axis]), axis=axis),
        )
        costs.append(np.where(both, c, _INF).astype(np.float32))
    for _ in range(sweeps):
        for axis in range(3):
            n = dist.shape[axis]
            if n < 2:
                continue
            dv = np.moveaxis(dist, axis, 0)
            cv = np.moveaxis(costs[axis], axis, 0)
            for i in range(1, n):
                np.minimum(dv[i], dv[i - 1] + cv[i - 1], out=dv[i])
            for i in range(n - 2, -1, -1):
                np.minimum(dv[i], dv[i + 1] + cv[i], out=dv[i])
    return dist
