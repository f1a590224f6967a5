"""Training-time normalisation and augmentation (numpy / scipy / torch only).

* :func:`normalise` -- exactly the inference preprocessing (reference-behaviour.md §4.1): z-score of
  the whole volume with the mean and the *unbiased* standard deviation of channel 0 inside the
  bounding box of the non-zero voxels. Training applies it to the whole volume once, before
  cropping, so patches come from the same distribution the network sees at inference; padding
  outside a volume is 0 in normalised space, as in the engine.
* :func:`spatial` -- flips, 90-degree rotations (cubic patches only) and a small random affine
  (rotation, per-axis scale) applied jointly to the image and the label patch.
* :func:`intensity` -- brightness, contrast, gamma (sometimes on the inverted image), inversion,
  low resolution (down- then up-sampling), Gaussian noise, blur and a smooth multiplicative bias
  field, all in normalised space on one patch.

All randomness comes from the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["normalise", "statistics", "nonzero_bbox", "spatial", "intensity", "flip_rot", "AugmentConfig"]


def nonzero_bbox(image: np.ndarray) -> tuple[slice, ...]:
    """Per axis, the first..last index whose slice has a non-zero sum (the engine's rule)."""
    a = np.asarray(image, np.float32)
    out = []
    for ax in range(a.ndim):
        nz = np.flatnonzero(a.sum(axis=tuple(i for i in range(a.ndim) if i != ax)) != 0)
        if nz.size == 0:
            raise ValueError("the image is all zero; it cannot be normalised")
        out.append(slice(int(nz[0]), int(nz[-1]) + 1))
    return tuple(out)


def statistics(image: np.ndarray) -> tuple[float, float]:
    """``(mean, std)`` of the inference preprocessing, computed by the torch backend's own
    function when it is installed (so the values are identical), else by the same rule here."""
    try:
        from nnint.backends.torch.zoom import image_statistics
    except ImportError:
        image_statistics = None
    if image_statistics is not None:
        try:
            mean, std, _ = image_statistics(np.asarray(image))
            return float(mean), float(std)
        except Exception:  # noqa: BLE001 - constant images: fall back to a harmless std of 1
            pass
    img = np.asarray(image, dtype=np.float32)
    inside = torch.from_numpy(np.ascontiguousarray(img[nonzero_bbox(img)]))
    mean, std = float(inside.mean()), float(inside.std())  # torch default std: unbiased
    if not math.isfinite(std) or std == 0.0:
        std = 1.0
    return mean, std


def normalise(image: np.ndarray) -> np.ndarray:
    """Inference normalisation of a (z, y, x) volume: ``(float32(x) - mean) / std``; float32."""
    mean, std = statistics(image)
    return (np.asarray(image, dtype=np.float32) - np.float32(mean)) / np.float32(std)


class AugmentConfig:
    """Probabilities and ranges (defaults follow nnU-Net's usual magnitudes, slightly milder)."""

    p_flip = 0.5
    p_rot90 = 0.5
    p_affine = 0.2
    rotation_deg = 15.0
    scale = (0.8, 1.25)
    p_brightness = 0.15
    brightness = (0.75, 1.25)
    p_contrast = 0.15
    contrast = (0.75, 1.25)
    p_gamma = 0.3
    gamma = (0.7, 1.5)
    p_gamma_inverted = 0.1
    p_invert = 0.05
    p_lowres = 0.2
    lowres = (0.5, 1.0)
    p_noise = 0.15
    noise_std = (0.0, 0.1)
    p_blur = 0.1
    blur_sigma = (0.5, 1.0)
    p_bias = 0.15
    bias_strength = (0.05, 0.3)


DEFAULT = AugmentConfig()


def flip_rot(arrays: list[np.ndarray], rng: np.random.Generator, cfg: AugmentConfig | None = None,
             spatial_axes_from: int = -3) -> list[np.ndarray]:
    """Apply the same random flips and 90-degree rotation to arrays whose last three axes are spatial."""
    cfg = cfg or DEFAULT
    axes = [spatial_axes_from + i for i in range(3)]
    shape = arrays[0].shape[-3:]
    for ax in axes:
        if rng.random() < cfg.p_flip:
            arrays = [np.flip(a, ax) for a in arrays]
    if rng.random() < cfg.p_rot90:
        pairs = [(i, j) for i in range(3) for j in range(i + 1, 3) if shape[i] == shape[j]]
        if pairs:
            i, j = pairs[int(rng.integers(len(pairs)))]
            k = int(rng.integers(1, 4))
            arrays = [np.rot90(a, k, axes=(axes[i], axes[j])) for a in arrays]
    return [np.ascontiguousarray(a) for a in arrays]


def _rotation_matrix(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    m = np.eye(3)
    for i, j in ((0, 1), (0, 2), (1, 2)):
        t = math.radians(rng.uniform(-max_deg, max_deg))
        r = np.eye(3)
        r[i, i] = r[j, j] = math.cos(t)
        r[i, j], r[j, i] = -math.sin(t), math.sin(t)
        m = m @ r
    return m


def spatial(image: np.ndarray, label: np.ndarray, rng: np.random.Generator,
            cfg: AugmentConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Joint spatial augmentation of a (z, y, x) float32 patch and its bool/uint8 label patch
    (or a (k, z, y, x) stack of them, transformed identically; the random draws do not depend on k).

    The affine resamples about the patch centre (trilinear for the image, trilinear + 0.5 threshold
    for the label); outside the patch reads 0 (the normalised-space padding of the engine).
    """
    cfg = cfg or DEFAULT
    if rng.random() < cfg.p_affine:
        rot = _rotation_matrix(rng, cfg.rotation_deg)
        sc = np.diag(1.0 / rng.uniform(*cfg.scale, size=3)) if rng.random() < 0.7 else np.eye(3)
        mat = rot @ sc  # output -> input coordinates (normalised [-1, 1]), in (z, y, x) order
        # grid_sample expects (x, y, z) order in the last dimension
        perm = [2, 1, 0]
        theta = torch.zeros(1, 3, 4, dtype=torch.float32)
        theta[0, :, :3] = torch.from_numpy(mat[np.ix_(perm, perm)].astype(np.float32))
        shape = image.shape
        grid = F.affine_grid(theta, (1, 1) + tuple(shape), align_corners=False)
        labels = np.asarray(label).reshape((-1,) + tuple(shape))
        both = torch.from_numpy(np.concatenate([image[None].astype(np.float32), labels.astype(np.float32)]))[None]
        out = F.grid_sample(both, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0].numpy()
        image, label = out[0], (out[1:] > 0.5).reshape(np.shape(label))
    image, label = flip_rot([image, np.asarray(label)], rng, cfg)
    return image, label


def _smooth_field(rng: np.random.Generator, shape, n_ctrl: int = 4) -> np.ndarray:
    coarse = torch.from_numpy(rng.standard_normal((1, 1, n_ctrl, n_ctrl, n_ctrl)).astype(np.float32))
    return F.interpolate(coarse, size=tuple(shape), mode="trilinear", align_corners=True)[0, 0].numpy()


def intensity(image: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig | None = None) -> np.ndarray:
    """Intensity augmentation of one normalised (z, y, x) float32 patch (returns a new array)."""
    cfg = cfg or DEFAULT
    img = np.array(image, dtype=np.float32, copy=True)
    shape = img.shape
    if rng.random() < cfg.p_lowres:
        f = rng.uniform(*cfg.lowres)
        per_axis = [f if rng.random() < 0.8 else 1.0 for _ in range(3)]
        small = tuple(max(2, int(round(s * p))) for s, p in zip(shape, per_axis))
        t = torch.from_numpy(img)[None, None]
        t = F.interpolate(t, size=small, mode="nearest")
        img = F.interpolate(t, size=shape, mode="trilinear", align_corners=False)[0, 0].numpy()
    if rng.random() < cfg.p_blur:
        from scipy.ndimage import gaussian_filter

        img = gaussian_filter(img, rng.uniform(*cfg.blur_sigma))
    if rng.random() < cfg.p_noise:
        img = img + rng.normal(0.0, rng.uniform(*cfg.noise_std), shape).astype(np.float32)
    if rng.random() < cfg.p_bias:
        img = img * np.exp(rng.uniform(*cfg.bias_strength) * _smooth_field(rng, shape)).astype(np.float32)
    if rng.random() < cfg.p_brightness:
        img = img * np.float32(rng.uniform(*cfg.brightness))
    if rng.random() < cfg.p_contrast:
        m = img.mean()
        lo, hi = img.min(), img.max()
        img = np.clip((img - m) * np.float32(rng.uniform(*cfg.contrast)) + m, lo, hi)
    if rng.random() < cfg.p_gamma:
        inverted = rng.random() < cfg.p_gamma_inverted
        if inverted:
            img = -img
        m, s = img.mean(), img.std()
        lo, rng_ = img.min(), float(img.max() - img.min())
        if rng_ > 1e-8:
            g = rng.uniform(cfg.gamma[0], 1.0) if rng.random() < 0.5 else rng.uniform(1.0, cfg.gamma[1])
            img = np.power((img - lo) / rng_, g) * rng_ + lo
            img = (img - img.mean()) / max(float(img.std()), 1e-8) * s + m  # keep mean and std
        if inverted:
            img = -img
    if rng.random() < cfg.p_invert:
        img = -img
    return img.astype(np.float32, copy=False)
