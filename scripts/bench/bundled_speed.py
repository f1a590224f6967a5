"""Benchmark: per-interaction latency of a model on a 256x256x256 volume with 2 CPU threads
(issue: the bundled model must take at most 1.5 s per interaction, median).

    .venv/bin/python scripts/bench/bundled_speed.py [--model NAME|FOLDER] [--json out.json]

Builds a seeded CT-like 256^3 volume (``nnint.train.synthetic.ct_like``), picks five structures
spread over the size range, and for each one runs what a user does: a 3D box (a 2D box where the
model has no 3D boxes), a positive click inside, a negative click outside, a scribble and a lasso
on the middle slice; then a new object started by that positive click alone ("point first", where
AutoZoom may climb from a magnified window). Every ``Session.add`` is timed; the first image
statistics are timed apart.
Prints a table and the median; ``--json`` also writes the raw timings with the machine load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its OpenMP runtime

import numpy as np
from scipy import ndimage as ndi


def pick_targets(labels: np.ndarray, n: int) -> list[int]:
    values, counts = np.unique(labels[labels > 0], return_counts=True)
    order = values[np.argsort(counts)]
    order = order[counts[np.argsort(counts)] >= 30]  # clickable
    idx = np.unique(np.round(np.linspace(0, len(order) - 2, n)).astype(int))  # skip the body outline
    return [int(order[i]) for i in idx]


def prompts_for(target: np.ndarray, caps, rng: np.random.Generator) -> list:
    from nnint import Box, Lasso, Point, Scribble

    zz, yy, xx = np.nonzero(target)
    lo = np.array([zz.min(), yy.min(), xx.min()])
    hi = np.array([zz.max(), yy.max(), xx.max()]) + 1
    zmid = int(np.median(zz))
    out = []
    if "box3d" in caps.prompt_kinds:
        out.append(("box3d", Box(tuple(lo), tuple(hi), True)))
    else:
        out.append(("box2d", Box((zmid, lo[1], lo[2]), (zmid + 1, hi[1], hi[2]), True)))
    inside = ndi.distance_transform_edt(target)
    c = np.unravel_index(int(np.argmax(inside)), target.shape)
    out.append(("point+", Point(tuple(int(v) for v in c), True)))
    ring = ndi.binary_dilation(target, iterations=3) & ~target
    rz, ry, rx = np.nonzero(ring)
    k = int(rng.integers(len(rz)))
    out.append(("point-", Point((int(rz[k]), int(ry[k]), int(rx[k])), False)))
    sl = target[zmid]
    ys, xs = np.nonzero(sl)
    # a scribble: the middle row of the structure on its middle slice
    ymid = int(np.median(ys))
    row = sl[ymid]
    cols = np.nonzero(row)[0]
    scr = np.zeros((1, 1, cols.max() - cols.min() + 1), bool)
    scr[0, 0, cols - cols.min()] = True
    out.append(("scribble", Scribble(scr, (zmid, ymid, int(cols.min())), True)))
    # a lasso: the filled outline of the structure on its middle slice
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    filled = ndi.binary_fill_holes(sl[y0:y1, x0:x1])
    out.append(("lasso", Lasso(filled[None], (zmid, int(y0), int(x0)), True)))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="model name or folder (default: the bundled default model)")
    ap.add_argument("--size", type=int, default=256, help="edge of the cubic volume (default 256)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--targets", type=int, default=5)
    ap.add_argument("--json", help="write the timings here")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from nnint import Image, Session, load_engine
    from nnint.image import Geometry
    from nnint.plugins import resolve_model
    from nnint.train.synthetic import ct_like

    load0 = os.getloadavg()
    rng = np.random.default_rng(2026)
    t = time.perf_counter()
    vol, labels, spacing = ct_like(rng, (args.size,) * 3)
    print(f"volume {vol.shape} {vol.dtype} built in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    spec = resolve_model(args.model)
    engine = load_engine(spec, threads=args.threads)
    image = Image(vol, Geometry(spacing=tuple(float(v) for v in spacing[::-1])))
    t = time.perf_counter()
    session = Session(image, engine)
    set_image_s = time.perf_counter() - t
    rows = []
    for value in pick_targets(labels, args.targets):
        target = labels == value
        steps = prompts_for(target, engine.capabilities, rng)
        first_click = [("point first", dict(steps)["point+"])]
        for name, sequence in ((f"label {value}", steps), (f"label {value}, first click", first_click)):
            session.new_object(name=name)
            for kind, prompt in sequence:
                t = time.perf_counter()
                session.add(prompt)
                dt = time.perf_counter() - t
                d = float(2 * (session.active.mask.astype(bool) & target).sum()
                          / max(1, session.active.mask.astype(bool).sum() + target.sum()))
                rows.append({"label": value, "voxels": int(target.sum()), "kind": kind, "seconds": dt, "dice": d})
                print(f"  label {value:3d} ({int(target.sum()):7d} voxels) {kind:11s} {dt:6.2f} s  Dice {d:.3f}",
                      file=sys.stderr)
    secs = [r["seconds"] for r in rows]
    by_kind = {k: float(np.median([r["seconds"] for r in rows if r["kind"] == k]))
               for k in dict.fromkeys(r["kind"] for r in rows)}
    result = {
        "model": spec.name if spec else None,
        "volume": [args.size] * 3,
        "threads": args.threads,
        "interactions": len(rows),
        "median_seconds": float(np.median(secs)),
        "p90_seconds": float(np.percentile(secs, 90)),
        "max_seconds": float(np.max(secs)),
        "median_by_kind": by_kind,
        "set_image_seconds": set_image_s,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "load_average_before_after": [load0[0], os.getloadavg()[0]],
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "torch": torch.__version__,
        "rows": rows,
    }
    print(f"median {result['median_seconds']:.2f} s per interaction (p90 {result['p90_seconds']:.2f}, max "
          f"{result['max_seconds']:.2f}) over {len(rows)} interactions; image statistics {set_image_s:.2f} s; "
          f"by kind: " + ", ".join(f"{k} {v:.2f}" for k, v in by_kind.items())
          + f"; load average {load0[0]:.1f} -> {os.getloadavg()[0]:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
