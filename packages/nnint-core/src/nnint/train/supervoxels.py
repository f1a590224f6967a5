"""Open-set pseudo-label targets ("objects") from unlabelled volumes, by multi-scale supervoxels.

nnInteractive adds SAM/SAM2-propagated masks of unlabelled volumes as extra training targets
(reference-behaviour.md, section 7.3). Without such models we derive plausible objects from image
structure alone, with numpy, scipy and SimpleITK. All arrays are (z, y, x).

1. **Working grid.** Volumes above ``max_voxels`` are box-averaged and subsampled by an integer
   factor (the result is upsampled, nearest, at the end). Intensities are mapped to [0, 1] by the
   0.5th/99.5th percentiles and then *equalised* by their empirical CDF (64 quantiles; a dominant
   zero background is left out), so that a 20 HU soft-tissue contrast counts as much as a
   grey/white matter contrast in MR.
2. **Fine scale: SLIC-like supervoxels.** k-means in (intensity, position) space: ~``n_supervoxels``
   centres start on a regular grid (cell size chosen in mm, so anisotropic voxels give roughly
   cubic cells), each voxel joins the nearest centre of the neighbouring cells under
   ``(dI / 0.05)^2 + (d_mm / cell)^2``, centres move to their members' means; 4 iterations on a
   lightly smoothed image.
3. **Coarser scales: a merge tree.** On the region adjacency graph of the supervoxels, the
   adjacent pair with the smallest ``|mean_a - mean_b| * mean boundary gradient`` is merged
   (recursive-Gaussian gradient magnitude on the shared faces), repeatedly, until one region is
   left. Every tree node is a candidate region and a union of fine supervoxels: regions are
   *merged across scales* and keep the fine boundaries.
4. **Scores.** *Lifetime*: the merge cost at which a node disappears divided by the largest cost
   at which its parts were joined (an object is more different from its surroundings than its
   parts are from each other). *Edge contrast*: the mean gradient on its boundary faces divided by
   the mean gradient of its voxels. *Compactness*: ``voxels / boundary_faces**1.5``.
5. **Filtering.** Nodes smaller than ``min_voxels``, larger than ``max_fraction`` of the volume,
   mostly in the background (voxels darker than half the Otsu threshold and connected to the
   in-plane border: air, empty microscopy background), or under ``min_lifetime``,
   ``min_edge_contrast`` or ``min_compactness`` are dropped.
6. **Selection at three scales.** The candidates are split into three log-spaced size bins
   (small, medium, large) and taken round-robin (large first), each bin by descending edge
   contrast, keeping a candidate only if it shares no supervoxel with an accepted one. The result
   mixes sizes and never overlaps.
7. **Connectivity.** Each object keeps its largest 26-connected component if still large enough.

The result is an int32 label map (z, y, x) with consecutive values 1..K (0 = no object). It is
deterministic. Expect plausible, not perfect, objects: organs, ventricles, eyes, lesions and dim
nuclei are found well; strongly textured objects and objects touching an equally bright
neighbour are often split or merged. A 128^3 volume takes a few seconds.
"""

from __future__ import annotations

import heapq

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

__all__ = ["supervoxels", "fine_supervoxels"]


