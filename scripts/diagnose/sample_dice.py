"""How well does a model do on its own training distribution? First-prompt Dice on training samples.

Draws ``--samples`` training samples exactly as ``nnint train`` does (same cases, cache, sampling
rules), runs the model once on each (the first prompt only, no correction rounds) and prints the
mean Dice per sample kind and target size. A model that scores low here is under-fitted (more or
better training helps); one that scores high here but low on the dev split does not generalise
(the data or the train/inference gap is the problem).

Each sample is also scored with its image spatially shuffled (the same voxel values at random
places, prompts unchanged). A model that segments from what it sees loses most of its Dice
there; one that barely changes answers from the prompts' geometry and the intensity histogram
(session 7: v5 it 10,000, 150 samples at 64^3, 0.479 -> 0.379). Session 5: the it-14,062 `small`
model gave 0.43 overall here (200 samples, seed 999), 0.04 for a click on a target filling the patch: it is
under-fitted (docs/training.md, "Session 5").

    python scripts/diagnose/sample_dice.py --model runs/bundled-v4/model \\
        --data data/raw --data synthetic:120:0 --redistributable-only --cache runs/bundled-v1/cache
"""

from __future__ import annotations

import argparse
import collections
import json

import numpy as np
import torch

from nnint.backends.torch.checkpoint import load_model_folder
from nnint.train import dataset as ds


def sample_kind(item: dict) -> str:
    if item["zoom"] > 1.0:
        return "zoomed-out view"
    kind = type(item["prompts"][0]).__name__
    return kind + (" + previous mask" if item["prev_seg"].any() else "")


def size_class(target: np.ndarray) -> str:
    if target.mean() > 0.15:
        return "fills >15 % of the patch"
    return "medium (>500 voxels)" if target.sum() > 500 else "small (<=500 voxels)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="model folder (e.g. a run's model/)")
    ap.add_argument("--data", action="append", required=True, help="as for nnint train (repeatable)")
    ap.add_argument("--cache", required=True, help="the run's preprocessing cache")
    ap.add_argument("--redistributable-only", action="store_true", help="as for nnint train (the bundled-model runs use it)")
    ap.add_argument("--patch", type=int, default=64, help="training patch size")
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--seed", type=int, default=999, help="sample stream (not the run's own seed)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-cnr", type=float, default=0.0, help="only targets at least this visible (as nnint train --min-cnr)")
    ap.add_argument("--json", help="also write the table here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    cases = ds.prepare_cases(args.data, args.cache, "train", redistributable_only=args.redistributable_only, log=None)
    mf = load_model_folder(args.model)
    net = mf.build_network("cpu")
    cfg = ds.sample_config_for(mf, args.patch, min_cnr=args.min_cnr)
    samples = ds.TrainSet(cases, cfg, seed=args.seed)
    shuffle_rng = torch.Generator().manual_seed(args.seed)
    dice: dict[tuple[str, str], list[tuple[float, float]]] = collections.defaultdict(list)
    for i in range(args.samples):
        item = samples[i]
        target = item["target"].numpy().astype(bool)
        image = item["image"]
        # the same voxel values at random places: what is left when the image's spatial structure
        # (edges, shapes) is removed but its intensity histogram is kept
        shuffled = image.reshape(-1)[torch.randperm(image.numel(), generator=shuffle_rng)].reshape(image.shape)
        pair = []
        for img in (image, shuffled):
            with torch.inference_mode():
                logits = net(torch.cat([img, item["channels"]])[None])
            pred = (logits[0, 1] > logits[0, 0]).numpy()
            pair.append(2 * float((pred & target).sum()) / max(1, int(pred.sum() + target.sum())))
        for key in ((sample_kind(item), size_class(target)), ("all", size_class(target)), ("all", "all")):
            dice[key].append(tuple(pair))
        if (i + 1) % 50 == 0:
            so_far = np.mean(dice[("all", "all")], axis=0)
            print(f"{i + 1}/{args.samples} samples, mean Dice so far {so_far[0]:.3f} (shuffled image {so_far[1]:.3f})", flush=True)
    rows = []
    for (k, s), v in sorted(dice.items()):
        real, shuf = np.mean(v, axis=0)
        rows.append({"kind": k, "size": s, "n": len(v), "dice": round(float(real), 3), "dice_shuffled_image": round(float(shuf), 3)})
    for r in rows:
        print(f"{r['kind']:<28} {r['size']:<26} n={r['n']:<4} Dice {r['dice']:.3f}  shuffled image {r['dice_shuffled_image']:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "samples": args.samples, "seed": args.seed, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
