"""Can a model fit one slice of its own training distribution when trained on nothing else?

Session 16 measured, with ``sample_dice.py`` at 96^3, that the committed weights score 0.08 Dice
for a first click on a training target of at most 500 voxels: they answer with a region 5-500x
the target, larger even than the click's own ball (a 257-voxel ball alone would score more). Is
that the mixture of tasks (the network could do it, but the other samples pull it elsewhere) or
the network (8 channels at full resolution cannot delineate a small object from one click)?

This script trains a copy of a model folder on only that slice (one first-prompt kind, targets
up to ``--max-voxels``, no correction rounds, no zoom, no previous mask), with the training
loop's loss, and prints the first-prompt Dice on ``--eval-samples`` held-out samples of the same
slice (another sample stream) every ``--eval-every`` iterations, next to two fixed answers:
the prompt's own footprint (a point's ball), an oracle that knows the target size (the ball
grown or cut to the target's volume around the click) and nnint's classical region growing. A network that can do the task climbs
well past the footprint within a few hundred iterations.

    python scripts/diagnose/focused_fit.py --model checkpoints/nnint-small-wip \\
        --data data/raw --data synthetic:120:0 --redistributable-only --cache runs/s12-cc64/cache \\
        --kind point --max-voxels 500 --iterations 600
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch

from nnint.backends.classical import ClassicalEngine
from nnint.backends.torch.checkpoint import load_model_folder
from nnint.backends.torch.network import PROMPT_LIKENESS_KEY, build_network, initialize_weights
from nnint.evaluate.metrics import dice
from nnint.image import Image
from nnint.train import dataset as ds
from nnint.train.loop import deep_supervision_loss, widened_weights


def slice_samples(trainset: ds.TrainSet, start: int, count: int, max_voxels: int,
                  min_growing: float = 0.0, min_voxels: int = 1) -> tuple[list[dict], int]:
    """``count`` samples of the slice, drawn from ``trainset`` from index ``start`` on (a sample
    whose target has more than ``max_voxels`` or fewer than ``min_voxels`` voxels, that has no
    prompt, or on which region growing scores below ``min_growing`` is skipped), and the index to
    continue from."""
    out, i = [], start
    while len(out) < count:
        item = trainset[i]
        i += 1
        if not item["prompts"] or not max(1, min_voxels) <= int(item["target"].sum()) <= max_voxels:
            continue
        if min_growing > 0 and dice(region_growing(item), target(item)) < min_growing:
            continue
        out.append(item)
    return out, i


def answers(net: torch.nn.Module, items: list[dict]) -> list[np.ndarray]:
    """The network's answer (bool mask) to each sample's prompts."""
    net.eval()
    out = []
    with torch.inference_mode():
        for item in items:
            logits = net(torch.cat([item["image"], item["channels"]])[None])
            out.append((logits[0, 1] > logits[0, 0]).numpy())
    net.train()
    return out


def evaluate(net: torch.nn.Module, items: list[dict]) -> float:
    return float(np.mean([dice(a, target(it)) for a, it in zip(answers(net, items), items)]))


def target(item: dict) -> np.ndarray:
    return item["target"].numpy().astype(bool)


def footprint(item: dict) -> np.ndarray:
    """Where any prompt channel is set (channel 0 is the previous mask)."""
    return (item["channels"].numpy()[1:] > 0).any(0)


def region_growing(item: dict) -> np.ndarray:
    """nnint's classical engine's answer to the sample's prompts on the sample's own window."""
    engine = ClassicalEngine()
    engine.set_image(Image(item["image"][0].numpy()))
    update = engine.predict(item["prompts"], np.zeros(tuple(item["target"].shape), np.uint8))
    answer = np.zeros(tuple(item["target"].shape), bool)
    if update is not None:
        answer[update.slices] = update.values > 0
    return answer


def references(items: list[dict]) -> tuple[float, float, float]:
    """Mean Dice of the prompt's footprint; of the window's voxels nearest the prompt, as many as
    the target has (an answer that knows the size but not the shape); and of nnint's classical
    region growing given the same prompt on the same (augmented, normalised) window."""
    foot, sized, grown = [], [], []
    for item in items:
        t, fp = target(item), footprint(item)
        grown.append(dice(region_growing(item), t))
        foot.append(dice(fp, t))
        centre = np.argwhere(fp).mean(0)
        dist = np.linalg.norm(np.indices(t.shape).reshape(3, -1).T - centre, axis=1)
        keep = np.zeros(t.size, bool)
        keep[np.argsort(dist, kind="stable")[: int(t.sum())]] = True
        sized.append(dice(keep.reshape(t.shape), t))
    return float(np.mean(foot)), float(np.mean(sized)), float(np.mean(grown))


def draw(path: str, items: list[dict], rows: list[tuple[str, list[np.ndarray]]], title: str) -> None:
    """One column per sample (the slice through its first prompt), one row per set of answers:
    target red, answer yellow, the prompt channels' footprint cyan."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axs = plt.subplots(len(rows), len(items), figsize=(3 * len(items), 3.3 * len(rows)), squeeze=False)
    for r, (label, preds) in enumerate(rows):
        for c, (item, pred) in enumerate(zip(items, preds)):
            t, fp = target(item), footprint(item)
            z = int(np.argwhere(fp)[:, 0].mean())
            ax = axs[r, c]
            ax.imshow(item["image"][0, z].numpy(), cmap="gray")
            for mask, colour, style in ((t, "r", "solid"), (pred, "y", "solid"), (fp, "c", "dotted")):
                if mask[z].any() and not mask[z].all():
                    ax.contour(mask[z], [0.5], colors=colour, linewidths=1.0, linestyles=style)
            ax.set_title(f"{label}: target {int(t.sum())}, answer {int(pred.sum())}, Dice {dice(pred, t):.2f}",
                         fontsize=8)
            ax.axis("off")
    fig.suptitle(title + "\nred: target, yellow: the network's answer, cyan dotted: the prompt", fontsize=10)
    plt.tight_layout(rect=(0, 0, 1, 0.92))
    plt.subplots_adjust(hspace=0.25)
    plt.savefig(path, dpi=60)
    plt.close(fig)