def _percentile_01(img: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(img, [0.5, 99.5])
    if hi <= lo:
        return np.zeros(img.shape, np.float32)
    return np.clip((img - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def _equalise(img: np.ndarray, n_bins: int = 64) -> np.ndarray:
    """Map intensities through their empirical CDF; a dominant minimum (zero-filled background
    of brain-extracted or padded images) is left out of the CDF and maps to 0."""
    low = float(img.min())
    sample = img[img > low] if (img == low).mean() > 0.2 and (img > low).any() else img
    q = np.percentile(sample, np.linspace(0, 100, n_bins + 1))
    q = q + np.arange(n_bins + 1) * 1e-6 * max(float(q[-1] - q[0]), 1e-6)  # strictly increasing
    out = np.interp(img, q, np.linspace(0.0, 1.0, n_bins + 1)).astype(np.float32)
    out[img <= low] = 0.0
    return out


def _background(x01: np.ndarray) -> np.ndarray:
    """Dark voxels (under half the Otsu threshold) connected to the in-plane border (bool)."""
    hist, edges = np.histogram(x01, bins=128, range=(0.0, 1.0))
    centres = 0.5 * (edges[1:] + edges[:-1])
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres) / np.maximum(w0, 1)
    m1 = ((hist * centres).sum() - np.cumsum(hist * centres)) / np.maximum(w1, 1)
    otsu = centres[int(np.argmax(w0 * w1 * (m0 - m1) ** 2))]
    dark, _ = ndi.label(x01 < 0.5 * otsu)
    border = np.unique(np.concatenate([np.unique(dark[i]) for i in _faces(dark.shape)]))
    return np.isin(dark, border[border > 0])


def _faces(shape):
    """Index tuples of the four in-plane (y and x) border faces of a (z, y, x) volume."""
    return [
        (slice(None), 0),
        (slice(None), -1),
        (slice(None), slice(None), 0),
        (slice(None), slice(None), -1),
    ]


def _gradient(img: np.ndarray, spacing, sigma_mm: float) -> np.ndarray:
    im = sitk.GetImageFromArray(img)
    im.SetSpacing(tuple(float(s) for s in spacing[::-1]))
    return sitk.GetArrayFromImage(sitk.GradientMagnitudeRecursiveGaussian(im, sigma=sigma_mm))


def fine_supervoxels(
    x: np.ndarray, spacing, n_supervoxels: int, compactness: float = 0.05, n_iter: int = 4
) -> np.ndarray:
    """SLIC-like supervoxels: k-means in (intensity, position), int32 labels 1..N (z, y, x).

    Centres start on a regular grid of ~``n_supervoxels`` cells whose size ``S`` is chosen in mm;
    each voxel joins the centre (among those within one cell in every axis) minimising
    ``(dI / compactness)^2 + (d_mm / S)^2``, then centres move to their members' means.
    ``x`` should be smoothed intensities in [0, 1].
    """
    spacing = np.asarray(spacing, float)
    shape = np.asarray(x.shape)
    cell_mm = (np.prod(shape * spacing) / max(n_supervoxels, 1)) ** (1 / 3)
    step = np.maximum(1, np.round(cell_mm / spacing)).astype(int)
    grids = [np.arange(st // 2, sz, st) for sz, st in zip(shape, step)]
    centres = np.stack([g.ravel() for g in np.meshgrid(*grids, indexing="ij")], 1).astype(float)
    ci = x[tuple(centres.astype(int).T)].astype(float)
    labels = np.zeros(x.shape, np.int32)
    dist = np.empty(x.shape, np.float32)
    axes = [np.arange(sz) * sp for sz, sp in zip(shape, spacing)]
    inv_m2, inv_s2 = 1.0 / compactness**2, 1.0 / cell_mm**2
    idx = np.indices(x.shape).reshape(3, -1)
    for _ in range(n_iter):
        dist.fill(np.inf)
        for k, c in enumerate(centres):
            lo = np.maximum(0, np.floor(c - step).astype(int))
            hi = np.minimum(shape, np.ceil(c + step).astype(int) + 1)
            sl = tuple(slice(a, b) for a, b in zip(lo, hi))
            dz = (axes[0][sl[0]] - c[0] * spacing[0])[:, None, None]
            dy = (axes[1][sl[1]] - c[1] * spacing[1])[None, :, None]
            dx = (axes[2][sl[2]] - c[2] * spacing[2])[None, None, :]
            d = (x[sl] - ci[k]) ** 2 * inv_m2 + (dz * dz + dy * dy + dx * dx) * inv_s2
            better = d < dist[sl]
            dist[sl][better] = d[better]
            labels[sl][better] = k
        flat = labels.ravel()
        cnt = np.bincount(flat, minlength=len(centres)).astype(float)
        keep = cnt > 0
        for a in range(3):
            centres[keep, a] = np.bincount(flat, idx[a], len(centres))[keep] / cnt[keep]
        ci[keep] = np.bincount(flat, x.ravel(), len(centres))[keep] / cnt[keep]
    _, labels = np.unique(labels, return_inverse=True)  # consecutive, dropping empty centres
    return (labels.reshape(x.shape) + 1).astype(np.int32)


def _adjacency(fine: np.ndarray, grad: np.ndarray, n: int):
    """Edges (u < v) between face-adjacent regions with face counts and summed face gradient."""
    keys, weights = [], []
    for ax in range(3):
        a = np.moveaxis(fine, ax, 0)
        g = np.moveaxis(grad, ax, 0)
        la, lb = a[:-1].ravel(), a[1:].ravel()
        diff = la != lb
        u, v = np.minimum(la[diff], lb[diff]), np.maximum(la[diff], lb[diff])
        keys.append(u.astype(np.int64) * (n + 1) + v)
        weights.append(0.5 * (g[:-1].ravel()[diff] + g[1:].ravel()[diff]))
    keys = np.concatenate(keys)
    uniq, inv = np.unique(keys, return_inverse=True)
    return uniq // (n + 1), uniq % (n + 1), np.bincount(inv), np.bincount(inv, np.concatenate(weights))


def _merge_tree(n, cnt, total, u, v, faces, fgrad):
    """Greedy merging of the region adjacency graph, smallest mean difference x edge first.

    Nodes 1..n are the fine regions, n+1.. the merges (children always have smaller ids).
    Returns per-node arrays ``(children, count, total, perimeter_faces, perimeter_gradient,
    merge_cost)``; ``children[m] = (a, b)``, ``(0, 0)`` for leaves.
    """
    size = 2 * n + 1
    c = np.zeros(size)
    s = np.zeros(size)
    c[: n + 1], s[: n + 1] = cnt, total
    pf, pg = np.zeros(size), np.zeros(size)
    children = np.zeros((size, 2), np.int64)
    merge_cost = np.zeros(size)
    nbr: list[dict] = [dict() for _ in range(size)]
    for a, b, f, g in zip(u.tolist(), v.tolist(), faces.tolist(), fgrad.tolist()):
        nbr[a][b] = [f, g]
        nbr[b][a] = [f, g]
    for i in range(1, n + 1):
        pf[i] = sum(e[0] for e in nbr[i].values())
        pg[i] = sum(e[1] for e in nbr[i].values())

    def cost(a, b, e):
        return abs(s[a] / c[a] - s[b] / c[b]) * (e[1] / e[0])

    heap = [(cost(a, b, nbr[a][b]), a, b) for a, b in zip(u.tolist(), v.tolist())]
    heapq.heapify(heap)
    alive = np.zeros(size, bool)
    alive[1 : n + 1] = True
    m = n
    while heap:
        cst, a, b = heapq.heappop(heap)
        if not (alive[a] and alive[b]):
            continue
        m += 1
        alive[a] = alive[b] = False
        alive[m] = True
        children[m] = (a, b)
        merge_cost[m] = cst
        c[m], s[m] = c[a] + c[b], s[a] + s[b]
        merged = nbr[a]
        for k, e in nbr[b].items():
            if k in merged:
                merged[k] = [merged[k][0] + e[0], merged[k][1] + e[1]]
            else:
                merged[k] = e
        merged.pop(a, None)
        merged.pop(b, None)
        nbr[m], nbr[a], nbr[b] = merged, {}, {}
        for k, e in merged.items():
            nk = nbr[k]
            nk.pop(a, None)
            nk.pop(b, None)
            nk[m] = e
            heapq.heappush(heap, (cost(m, k, e), m, k))
        pf[m] = sum(e[0] for e in merged.values())
        pg[m] = sum(e[1] for e in merged.values())
    last = m
    keep = slice(0, last + 1)
    return children[keep], c[keep], s[keep], pf[keep], pg[keep], merge_cost[keep]


def _leaf_intervals(children: np.ndarray, n: int):
    """Order leaves so that every node's leaves are contiguous; return (order, lo, hi)."""
    last = len(children) - 1
    lo = np.zeros(last + 1, np.int64)
    hi = np.zeros(last + 1, np.int64)
    order = []
    has_parent = np.zeros(last + 1, bool)
    has_parent[children[children[:, 0] > 0].ravel()] = True
    roots = [r for r in range(last, 0, -1) if not has_parent[r]]
    for root in roots:
        stack = [(root, False)]
        while stack:
            node, done = stack.pop()
            if done:
                a, b = children[node]
                lo[node], hi[node] = lo[a], hi[b]
            elif node <= n:
                lo[node] = len(order)
                order.append(node)
                hi[node] = len(order)
            else:
                a, b = children[node]
                stack += [(node, True), (b, False), (a, False)]
    return np.asarray(order, np.int64), lo, hi


def supervoxels(
    image: np.ndarray,
    spacing=(1.0, 1.0, 1.0),
    *,
    n_supervoxels: int = 3000,
    min_voxels: int | None = None,
    max_fraction: float = 0.3,
    min_lifetime: float = 1.5,
    min_edge_contrast: float = 1.5,
    min_compactness: float = 0.015,
    max_objects: int = 40,
    max_voxels: float = 2e6,
) -> np.ndarray:
    """Pseudo-label objects of an unlabelled volume (method in the module docstring).

    Args:
        image: (z, y, x) array of any real dtype.
        spacing: voxel size (z, y, x) in mm.
        n_supervoxels: approximate number of fine supervoxels.
        min_voxels: smallest object kept, in input voxels (default: 1/20000 of the volume, at
            least 27).
        max_fraction: largest object kept, as a fraction of the volume.
        min_lifetime: smallest lifetime (disappearance cost / formation cost) kept.
        min_edge_contrast: smallest boundary / interior mean gradient ratio kept.
        min_compactness: smallest ``voxels / boundary_faces**1.5`` kept (0.094 for a ball).
        max_objects: at most this many objects.
        max_voxels: larger volumes are processed on an integer-subsampled grid.

    Returns:
        int32 (z, y, x) label map of the input's shape, 0 = background, objects 1..K.
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"supervoxels needs a 3-D (z, y, x) image, got shape {image.shape}")
    full_shape = image.shape
    spacing = np.asarray(spacing, dtype=float)
    f = 1
    while np.prod([int(np.ceil(s / f)) for s in full_shape]) > max_voxels:
        f += 1
    x01 = _percentile_01(np.asarray(image, np.float32))
    if f > 1:
        x01 = ndi.uniform_filter(x01, f)[::f, ::f, ::f]
        spacing = spacing * f
    total_vox = x01.size
    min_vox = max(27, int(np.prod(full_shape) / 20000)) if min_voxels is None else int(min_voxels)
    min_vox = max(1, int(round(min_vox / f**3)))
    eq = _equalise(x01)
    grad = _gradient(eq, spacing, float(spacing.min()))
    smooth = ndi.gaussian_filter(eq, 0.7 * spacing.min() / spacing)
    fine = fine_supervoxels(smooth, spacing, n_supervoxels)
    n = int(fine.max())
    flat = fine.ravel()
    cnt = np.bincount(flat, minlength=n + 1).astype(float)
    u, v, faces, fgrad = _adjacency(fine, grad, n)
    children, c, s, pf, pg, mcost = _merge_tree(n, cnt, np.bincount(flat, eq.ravel(), n + 1), u, v, faces, fgrad)
    n_nodes = len(children)

    # per-node statistics, accumulated up the tree (children always have smaller ids)
    inner = np.zeros(n_nodes)  # largest merge cost inside the node
    death = np.full(n_nodes, np.inf)  # cost at which the node merged into its parent
    g_sum = np.zeros(n_nodes)
    g_sum[: n + 1] = np.bincount(flat, grad.ravel(), n + 1)
    bg = np.zeros(n_nodes)
    bg[: n + 1] = np.bincount(flat, _background(x01).ravel(), n + 1)
    for m in range(n + 1, n_nodes):
        a, b = children[m]
        inner[m] = max(mcost[m], inner[a], inner[b])
        death[a] = death[b] = mcost[m]
        g_sum[m] = g_sum[a] + g_sum[b]
        bg[m] = bg[a] + bg[b]
    first = (children[:, 0] > 0) & (children[:, 0] <= n) & (children[:, 1] <= n)
    floor = max(float(np.median(mcost[first])) if first.any() else 0.0, 1e-9)
    lifetime = death / np.maximum(inner, floor)
    edge_contrast = (pg / np.maximum(pf, 1)) / np.maximum(g_sum / np.maximum(c, 1), 1e-9)
    compactness = c / np.maximum(pf, 1) ** 1.5  # ~0.05 for a voxelised ball, ~0 for sheets
    ok = (c >= min_vox) & (c <= max_fraction * total_vox) & (bg < 0.5 * c)
    ok &= np.isfinite(lifetime) & (lifetime >= min_lifetime)
    ok &= (edge_contrast >= min_edge_contrast) & (compactness >= min_compactness)
    ok[0] = False
    cand = np.flatnonzero(ok)

    order, lo, hi = _leaf_intervals(children, n)
    edges = np.geomspace(min_vox, max(max_fraction * total_vox, min_vox + 1), 4)
    bins = np.clip(np.searchsorted(edges, c[cand], side="right") - 1, 0, 2)
    queues = [list(cand[bins == k][np.argsort(-edge_contrast[cand[bins == k]], kind="stable")]) for k in (2, 1, 0)]
    taken = np.zeros(len(order), bool)
    object_of = np.zeros(n + 1, np.int32)
    n_obj = 0
    while n_obj < max_objects and any(queues):
        for q in queues:
            while q:
                node = q.pop(0)
                if not taken[lo[node] : hi[node]].any():
                    taken[lo[node] : hi[node]] = True
                    n_obj += 1
                    object_of[order[lo[node] : hi[node]]] = n_obj
                    break
            if n_obj >= max_objects:
                break
    labels = _largest_components(object_of[fine], min_vox)
    if f > 1:
        idx = [np.minimum(np.arange(sz) // f, labels.shape[i] - 1) for i, sz in enumerate(full_shape)]
        labels = labels[np.ix_(*idx)]
    return labels


def _largest_components(labels: np.ndarray, min_voxels: int) -> np.ndarray:
    """Keep each object's largest 26-connected component; relabel 1..K; drop small ones."""
    out = np.zeros(labels.shape, np.int32)
    structure = np.ones((3, 3, 3), bool)
    k = 0
    for lab, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        cc, ncc = ndi.label(labels[sl] == lab, structure=structure)
        if ncc == 0:
            continue
        sizes = np.bincount(cc.ravel())
        sizes[0] = 0
        best = int(np.argmax(sizes))
        if sizes[best] < min_voxels:
            continue
        k += 1
        out[sl][cc == best] = k
    return out
