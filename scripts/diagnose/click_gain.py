"""Does a model act on correction clicks? Dice after the first prompt and after each of K clicks.

Draws ``--samples`` training samples exactly as ``nnint train`` does (first prompt only), runs the
model, then places ``--clicks`` correction clicks the way ``nnint evaluate`` does (CVPR 2025: the
deepest voxel of the largest error component, :func:`nnint.evaluate.clicks.next_click`), feeding
the prediction back as the previous mask with the same rasteriser as training and inference. The
window stays the training patch (the engine re-centres on each click; this isolates the network).

Prints the mean Dice per step by first-prompt kind, the mean gain of positive and negative clicks,
and the share of clicks that change nothing. Session 8 found on the dev split that after a 3-D box
the it-14,062 model left 40 % of the negative clicks without effect (the same click repeated five
times on one target); this measures that on the training distribution, where it can be trained
(200 samples: 30 % after a 3-D box; 12 % after the `--correction-weight 20` fine-tune, whose
clicks act but gain no more Dice: docs/training.md, "Session 8").

    python scripts/diagnose/click_gain.py --model runs/bundled-v2-it14062-model \\
        --data data/raw --data synthetic:120:0 --redistributable-only \\
        --cache runs/bundled-v1/cache --samples 200
"""

from __future__ import annotations

import argparse
import collections
import json

import numpy as np
import torch

from nnint.backends.torch.checkpoint import load_model_folder
from nnint.evaluate.clicks import next_click
from nnint.prompts import Point
from nnint.train import dataset as ds
from nnint.train import simulate


def first_kind(item: dict) -> str:
    p = item["prompts"][0]
    name = type(p).__name__
    if name == "Box":
        return "box2d" if p.is_2d else "box3d"
    return name.lower()


def dice(pred: np.ndarray, target: np.ndarray) -> float:
    return 2 * float((pred & target).sum()) / max(1, int(pred.sum() + target.sum()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="model folder")
    ap.add_argument("--data", action="append", required=True, help="as for nnint train (repeatable)")
    ap.add_argument("--cache", required=True, help="the run's preprocessing cache")
    ap.add_argument("--redistributable-only", action="store_true")
    ap.add_argument("--patch", type=int, default=64, help="training patch size")
    ap.add_argument("--samples", type=int, default=120)
    ap.add_argument("--clicks", type=int, default=3)
    ap.add_argument("--seed", type=int, default=999, help="sample stream (not the run's own seed)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="also write the numbers here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    cases = ds.prepare_cases(args.data, args.cache, "train", redistributable_only=args.redistributable_only, log=None)
    mf = load_model_folder(args.model)
    net = mf.build_network("cpu").eval()
    cfg = ds.sample_config_for(mf, args.patch, p_zoom=0.0, p_corrupt_prev=0.0)
    samples = ds.TrainSet(cases, cfg, seed=args.seed)
    rng = np.random.default_rng(args.seed)

    def run(image, channels) -> np.ndarray:
        with torch.inference_mode():
            logits = net(torch.cat([image, channels])[None])
        return (logits[0, 1] > logits[0, 0]).numpy()

    curves: dict[str, list[list[float]]] = collections.defaultdict(list)
    gains: dict[str, list[float]] = collections.defaultdict(list)
    i = n = 0
    while n < args.samples:
        item = samples[i]
        i += 1
        if item["zoom"] > 1.0 or item["prev_seg"].any() or len(item["prompts"]) != 1:
            continue  # first prompts on an empty mask only (what both evaluation protocols start with)
        n += 1
        target = item["target"].numpy().astype(bool)
        prompts = list(item["prompts"])
        pred = run(item["image"], item["channels"])
        curve = [dice(pred, target)]
        for _ in range(args.clicks):
            c = next_click(pred, target, rng=rng)
            if c is None:
                curve.append(curve[-1])
                continue
            prompts.append(Point(tuple(int(v) for v in c.zyx), bool(c.positive)))
            ch = simulate.prompt_channels(prompts, pred.astype(np.uint8), decay=cfg.decay, point_radius=cfg.point_radius,
                                          mapping=cfg.mapping, num_channels=cfg.num_channels)
            new = run(item["image"], torch.from_numpy(ch))
            curve.append(dice(new, target))
            gains["point+" if c.positive else "point-"].append(curve[-1] - curve[-2])
            gains[("point+" if c.positive else "point-") + " after " + first_kind(item)].append(curve[-1] - curve[-2])
            pred = new
        curves[first_kind(item)].append(curve)
        curves["all"].append(curve)
        if n % 40 == 0:
            print(f"{n}/{args.samples} samples", flush=True)
    out = {"model": args.model, "samples": args.samples, "clicks": args.clicks, "seed": args.seed, "curves": {}, "clicks_by_kind": {}}
    for k, v in sorted(curves.items()):
        m = np.mean(v, axis=0)
        out["curves"][k] = {"n": len(v), "dice_per_step": [round(float(x), 3) for x in m]}
        print(f"{k:<10} n={len(v):<4} Dice per step " + " ".join(f"{x:.3f}" for x in m))
    for k, v in sorted(gains.items()):
        v = np.asarray(v)
        out["clicks_by_kind"][k] = {"n": int(v.size), "mean_gain": round(float(v.mean()), 4),
                                    "no_effect": round(float((np.abs(v) < 0.005).mean()), 3)}
        print(f"{k:<22} n={v.size:<4} mean gain {v.mean():+.3f}  no effect (|gain| < 0.005) {(np.abs(v) < 0.005).mean():.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
