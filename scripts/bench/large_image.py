"""Benchmark: a CT-sized 1000x512x512 int16 volume must load and take prompts on a 24 GiB machine
with peak RSS under 3x the image's float32 size (issue: the prompt channels must not cost 7 full
float volumes).

    python scripts/bench/large_image.py [--model NAME|FOLDER] [--shape 1000,512,512]

Prints the peak RSS after each stage and the ratio to the float32 size of the image.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import numpy as np


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model name or folder (default: the bundled model)")
    ap.add_argument("--shape", default="1000,512,512")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from nnint import Box, Image, Point, Scribble, Session, load_engine

    shape = tuple(int(s) for s in args.shape.split(","))
    f32_gb = np.prod(shape) * 4 / 2**30
    print(f"volume {shape} int16 = {np.prod(shape) * 2 / 2**30:.2f} GiB; float32 size {f32_gb:.2f} GiB; "
          f"limit 3x = {3 * f32_gb:.2f} GiB", flush=True)
    print(f"baseline (python + torch imported): peak RSS {peak_rss_gb():.2f} GiB", flush=True)
    # CT-like: air, a body cylinder of soft tissue, an organ; built slab by slab to stay small
    vol = np.full(shape, -1000, np.int16)
    yy, xx = np.mgrid[: shape[1], : shape[2]]
    body = (yy - shape[1] / 2) ** 2 + (xx - shape[2] / 2) ** 2 < (0.42 * shape[1]) ** 2
    organ2d = (yy - shape[1] * 0.45) ** 2 / 0.9 + (xx - shape[2] * 0.4) ** 2 < (0.12 * shape[1]) ** 2
    rng = np.random.default_rng(0)
    zc = shape[0] // 2
    for z in range(shape[0]):
        sl = vol[z]
        sl[body] = 40
        if abs(z - zc) < shape[0] * 0.06:
            sl[organ2d] = 140
        sl += rng.integers(-15, 16, sl.shape, dtype=np.int16)
    print(f"volume built: peak RSS {peak_rss_gb():.2f} GiB", flush=True)
    t = time.perf_counter()
    image = Image(vol)
    engine = load_engine(args.model, threads=args.threads) if args.model else load_engine(threads=args.threads)
    session = Session(image, engine)
    print(f"session ready in {time.perf_counter() - t:.1f} s: peak RSS {peak_rss_gb():.2f} GiB", flush=True)
    cy, cx = int(shape[1] * 0.45), int(shape[2] * 0.4)
    r = int(0.1 * shape[1])
    prompts = [
        Point((zc, cy, cx)),
        Box((zc, cy - r, cx - r), (zc + 1, cy + r, cx + r)),
        Scribble.from_polyline([[zc + 5, cy - r // 2, cx], [zc + 5, cy + r // 2, cx]], 2),
        Point((zc, cy - 2 * r, cx), positive=False),
    ]
    for i, p in enumerate(prompts, 1):
        t = time.perf_counter()
        session.add(p)
        print(f"prompt {i} {p.kind}: {time.perf_counter() - t:.2f} s, mask {int(session.active.mask.sum())} voxels, "
              f"peak RSS {peak_rss_gb():.2f} GiB", flush=True)
    peak = peak_rss_gb()
    print(f"RESULT peak RSS {peak:.2f} GiB = {peak / f32_gb:.2f}x the float32 image size (target < 3x): "
          f"{'PASS' if peak < 3 * f32_gb else 'FAIL'}")
    return 0 if peak < 3 * f32_gb else 1


if __name__ == "__main__":
    sys.exit(main())
