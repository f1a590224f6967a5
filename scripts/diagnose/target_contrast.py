"""How far apart are a target and its surround after the engine's normalisation?

For every N-th case of a split and up to 8 targets (>= 200 voxels) each, prints the contrast
``|mean(target) - mean(2-voxel ring around it)|`` and the noise ``SD(target eroded by 1)``, both
in units of the whole-volume z-score the engine applies (mean / unbiased SD inside the bounding
box of non-zero voxels, reference-behaviour.md §4.1).

Session 12 (v2 dev split): synthetic CT 0.01-1.8 contrast with 0.01-0.9 noise (most soft tissues
0.1-0.9 / 0.01-0.07: a high CNR at a tiny amplitude, because air and bone are in the bounding
box), synthetic MR 0.03-1.9, microscopy 0.2-4.9, real MR brain 1.9, Hammers regions 0.01-0.6.

    python scripts/diagnose/target_contrast.py --data data/raw-v2 --split dev
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import ndimage as ndi

from nnint.backends.torch.zoom import image_statistics
from nnint.evaluate.data import load_case, open_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/raw-v2")
    ap.add_argument("--split", default="dev")
    ap.add_argument("--cases", type=int, default=12, help="about this many cases, evenly spaced")
    args = ap.parse_args()
    cases = open_dataset(args.data, split=args.split).cases
    for case in cases[:: max(1, len(cases) // args.cases)]:
        img, lab = load_case(case)
        a = img.array.astype(np.float32)
        _mean, sd, _bbox = image_statistics(a)
        out = []
        values, counts = np.unique(lab[lab > 0], return_counts=True)
        for v, n in list(zip(values, counts))[:8]:
            if n < 200:
                continue
            t = lab == v
            ring = ndi.binary_dilation(t, iterations=2) & ~t
            inner = ndi.binary_erosion(t, iterations=1)
            contrast = abs(float(a[t].mean()) - float(a[ring].mean())) / sd
            noise = float(a[inner].std()) / sd if inner.sum() > 10 else float("nan")
            out.append(f"{contrast:.2f}/{noise:.2f}")
        print(f"{case.name}: z-score SD {sd:.4g}; contrast/noise per target: {' '.join(out)}", flush=True)


if __name__ == "__main__":
    main()
