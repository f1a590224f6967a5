"""A minimal nnint backend: grow the region of voxels whose intensity is close to the positive clicks.

Everything a backend needs: an Engine with ``capabilities``, ``set_image`` and ``predict``, and a
hook implementation that registers a factory for it.
"""

import numpy as np
from scipy import ndimage

from nnint import BackendSpec, Capabilities, MaskUpdate, hookimpl


class FloodEngine:
    capabilities = Capabilities({"point"})

    def __init__(self, tolerance: float = 1.0) -> None:
        self.tolerance = tolerance  # in standard deviations of the image

    def set_image(self, image):
        self.image = image.array.astype(np.float32)
        self.std = float(self.image.std())

    def predict(self, prompts, mask):
        seeds = [p.index for p in prompts if p.positive]
        if not seeds:
            return MaskUpdate((0, 0, 0), np.zeros_like(mask))
        level = np.mean([self.image[s] for s in seeds])
        similar = np.abs(self.image - level) <= self.tolerance * self.std
        for p in prompts:
            if not p.positive:
                similar[p.index] = False
        regions, _ = ndimage.label(similar)
        keep = np.unique([regions[s] for s in seeds if regions[s] > 0])
        return MaskUpdate((0, 0, 0), np.isin(regions, keep).astype(np.uint8))


@hookimpl
def nnint_register_backends(register):
    register(BackendSpec("flood", lambda model=None, device="cpu", **options: FloodEngine(**options),
                         "example plugin: flood fill from clicks", needs_model=False))
