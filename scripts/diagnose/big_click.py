"""What does a model answer to one click on a region bigger than its window?

Draws training samples of the "big click" kind (``SampleConfig.p_big_click = 1``: a window of
``--patch`` voxels centred on a voxel of a target larger than the window, one positive click
there, no previous mask), runs each model once per sample and prints the mean Dice per model;
``--png`` draws the first rows (image, target, each model's answer on the click's slice).

Session 9: at 64^3, the training patch, a fine-tuned model filled much of such regions, but at
96^3, the inference window, the same weights answered with a small ball around the click:

    python scripts/diagnose/big_click.py --model it-14062=runs/bundled-v2-it14062-model \\
        --model v10=runs/bundled-v10-it8000-model --data data/raw --data synthetic:120:0 \\
        --redistributable-only --cache runs/bundled-v1/cache --patch 96 --png big_click.png
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from nnint.backends.torch.checkpoint import load_model_folder
from nnint.train import dataset as ds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True, help="NAME=FOLDER (repeatable)")
    ap.add_argument("--data", action="append", required=True, help="as for nnint train (repeatable)")
    ap.add_argument("--cache", required=True, help="the run's preprocessing cache")
    ap.add_argument("--redistributable-only", action="store_true")
    ap.add_argument("--patch", type=int, default=96, help="window edge (96 = the bundled model's inference window)")
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--rows", type=int, default=6, help="samples drawn in the PNG")
    ap.add_argument("--seed", type=int, default=123)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--png")
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    models = [m.split("=", 1) for m in args.model]
    folders = [load_model_folder(f) for _, f in models]
    nets = [mf.build_network("cpu") for mf in folders]
    cases = ds.prepare_cases(args.data, args.cache, "train", redistributable_only=args.redistributable_only, log=None)
    cfg = ds.sample_config_for(folders[0], args.patch, p_big_click=1.0, big_click_kinds={"point": 1.0})
    samples = ds.TrainSet(cases, cfg, seed=args.seed)
    dice = np.zeros((args.samples, len(nets)))
    shown = []
    for i in range(args.samples):
        item = samples[i]
        target = item["target"].numpy().astype(bool)
        preds = []
        for k, net in enumerate(nets):
            with torch.inference_mode():
                logits = net(torch.cat([item["image"], item["channels"]])[None])
            pred = (logits[0, 1] > logits[0, 0]).numpy()
            dice[i, k] = 2 * float((pred & target).sum()) / max(1, int(pred.sum() + target.sum()))
            preds.append(pred)
        if len(shown) < args.rows:
            shown.append((item, target, preds, dice[i].copy()))
    means = {name: round(float(v), 3) for (name, _), v in zip(models, dice.mean(0))}
    print(f"{args.samples} big-click samples at {args.patch}^3, mean Dice: "
          + ", ".join(f"{k} {v:.3f}" for k, v in means.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"patch": args.patch, "samples": args.samples, "seed": args.seed, "mean_dice": means}, f, indent=1)
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        cols = 2 + len(nets)
        fig, ax = plt.subplots(len(shown), cols, figsize=(2.2 * cols, 2.2 * len(shown)), squeeze=False)
        for r, (item, target, preds, d) in enumerate(shown):
            click = item["prompts"][0].index
            z = click[0]
            ax[r, 0].imshow(item["image"][0, z], cmap="gray")
            ax[r, 0].set_title("image + click", fontsize=8)
            ax[r, 1].imshow(target[z], cmap="gray")
            ax[r, 1].set_title(f"target ({100 * target.mean():.0f} % of window)", fontsize=8)
            for k, pred in enumerate(preds):
                ax[r, 2 + k].imshow(pred[z], cmap="gray")
                ax[r, 2 + k].set_title(f"{models[k][0]}: Dice {d[k]:.2f}", fontsize=8)
            for a in ax[r]:
                a.plot(click[2], click[1], "r+", ms=8)
                a.axis("off")
        fig.suptitle(f"one click on a region bigger than the {args.patch}^3 window", fontsize=9)
        fig.tight_layout()
        fig.savefig(args.png, dpi=55)


if __name__ == "__main__":
    main()
