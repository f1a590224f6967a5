"""Procedural synthetic volumes with label maps: CT-like, MR-like and microscopy-like.

Every generator has the signature ``gen(rng, shape) -> (image, labels, spacing_zyx)``:

* ``rng``: a :class:`numpy.random.Generator`; the output depends on nothing else, so a seed
  reproduces a case exactly.
* ``shape``: ``(z, y, x)`` voxel counts.
* ``image``: ``(z, y, x)`` array; ``int16`` Hounsfield units for :func:`ct_like`, ``float32`` or
  ``uint16`` for :func:`mr_like`, ``uint16`` photon counts for :func:`microscopy_like`.
* ``labels``: ``(z, y, x)`` ``int32``, 0 = unlabelled, ``1..K`` one value per structure
  (consecutive; every value is a segmentation target).
* ``spacing_zyx``: voxel size in mm (µm for microscopy) as a ``(z, y, x)`` tuple of floats.

Scenes are built in physical units (so anisotropic voxels give physically plausible shapes) from
three primitives: deformed ellipsoids (a rotated ellipsoid whose normalised radius is perturbed by
smooth noise), tubes (a smooth random centre line stamped with balls of varying radius, optionally
branching) and shells (the outer layer of either). Structures range from a few voxels
(calcifications, tiny nuclei) to most of the field of view (body, large organs). Large organs are
sometimes split into touching parts and neighbours are placed so that they touch, so that a model
has to use the prompt rather than an intensity threshold.

**Every labelled boundary is visible** (version 2). Each structure differs from what it is painted
over, and from the touching parts and neighbours it is painted with, by at least a minimum
contrast that scales with the case's noise (CT: max(20 HU, 2 noise SD); MR: max(0.06, 2.5x the
relative noise)); and a structure of which less than 30 % survives the structures painted over it
is unlabelled (its voxels keep their intensity). Version 1 split organs into parts of equal
intensity and let organs, lesions and vessels match their surround (noise-free, 31 % of the
touching CT pairs and 19 % of the MR ones differed by less than the minimum contrast; about a
quarter of the CT targets had under half of their boundary at 20 HU or more), which rewards a
network for answering a click with "a ball around this point" (the best guess when the extent
cannot be seen) rather than "this object" (docs/training.md, session 6).

A case takes about 0.2 s (96^3) to 0.4 s (128^3) of CPU time on one core.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

Spacing = tuple[float, float, float]

__all__ = ["ct_like", "mr_like", "microscopy_like", "smooth_noise", "GENERATORS", "VERSION"]

#: changes whenever the same seed gives a different case (part of the training cache's signature)
VERSION = 2
#: a structure of which less than this fraction survives later paint is left unlabelled
MIN_SURVIVING = 0.3


# --- random fields ---------------------------------------------------------------------------


def smooth_noise(rng: np.random.Generator, shape, sigma) -> np.ndarray:
    """Zero-mean, unit-std Gaussian random field of ``shape`` (z, y, x), float32.

    ``sigma`` is the correlation length in voxels, a scalar or one value per axis. Long
    correlation lengths are generated on a coarse grid and linearly upsampled (fast).
    """
    shape = tuple(int(s) for s in shape)
    sigma = np.broadcast_to(np.asarray(sigma, dtype=float), (3,))
    factor = np.maximum(1.0, np.floor(sigma / 2.0))
    if np.all(factor == 1):
        field = ndi.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma)
    else:  # coarse grid points every `factor` voxels (one beyond each end), trilinear upsampling
        coarse_shape = tuple(int(np.ceil((s - 1) / f)) + 3 for s, f in zip(shape, factor))
        field = ndi.gaussian_filter(rng.standard_normal(coarse_shape, dtype=np.float32), sigma / factor, mode="wrap")
        w0, w1, w2 = (
            np.clip(1 - np.abs(np.arange(s)[:, None] - (np.arange(c)[None, :] - 1) * f) / f, 0, None).astype(np.float32)
            for s, f, c in zip(shape, factor, coarse_shape)
        )
        field = (w0 @ field.reshape(coarse_shape[0], -1)).reshape(shape[0], *coarse_shape[1:])
        field = np.matmul(w1, field) @ w2.T
    field -= field.mean()
    std = field.std()
    return field / std if std > 0 else field


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


# --- canvas and primitives -------------------------------------------------------------------


class _Canvas:
    """A label map and an intensity ("tissue value") map painted together, in (z, y, x)."""

    def __init__(self, shape, spacing: Spacing, min_contrast: float = 0.0, floor: float | None = None):
        self.shape = tuple(int(s) for s in shape)
        self.spacing = np.asarray(spacing, dtype=float)
        self.labels = np.zeros(self.shape, np.int32)
        self.values = np.zeros(self.shape, np.float32)
        self.texture_amp: dict[int, float] = {}
        self.painted: dict[int, int] = {}  # voxels a label was given (largest single paint)
        self.next_label = 1
        self.min_contrast = float(min_contrast)
        self.floor = floor  # lowest value a structure may take (MR intensities are >= 0)

    @property
    def fov(self) -> np.ndarray:
        return np.asarray(self.shape) * self.spacing

    def new_label(self, texture: float = 0.0) -> int:
        lab = self.next_label
        self.next_label += 1
        self.texture_amp[lab] = texture
        return lab

    def box(self, center, radius):
        """Slices (clipped to the volume) and local mm coordinates of a box around ``center``."""
        lo = np.floor((np.asarray(center) - radius) / self.spacing).astype(int)
        hi = np.ceil((np.asarray(center) + radius) / self.spacing).astype(int) + 1
        lo = np.clip(lo, 0, self.shape)
        hi = np.clip(hi, 0, self.shape)
        if np.any(hi <= lo):
            return None, None
        sl = tuple(slice(a, b) for a, b in zip(lo, hi))
        coords = [
            (np.arange(a, b) * s - c).reshape([-1 if i == k else 1 for k in range(3)])
            for i, (a, b, s, c) in enumerate(zip(lo, hi, self.spacing, center))
        ]
        return sl, coords

    def paint(self, sl, mask, value, label=None):
        """Write ``value`` (scalar or array on the box) and ``label`` where ``mask`` is set."""
        if sl is None or not mask.any():
            return
        vals = self.values[sl]
        vals[mask] = value if np.isscalar(value) else value[mask]
        if label is not None:
            self.labels[sl][mask] = label
            self.painted[label] = max(self.painted.get(label, 0), int(mask.sum()))

    def distinct(self, rng, sl, mask, value: float, avoid=()) -> float:
        """``value``, moved if needed so that it differs by at least ``min_contrast`` from every
        value that ``mask`` (on box ``sl``) is painted over or touches (each painted structure has
        one value; those covering at least 2 % of the dilated mask count) and from every value in
        ``avoid`` (touching parts painted next): every labelled boundary stays visible."""
        if sl is None or not mask.any() or self.min_contrast <= 0:
            return value
        region = self.values[sl][ndi.binary_dilation(mask)]
        vals, counts = np.unique(region, return_counts=True)
        refs = [float(v) for v, c in zip(vals, counts) if c >= 0.02 * region.size] + [float(a) for a in avoid]
        mc = self.min_contrast
        for _ in range(20):
            if all(abs(value - r) >= mc for r in refs) and (self.floor is None or value >= self.floor):
                return value
            ref = refs[int(rng.integers(len(refs)))]
            sign = 1.0 if value >= ref else -1.0
            if self.floor is not None and ref - mc * 1.5 < self.floor:
                sign = 1.0
            value = ref + sign * mc * float(rng.uniform(1.0, 1.6))
        return value

    def blob(self, rng, center, radii, roughness=0.15, shell=0.0, rotate=True):
        """A deformed ellipsoid around ``center`` (mm) with semi-axes ``radii`` (mm).

        Returns ``(slices, outer_mask, inner_mask)``; ``inner_mask`` is the interior left when a
        shell of relative thickness ``shell`` is removed (``None`` when ``shell == 0``). With
        ``rotate=False`` the axes stay aligned with (z, y, x).
        """
        radii = np.asarray(radii, dtype=float)
        sl, coords = self.box(center, radii.max() * (1 + 2 * roughness) + self.spacing.max())
        if sl is None:
            return None, None, None
        z, y, x = coords
        rot = _rotation(rng) if rotate else np.eye(3)
        dist2 = 0.0
        for row, rad in zip(rot, radii):
            dist2 = dist2 + ((row[0] * z + row[1] * y + row[2] * x) / rad) ** 2
        dist = np.sqrt(dist2)
        if roughness > 0:
            box_shape = dist.shape
            sigma = np.maximum(0.6, 0.35 * radii.mean() / self.spacing)
            dist = dist + roughness * smooth_noise(rng, box_shape, sigma)
        outer = dist < 1.0
        inner = dist < 1.0 - shell if shell > 0 else None
        return sl, outer, inner

    def tube(self, rng, start, direction, length, r0, r1, curl=0.3, inner_frac=0.0):
        """A smooth random tube from ``start`` (mm) with radius going from ``r0`` to ``r1``.

        Returns ``(outer, inner, centreline)`` as full-volume masks (``inner`` is the lumen of
        relative radius ``inner_frac``, or ``None``) and the (n, 3) centre line points in mm.
        """
        step = max(0.5 * min(r0, r1), 0.5 * self.spacing.min())
        n = max(2, int(length / step))
        d = np.asarray(direction, float)
        d /= np.linalg.norm(d)
        turn = ndi.gaussian_filter1d(rng.standard_normal((n, 3)), max(1.0, n / 8), axis=0)
        turn *= curl / max(turn.std(), 1e-6)
        pts = [np.asarray(start, float)]
        for i in range(n - 1):
            d = d + turn[i] * step / max(r0, 1.0) * 0.5
            d /= np.linalg.norm(d)
            pts.append(pts[-1] + d * step)
        pts = np.asarray(pts)
        radii = np.linspace(r0, r1, n)
        outer = np.zeros(self.shape, bool)
        inner = np.zeros(self.shape, bool) if inner_frac > 0 else None
        for p, r in zip(pts, radii):
            sl, coords = self.box(p, r + self.spacing.max())
            if sl is None:
                continue
            z, y, x = coords
            d2 = z * z + y * y + x * x
            outer[sl] |= d2 <= r * r
            if inner is not None:
                inner[sl] |= d2 <= (r * inner_frac) ** 2
        return outer, inner, pts

    def random_point_in(self, rng, mask):
        """A random point (mm) inside ``mask`` (full-volume bool), or ``None``."""
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            return None
        zyx = np.unravel_index(rng.choice(idx), self.shape)
        return (np.asarray(zyx) + rng.uniform(-0.5, 0.5, 3)) * self.spacing

    def value_at(self, point) -> float:
        """The painted value at ``point`` (mm)."""
        idx = np.clip(np.rint(np.asarray(point) / self.spacing).astype(int), 0, np.asarray(self.shape) - 1)
        return float(self.values[tuple(idx)])

    def finish(self, min_voxels: int = 3) -> tuple[np.ndarray, np.ndarray]:
        """Relabel to consecutive values, dropping structures under ``min_voxels`` voxels and
        remnants (less than ``MIN_SURVIVING`` of their painted voxels left by later paint).

        Returns ``(labels, amp)``: the int32 label map and the texture amplitude per label.
        """
        counts = np.bincount(self.labels.ravel(), minlength=self.next_label)
        painted = np.asarray([max(1, self.painted.get(v, 1)) for v in range(self.next_label)], float)
        present = np.flatnonzero((counts >= min_voxels) & (counts >= MIN_SURVIVING * painted))
        present = present[present > 0]
        lut = np.zeros(self.next_label, np.int32)
        lut[present] = np.arange(1, present.size + 1)
        amp = np.zeros(present.size + 1, np.float32)
        amp[1:] = [self.texture_amp[int(p)] for p in present]
        return lut[self.labels], amp


def _touching_split(rng, canvas: _Canvas, sl, mask, n_parts):
    """Split ``mask`` (box ``sl``) into ``n_parts`` touching pieces (Voronoi in mm)."""
    idx = np.argwhere(mask)
    seeds = idx[rng.choice(len(idx), n_parts, replace=False)] * canvas.spacing
    pts = idx * canvas.spacing
    owner = np.argmin(((pts[:, None, :] - seeds[None]) ** 2).sum(-1), axis=1)
    parts = []
    for k in range(n_parts):
        m = np.zeros(mask.shape, bool)
        m[tuple(idx[owner == k].T)] = True
        parts.append(m)
    return parts


# --- anatomy-like scenes (CT and MR share the geometry) --------------------------------------

# tissue classes of the anatomy scene; the modality decides what intensity each one gets
TISSUES = (
    "fat",
    "muscle",
    "organ",
    "enhanced",
    "fluid",
    "cortex",
    "marrow",
    "vessel",
    "lung",
    "gas",
    "calcification",
)


def _anatomy(rng, shape, spacing, intensity, min_contrast: float = 0.0, floor: float | None = None):
    """Paint a body-like scene; ``intensity(tissue) -> float`` maps tissue classes to values;
    labelled boundaries get at least ``min_contrast`` (see :meth:`_Canvas.distinct`)."""
    cv = _Canvas(shape, spacing, min_contrast, floor)
    fov = cv.fov
    mid = fov / 2
    cv.values[:] = intensity("air")
    # body: an elliptic cylinder along z (fat), with a muscle / soft-tissue core
    body_r = np.array([fov[0] * 3, fov[1] * rng.uniform(0.36, 0.47), fov[2] * rng.uniform(0.38, 0.48)])
    sl, body, core = cv.blob(
        rng,
        mid + [0, rng.uniform(-0.03, 0.03) * fov[1], 0],
        body_r,
        roughness=0.04,
        shell=rng.uniform(0.06, 0.2),
        rotate=False,
    )
    body_lab = cv.new_label(0.3) if rng.random() < 0.6 else None
    fat = intensity("fat")
    cv.paint(sl, body & ~core, fat, body_lab)  # the shell only: the core is painted next
    core_lab = cv.new_label(0.3) if rng.random() < 0.5 else body_lab
    cv.paint(sl, core, cv.distinct(rng, sl, core, intensity("muscle"), [fat]), core_lab)
    inside = np.zeros(cv.shape, bool)
    inside[sl] = core
    outside = np.ones(cv.shape, bool)
    outside[sl] = ~body
    extent = body_r[1:].min() * (1 - 0.2)

    # spine-like bone: a tube along z with cortex and marrow, behind the centre
    if rng.random() < 0.8:
        r = rng.uniform(0.08, 0.14) * extent
        start = [
            -0.1 * fov[0],
            mid[1] + rng.uniform(0.35, 0.6) * extent,
            mid[2] + rng.normal(0, 0.03) * fov[2],
        ]
        outer, inner, _ = cv.tube(
            rng,
            start,
            [1, rng.normal(0, 0.1), rng.normal(0, 0.1)],
            1.2 * fov[0],
            r,
            r * rng.uniform(0.8, 1.2),
            curl=0.2,
            inner_frac=rng.uniform(0.55, 0.8),
        )
        lab = cv.new_label(0.3)
        cv.paint(np.s_[:, :, :], outer, cv.distinct(rng, np.s_[:, :, :], outer, intensity("cortex")), lab)
        cv.paint(np.s_[:, :, :], inner, intensity("marrow"), lab)

    # large organs, some split into touching parts, some with a touching neighbour
    organ_masks = []
    n_slabs = max(1.0, fov[0] / (1.5 * extent))  # long z coverage holds more organs
    for _ in range(int(min(14, rng.integers(3, 8) * n_slabs))):
        c = cv.random_point_in(rng, inside)
        if c is None:
            break
        radii = extent * rng.uniform(0.25, 0.6, 3)
        radii[0] *= rng.uniform(0.8, 2.0)
        tissue = rng.choice(["organ", "organ", "enhanced", "lung", "fluid"], p=[0.35, 0.2, 0.25, 0.1, 0.1])
        base = intensity(tissue)
        sl, m, _ = cv.blob(rng, c, radii, roughness=rng.uniform(0.08, 0.3))
        if sl is None or m.sum() < 8:
            continue
        pieces = _touching_split(rng, cv, sl, m, int(rng.integers(2, 4))) if rng.random() < 0.35 else [m]
        used: list[float] = []  # touching parts differ from each other
        for piece in pieces:
            value = cv.distinct(rng, sl, piece, base + intensity.jitter(tissue), used)
            used.append(value)
            cv.paint(sl, piece, value, cv.new_label(rng.uniform(0.1, 0.6)))
            organ_masks.append((sl, piece))
        if rng.random() < 0.5:  # a neighbour of nearly the same intensity, touching this organ
            u = rng.standard_normal(3)
            u /= np.linalg.norm(u)
            r2 = radii * rng.uniform(0.5, 1.0)
            c2 = c + u * (radii.mean() + r2.mean()) * 0.8
            sl2, m2, _ = cv.blob(rng, c2, r2, roughness=rng.uniform(0.08, 0.25))
            if sl2 is not None:
                m2 &= inside[sl2]
                value = cv.distinct(rng, sl2, m2, base + intensity.jitter(tissue), used)
                cv.paint(sl2, m2, value, cv.new_label(rng.uniform(0.1, 0.6)))
                organ_masks.append((sl2, m2))

    # cysts: a wall (shell) around fluid, one structure
    for _ in range(rng.integers(0, 3)):
        c = cv.random_point_in(rng, inside)
        if c is None:
            break
        r = extent * rng.uniform(0.04, 0.15)
        sl, m, inner = cv.blob(rng, c, r * rng.uniform(0.7, 1.3, 3), roughness=0.08, shell=rng.uniform(0.1, 0.3))
        lab = cv.new_label(0.1)
        cv.paint(sl, m, cv.distinct(rng, sl, m, intensity("organ")), lab)
        cv.paint(sl, inner, intensity("fluid"), lab)

    # hollow tubes (bowel-like): wall plus gas or fluid lumen
    for _ in range(rng.integers(0, 3)):
        c = cv.random_point_in(rng, inside)
        if c is None:
            break
        r = extent * rng.uniform(0.05, 0.12)
        outer, inner, _ = cv.tube(
            rng,
            c,
            rng.standard_normal(3),
            extent * rng.uniform(0.5, 1.5),
            r,
            r,
            curl=1.0,
            inner_frac=rng.uniform(0.5, 0.85),
        )
        outer &= inside
        lab = cv.new_label(0.2)
        all_ = np.s_[:, :, :]
        cv.paint(all_, outer, cv.distinct(rng, all_, outer, intensity("muscle") + intensity.jitter("muscle")), lab)
        cv.paint(np.s_[:, :, :], inner & outer, intensity("gas" if rng.random() < 0.5 else "fluid"), lab)

    # vessel trees: a trunk with branches (one structure per tree)
    for _ in range(rng.integers(2, 6)):
        c = cv.random_point_in(rng, inside)
        if c is None:
            break
        r = extent * rng.uniform(0.015, 0.09)
        d = rng.standard_normal(3)
        if rng.random() < 0.5:
            d = np.array([1.0, 0.1 * rng.standard_normal(), 0.1 * rng.standard_normal()])
            c[0] = -0.1 * fov[0]
        trunk, _, pts = cv.tube(rng, c, d, extent * rng.uniform(0.8, 2.5), r, r * rng.uniform(0.5, 1.0))
        tree = trunk
        for _ in range(rng.integers(0, 4)):
            p = pts[rng.integers(len(pts))]
            b, _, _ = cv.tube(
                rng,
                p,
                rng.standard_normal(3),
                extent * rng.uniform(0.2, 0.8),
                r * 0.6,
                max(0.3 * r, 0.7 * spacing[2]),
                curl=0.8,
            )
            tree |= b
        tree &= inside
        all_ = np.s_[:, :, :]
        value = cv.distinct(rng, all_, tree, intensity("vessel") + intensity.jitter("vessel"))
        cv.paint(all_, tree, value, cv.new_label(0.05))

    # lesions: small blobs inside organs, hypo- or hyper-intense relative to their host
    for _ in range(int(rng.integers(3, 12) * n_slabs) if organ_masks else 0):
        osl, om = organ_masks[rng.integers(len(organ_masks))]
        full = np.zeros(cv.shape, bool)
        full[osl] = om
        c = cv.random_point_in(rng, full)
        if c is None:
            continue
        host = cv.value_at(c)
        r = rng.uniform(1.2, 8.0) * cv.spacing[1:].min() * rng.uniform(0.5, 1.5, 3)
        sl, m, _ = cv.blob(rng, c, r, roughness=rng.uniform(0.05, 0.3))
        cv.paint(sl, m, cv.distinct(rng, sl, m, host + intensity.lesion_delta()), cv.new_label(0.2))

    # tiny bright dots: calcifications / small nodes, a few voxels each
    for _ in range(rng.integers(0, 5)):
        c = cv.random_point_in(rng, inside)
        if c is None:
            break
        r = cv.spacing[1:].min() * rng.uniform(0.8, 2.0) * np.ones(3)
        sl, m, _ = cv.blob(rng, c, r, roughness=0.0)
        cv.paint(sl, m, cv.distinct(rng, sl, m, intensity("calcification")), cv.new_label(0.0))
    cv.labels[outside] = 0  # nothing sticks out of the body into the air
    cv.values[outside] = intensity("air")
    return cv


def _max_z_spacing(shape, sxy: float) -> float:
    """Largest z spacing that keeps the z field of view within 1.6x the in-plane one."""
    return 1.6 * min(shape[1], shape[2]) * sxy / shape[0]


class _Intensities:
    """Tissue -> intensity map with per-structure jitter and lesion contrast."""

    def __init__(self, rng, table, jitter_scale, lesion_scale):
        self.rng, self.table, self.js, self.ls = rng, table, jitter_scale, lesion_scale

    def __call__(self, tissue):
        lo, hi = self.table[tissue]
        return float(self.rng.uniform(lo, hi))

    def jitter(self, tissue):
        return float(self.rng.normal(0, self.js))

    def lesion_delta(self):
        return float(self.rng.choice([-1, 1]) * self.rng.uniform(0.3, 1.0) * self.ls)


_CT_HU = {
    "air": (-1000, -1000),
    "fat": (-120, -80),
    "muscle": (35, 60),
    "organ": (20, 70),
    "enhanced": (100, 200),
    "fluid": (0, 20),
    "cortex": (900, 1500),
    "marrow": (250, 450),
    "vessel": (150, 350),
    "lung": (-880, -780),
    "gas": (-1000, -950),
    "calcification": (400, 900),
}


def ct_like(rng: np.random.Generator, shape=(96, 128, 128)):
    """CT-like body scan: int16 HU image, int32 labels, spacing (z, y, x) in mm."""
    sxy = rng.uniform(0.6, 1.2)
    sz = min(float(rng.choice([sxy, 1.5, 2.5, 3.0, 5.0])), _max_z_spacing(shape, sxy))
    spacing = (max(sz, sxy), float(sxy), float(sxy))
    inten = _Intensities(rng, _CT_HU, jitter_scale=8.0, lesion_scale=50.0)
    noise_sd = rng.uniform(4, 30)
    cv = _anatomy(rng, shape, spacing, inten, min_contrast=max(20.0, 2.0 * noise_sd))
    labels, amp = cv.finish()
    tex = smooth_noise(rng, cv.shape, rng.uniform(0.8, 2.0))
    img = cv.values + amp[labels] * rng.uniform(5, 25) * tex
    img = ndi.gaussian_filter(img, rng.uniform(0.3, 1.0) * np.array([0.7, 1, 1]))  # partial volume
    noise = ndi.gaussian_filter(rng.standard_normal(cv.shape, dtype=np.float32), 0.6)
    img += noise / noise.std() * noise_sd
    img = np.clip(np.rint(img), -1024, 3071).astype(np.int16)
    return img, labels, spacing


_MR_T1 = {
    "fat": (0.85, 1.0),
    "muscle": (0.3, 0.4),
    "organ": (0.45, 0.65),
    "enhanced": (0.65, 0.85),
    "fluid": (0.05, 0.15),
    "cortex": (0.0, 0.05),
    "marrow": (0.7, 0.9),
    "vessel": (0.02, 0.9),
    "lung": (0.0, 0.08),
    "gas": (0.0, 0.02),
    "calcification": (0.0, 0.1),
    "air": (0, 0),
}
_MR_T2 = {
    "fat": (0.6, 0.8),
    "muscle": (0.15, 0.3),
    "organ": (0.3, 0.5),
    "enhanced": (0.35, 0.55),
    "fluid": (0.85, 1.0),
    "cortex": (0.0, 0.05),
    "marrow": (0.5, 0.7),
    "vessel": (0.02, 0.2),
    "lung": (0.0, 0.08),
    "gas": (0.0, 0.02),
    "calcification": (0.0, 0.1),
    "air": (0, 0),
}


def mr_like(rng: np.random.Generator, shape=(96, 128, 128)):
    """MR-like scan: float32 or uint16 image, int32 labels, spacing (z, y, x) in mm.

    Contrast is T1-like, T2-like (fluid bright, the inverse of T1) or random per tissue; a smooth
    multiplicative bias field and Rician noise (magnitude of complex Gaussian noise) are applied.
    """
    mode = rng.choice(["t1", "t2", "random"])
    if mode == "random":
        table = {t: (v, v + 0.1) for t, v in zip(_MR_T1, rng.uniform(0.05, 0.9, len(_MR_T1)))}
        table.update(air=(0, 0), gas=(0, 0.02), cortex=(0, 0.06))
    else:
        table = _MR_T1 if mode == "t1" else _MR_T2
    if rng.random() < 0.5:
        s = rng.uniform(0.7, 1.5)
        spacing = (s, s, s)
    else:
        sxy = rng.uniform(0.5, 1.0)
        spacing = (max(sxy, min(float(rng.uniform(2.0, 6.0)), _max_z_spacing(shape, sxy))), sxy, sxy)
    inten = _Intensities(rng, table, jitter_scale=0.03, lesion_scale=0.25)
    noise = rng.uniform(0.01, 0.05)  # Rician noise SD relative to the 99th percentile
    cv = _anatomy(rng, shape, spacing, inten, min_contrast=max(0.06, 2.5 * noise), floor=0.0)
    labels, amp = cv.finish()
    tex = smooth_noise(rng, cv.shape, rng.uniform(0.8, 2.0))
    img = cv.values + amp[labels] * rng.uniform(0.02, 0.08) * tex
    img = ndi.gaussian_filter(np.clip(img, 0, None), rng.uniform(0.3, 0.9))
    bias = np.exp(rng.uniform(0.1, 0.45) * smooth_noise(rng, cv.shape, np.asarray(cv.shape) / 3))
    img *= bias
    sigma = noise * float(np.percentile(img, 99))
    n1, n2 = (rng.standard_normal(cv.shape, dtype=np.float32) * sigma for _ in range(2))
    img = np.sqrt((img + n1) ** 2 + n2**2)
    if rng.random() < 0.5:
        img = (img * rng.uniform(0.5, 3.0)).astype(np.float32)
    else:
        img = np.clip(img * rng.uniform(300, 4000), 0, 65535).astype(np.uint16)
    return img, labels, tuple(float(s) for s in spacing)


# --- microscopy ------------------------------------------------------------------------------


def microscopy_like(rng: np.random.Generator, shape=(48, 128, 128)):
    """Fluorescence-microscopy-like stack of nuclei: uint16 counts, int32 labels, spacing in µm.

    Many deformed-ellipsoid nuclei (tiny to large, some touching with equal brightness, some
    seen only as a stained rim), chromatin texture, background haze, anisotropic blur and
    spacing (z 2-4x coarser than y, x), Poisson photon noise plus Gaussian read noise.
    """
    sxy = rng.uniform(0.2, 0.6)
    spacing = (float(sxy * rng.uniform(2.0, 4.0)), float(sxy), float(sxy))
    cv = _Canvas(shape, spacing)
    fov = cv.fov
    mean_r = rng.uniform(2.0, 6.0)  # µm
    coverage = rng.uniform(0.1, 0.35)
    n_target = int(np.clip(coverage * fov.prod() / (4.19 * mean_r**3), 8, 350))
    rim_fraction = rng.choice([0.0, 0.0, 0.3, 1.0])
    placed: list[tuple[np.ndarray, np.ndarray, float]] = []
    for _ in range(n_target * 2):
        if cv.next_label > n_target:
            break
        size = mean_r * float(np.exp(rng.normal(0, 0.45)))
        if rng.random() < 0.06:
            size = max(0.8 * sxy * 2, mean_r * rng.uniform(0.15, 0.35))  # tiny
        radii = size * rng.uniform(0.7, 1.3, 3)
        if placed and rng.random() < 0.3:  # a touching neighbour with the same brightness
            c0, r0, bright = placed[rng.integers(len(placed))]
            u = rng.standard_normal(3)
            u /= np.linalg.norm(u)
            c = c0 + u * (r0.mean() + radii.mean()) * 0.85
        else:
            c = rng.uniform(0, 1, 3) * fov
            bright = float(np.exp(rng.normal(0, 0.5)))
        sl, m, inner = cv.blob(
            rng,
            c,
            radii,
            roughness=rng.uniform(0.05, 0.25),
            shell=rng.uniform(0.15, 0.35) if rng.random() < rim_fraction else 0.0,
        )
        if sl is None or m.sum() < 3 or (cv.labels[sl][m] > 0).mean() > 0.3:
            continue
        lab = cv.new_label(rng.uniform(0.15, 0.4))
        cv.paint(sl, m, bright, lab)
        if inner is not None:
            cv.paint(sl, inner, bright * rng.uniform(0.05, 0.3))
        placed.append((c, radii, bright))
    labels, amp = cv.finish()
    tex = smooth_noise(rng, cv.shape, np.array([0.4, 1.0, 1.0]) * rng.uniform(0.5, 1.5))
    signal = cv.values * (1 + amp[labels] * tex)
    haze = rng.uniform(0.02, 0.2) * (1 + 0.5 * smooth_noise(rng, cv.shape, np.asarray(cv.shape) / 4))
    psf_xy = rng.uniform(0.6, 1.5)
    psf = (rng.uniform(0.5, 1.2), psf_xy, psf_xy)  # voxels
    signal = ndi.gaussian_filter(np.clip(signal, 0, None), psf) + np.clip(haze, 0, None)
    photons = rng.uniform(30, 1500)
    counts = rng.poisson(signal * photons).astype(np.float32)
    counts += rng.uniform(100, 500) + rng.normal(0, rng.uniform(1, 8), cv.shape)
    return np.clip(counts, 0, 65535).astype(np.uint16), labels, spacing


GENERATORS = {"ct": ct_like, "mr": mr_like, "microscopy": microscopy_like}