def with_prompt_likeness(mf) -> torch.nn.Module:
    """The network of model folder ``mf`` with the prompt-likeness channels added and zero weights
    on them (as ``nnint train --prompt-likeness --init`` does), so its answers are unchanged."""
    arch = copy.deepcopy(mf.architecture)
    arch["arch_kwargs"][PROMPT_LIKENESS_KEY] = True
    net = build_network(arch, mf.num_input_channels, mf.num_classes)
    net.load_state_dict(widened_weights(dict(mf.network_weights), net.state_dict()))
    return net


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="model folder to start from (copied; never written)")
    ap.add_argument("--data", action="append", required=True, help="as for nnint train (repeatable)")
    ap.add_argument("--cache", required=True, help="the runs' preprocessing cache")
    ap.add_argument("--redistributable-only", action="store_true")
    ap.add_argument("--kind", default="point", help="first-prompt kind: point, box2d, box3d, scribble, lasso")
    ap.add_argument("--max-voxels", type=int, default=500, help="largest target of the slice")
    ap.add_argument("--min-voxels", type=int, default=1, help="smallest target of the slice")
    ap.add_argument("--min-cnr", type=float, default=0.0, help="only targets at least this visible (as nnint train --min-cnr)")
    ap.add_argument("--min-region-growing", type=float, default=0.0,
                    help="only samples on which region growing reaches this Dice (targets an edge follower can find)")
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--iterations", type=int, default=600)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--from-scratch", action="store_true", help="re-initialise the weights (same architecture)")
    ap.add_argument("--prompt-likeness", action="store_true",
                    help="give the copy the prompt-likeness input channels first (zero stem weights: it starts as the model)")
    ap.add_argument("--eval-samples", type=int, default=60)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="also write the curve here")
    ap.add_argument("--png", help="also draw the first 4 held-out samples' answers before and after the fit here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    cases = ds.prepare_cases(args.data, args.cache, "train", redistributable_only=args.redistributable_only, log=None)
    mf = load_model_folder(args.model)
    net = (with_prompt_likeness(mf) if args.prompt_likeness else copy.deepcopy(mf.build_network("cpu"))).train()
    if args.from_scratch:
        initialize_weights(net)
    # only the slice: one first-prompt kind (small targets favoured unless --min-voxels), nothing zoomed or corrected
    cfg = ds.sample_config_for(mf, args.patch, first_kinds={args.kind: 1.0},
                               size_power=-1.0 if args.min_voxels <= 1 else 0.0, p_zoom=0.0,
                               p_big=0.0, p_big_click=0.0, p_refine=0.0, p_corrupt_prev=0.0,
                               min_cnr=args.min_cnr)
    held_out, _ = slice_samples(ds.TrainSet(cases, cfg, seed=10_000 + args.seed), 0, args.eval_samples, args.max_voxels,
                                args.min_region_growing, args.min_voxels)
    foot, sized, grown = references(held_out)
    print(f"held-out slice: {len(held_out)} samples, {args.kind}, targets <= {args.max_voxels} voxels, CNR >= {args.min_cnr}; "
          f"footprint Dice {foot:.3f}, size-oracle ball {sized:.3f}, region growing {grown:.3f}", flush=True)
    stream = ds.TrainSet(cases, cfg, seed=args.seed)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=3e-5)
    shown = held_out[:4]
    before = answers(net, shown) if args.png else []
    curve = [{"iteration": 0, "dice": evaluate(net, held_out)}]
    print(f"it 0  held-out Dice {curve[-1]['dice']:.3f}", flush=True)
    t0, index, losses = time.perf_counter(), 0, []
    for it in range(1, args.iterations + 1):
        batch, index = slice_samples(stream, index, args.batch, args.max_voxels, args.min_region_growing,
                                     args.min_voxels)
        x = torch.stack([torch.cat([b["image"], b["channels"]]) for b in batch])
        target = torch.stack([b["target"] for b in batch])
        loss = deep_supervision_loss(net.forward_deep_supervision(x), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 12.0)
        opt.step()
        losses.append(loss.item())
        if it % args.eval_every == 0 or it == args.iterations:
            curve.append({"iteration": it, "dice": evaluate(net, held_out), "loss": float(np.mean(losses[-args.eval_every:]))})
            print(f"it {it}  loss {curve[-1]['loss']:.3f}  held-out Dice {curve[-1]['dice']:.3f}  "
                  f"({(time.perf_counter() - t0) / it:.2f} s/it)", flush=True)
    if args.png:
        draw(args.png, shown, [("before", before), (f"it {args.iterations}", answers(net, shown))],
             f"{args.kind} on targets <= {args.max_voxels} voxels (CNR >= {args.min_cnr}), {args.patch}^3 windows, {args.model}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "footprint_dice": foot, "size_oracle_dice": sized, "region_growing_dice": grown, "curve": curve}, f, indent=1)


if __name__ == "__main__":
    main()
