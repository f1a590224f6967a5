"""Does the answer to a first click depend on where the window sits around it?

For medium dev targets (500-20,000 voxels) of the synthetic dev cases, one click at the target's
deepest voxel (the evaluation's first click), one forward pass without AutoZoom, four windows:

* ``click96``: 96^3 centred on the click (what the engine does),
* ``box96``: 96^3 centred on the target's bounding-box centre (what training did for most
  first prompts until session 12; the click is then off-centre),
* ``click64`` / ``click128``: smaller / larger windows centred on the click.

Prints mean Dice and the median predicted/true voxel ratio per model and window.

Session 12 (24 targets): the GPU-phase weights gave 0.147 / 0.410 (click96 / box96; ratio 26.7 /
1.3), s11-cpu64 0.342 / 0.420 (3.6 / 0.5): a click at the window centre was read as "an object
larger than the window", the one kind of training sample that had its click there.

    python scripts/diagnose/window_centre.py --model s11=checkpoints/nnint-small-wip \\
        --model gpu2=runs/gpu2/model --data data/raw-v2 --json docs/bench/window-centre-session12.json
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from scipy import ndimage as ndi

from nnint.backends.torch.checkpoint import load_model_folder
from nnint.backends.torch.engine import TorchEngine
from nnint.evaluate.data import load_case, open_dataset
from nnint.prompts import Point

WINDOWS = (("click96", "click", 96), ("box96", "box", 96), ("click64", "click", 64), ("click128", "click", 128))


def first_click(target: np.ndarray) -> tuple[int, int, int]:
    edt = ndi.distance_transform_edt(np.pad(target, 1))[1:-1, 1:-1, 1:-1]
    return tuple(int(v) for v in np.unravel_index(np.argmax(edt), edt.shape))  # type: ignore[return-value]


def answer(engine: TorchEngine, click, centre, patch: int, shape) -> np.ndarray:
    """The engine's own input builder and forward pass for one window; the answer on the image grid."""
    engine.patch_size = (patch,) * 3
    try:
        plan = engine._plan([Point(click, True)])
        ni = engine._input(plan, np.zeros(shape, np.uint8), centre, 1.0)
        pred = engine._forward(ni.x, ni.win_lo, ni.size).astype(bool)
    finally:
        engine.patch_size = tuple(int(p) for p in engine.model_folder.patch_size)
    full = np.zeros(shape, bool)
    lo = ni.win_lo
    clo = [max(0, a) for a in lo]
    chi = [min(s, b) for s, b in zip(shape, ni.win_hi)]
    full[tuple(slice(a, b) for a, b in zip(clo, chi))] = pred[tuple(slice(a - o, b - o) for a, b, o in zip(clo, chi, lo))]
    return full


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True, help="NAME=FOLDER (repeatable)")
    ap.add_argument("--data", default="data/raw-v2")
    ap.add_argument("--split", default="dev")
    ap.add_argument("--every", type=int, default=2, help="every N-th synthetic dev case (default 2)")
    ap.add_argument("--per-case", type=int, default=3, help="medium targets per case")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    folders = {m.split("=", 1)[0]: load_model_folder(m.split("=", 1)[1]) for m in args.model}
    cases = [c for c in open_dataset(args.data, split=args.split).cases if "Synthetic" in c.name][:: args.every]
    scores: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for case in cases:
        img, lab = load_case(case)
        vals, counts = np.unique(lab[lab > 0], return_counts=True)
        medium = [(v, n) for v, n in zip(vals, counts) if 500 <= n <= 20000][: args.per_case]
        engines = {}
        for name, mf in folders.items():
            engines[name] = TorchEngine(mf, autozoom=False, threads=args.threads)
            engines[name].set_image(img)
        for v, n in medium:
            target = lab == v
            click = first_click(target)
            idx = np.argwhere(target)
            box_centre = tuple(int(c) for c in (idx.min(0) + idx.max(0)) // 2)
            for name, engine in engines.items():
                for label, where, patch in WINDOWS:
                    pred = answer(engine, click, click if where == "click" else box_centre, patch, img.shape)
                    dice = 2 * float((pred & target).sum()) / float(pred.sum() + n)
                    scores.setdefault((name, label), []).append((dice, float(pred.sum()) / n))
        print(f"{case.name}: {len(medium)} targets", flush=True)
    rows = []
    for (name, label), v in scores.items():
        a = np.asarray(v)
        rows.append({"model": name, "window": label, "n": len(a), "dice": round(float(a[:, 0].mean()), 3),
                     "median_pred_over_true": round(float(np.median(a[:, 1])), 2)})
        print(f"{name:12s} {label:9s} n {len(a):3d}  Dice {rows[-1]['dice']:.3f}  pred/true {rows[-1]['median_pred_over_true']:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"models": {k: str(mf.path) for k, mf in folders.items()}, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
