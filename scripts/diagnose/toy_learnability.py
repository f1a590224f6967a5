"""Can this network and loss learn to follow image edges at all? A from-scratch toy run.

Trains a training architecture (``small`` by default) from scratch on procedurally drawn volumes
that are easy by construction (six ellipsoids of distinct intensity in blurred noise, contrast many
times the noise), with a click at a deep voxel of one ellipsoid as the only prompt, rasterised by
the inference code path. Every ``--every`` iterations it prints the mean Dice on ``--held-out``
(40) fixed held-out volumes with the real image and with the image's voxels spatially shuffled
(prompts unchanged). A network that learns from the image pulls the two apart within a few
hundred iterations.

Session 7 (2 CPU threads, fp32, 32^3, batch 4, AdamW 1e-3): real / shuffled 0.58 / 0.55 after 100
iterations, 0.71 / 0.41 after 600; with ``--noise 1.5`` (about 5x fainter edges) 0.65 / 0.46 after
600. So network, loss and optimiser learn edge-following quickly; the `nnint train` models, which
rely little on the image of their own data (`sample_dice.py` at 64^3: 0.48 / 0.38), are held back
by how hard that data is for the compute spent, not by the architecture. With ``--bf16`` the same
run diverges to NaN within 100 iterations (non-finite gradients in the 2^3 bottleneck stage),
which is why `nnint train` now skips non-finite steps.

    python scripts/diagnose/toy_learnability.py --iterations 600

Session 12, CT-like toys (``--ct``: the window's corners are air at -2, outside a cylindrical
body; ellipsoids and body differ by at most 0.4 with 10x less noise, as soft tissues do after
the whole-volume z-score of a CT; 1 thread, 800 iterations, held-out Dice): plain 0.635; the image replaced by its window
rank 0.740; the window rank as a 9th input (``--window-rank``, the network's ``WindowRank``)
0.703. (Measured with an exact argsort rank; the module uses a 1,024-bin histogram.)

    python scripts/diagnose/toy_learnability.py --iterations 800 --ct --window-rank

Session 16, from a trained model folder (``--init``): the session-14 weights score 0.43 on these
toys before any toy training and 0.72 after 400 iterations at lr 1e-3 (from scratch 0.70), so a
warm start is as plastic as a new network here.

    python scripts/diagnose/toy_learnability.py --init checkpoints/nnint-small-wip --lr 1e-3 --iterations 400
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy import ndimage as ndi

from nnint.backends.torch.network import WINDOW_RANK_KEY, build_network, initialize_weights
from nnint.prompts import Point
from nnint.train import simulate
from nnint.train.loop import ARCHITECTURES, deep_supervision_loss


def draw(rng: np.random.Generator, patch: int, noise: float = 0.3, ct: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(image, prompt channels, target)`` of one toy volume; ``noise``: SD of the noise before
    the blur (ellipsoid means differ by ~1.3 on average). ``ct``: intensities as soft tissue in a
    z-scored CT: 10x smaller differences and noise, and air (-2) outside a cylindrical body."""
    scale = 0.1 if ct else 1.0
    grid = np.indices((patch,) * 3)
    image = rng.normal(0, noise * scale, (patch,) * 3).astype(np.float32)
    labels = np.zeros((patch,) * 3, np.int32)
    for k in range(1, 7):
        centre, radii = rng.uniform(4, patch - 4, 3), rng.uniform(3, 12, 3) * patch / 32
        inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) < 1
        image[inside] = rng.normal(0, noise * scale, int(inside.sum())) + rng.uniform(-2, 2) * scale
        labels[inside] = k
    if ct:
        body = sum(((g - patch / 2 - rng.uniform(-4, 4)) / (patch * 0.6)) ** 2 for g in grid[:2]) < 1
        image[~body] = -2.0 + rng.normal(0, 0.01, int((~body).sum()))
        labels[~body] = 0
    image = ndi.gaussian_filter(image, 0.7)
    present = [k for k in range(1, 7) if (labels == k).sum() > 20]
    target = labels == present[int(rng.integers(len(present)))]
    click = Point(simulate.edt_point(target, rng, 4.0), True)
    channels = simulate.prompt_channels([click], np.zeros(target.shape, np.uint8),
                                        mapping=dict(simulate.LEGACY_MAPPING), num_channels=7)
    return image, channels, target


def held_out_dice(net: torch.nn.Module, patch: int, n: int = 40, **kind) -> tuple[float, float]:
    net.eval()
    rng = np.random.default_rng(123)
    scores: list[list[float]] = [[], []]
    for _ in range(n):
        image, channels, target = draw(rng, patch, **kind)
        for j, img in enumerate((image, rng.permutation(image.ravel()).reshape(image.shape))):
            x = torch.from_numpy(np.concatenate([img[None], channels]))[None]
            with torch.no_grad():
                pred = net(x).argmax(1)[0].numpy().astype(bool)
            scores[j].append(2 * (pred & target).sum() / max(1, pred.sum() + target.sum()))
    net.train()
    return float(np.mean(scores[0])), float(np.mean(scores[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="small", choices=sorted(ARCHITECTURES))
    ap.add_argument("--patch", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--iterations", type=int, default=600)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--held-out", type=int, default=40, help="held-out volumes scored at each report")
    ap.add_argument("--noise", type=float, default=0.3, help="noise SD before the blur (harder data: larger)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (as nnint train on CPUs that have it)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ct", action="store_true", help="CT-like intensities (faint soft-tissue edges next to air)")
    ap.add_argument("--window-rank", action="store_true", help="the network's window-rank input channel")
    ap.add_argument("--init", help="start from this model folder's weights (its architecture; --arch and "
                                   "--window-rank are then ignored) instead of from scratch")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    if args.init:
        from nnint.backends.torch.checkpoint import load_model_folder

        net = load_model_folder(args.init).build_network("cpu").train()
    else:
        arch = ARCHITECTURES[args.arch]()
        arch["arch_kwargs"][WINDOW_RANK_KEY] = args.window_rank
        net = build_network(arch, 8, 2)
        initialize_weights(net)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=3e-5)
    real, shuffled = held_out_dice(net, args.patch, args.held_out, noise=args.noise, ct=args.ct)
    print(f"it 0  held-out Dice {real:.3f}, shuffled image {shuffled:.3f}", flush=True)
    t0 = time.perf_counter()  # training time only
    for it in range(1, args.iterations + 1):
        batch = [draw(rng, args.patch, args.noise, args.ct) for _ in range(args.batch)]
        x = torch.from_numpy(np.stack([np.concatenate([i[None], c]) for i, c, _ in batch]))
        t = torch.from_numpy(np.stack([tg for _, _, tg in batch]))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            loss = deep_supervision_loss(net.forward_deep_supervision(x), t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 12.0)
        opt.step()
        if it % args.every == 0:
            real, shuffled = held_out_dice(net, args.patch, args.held_out, noise=args.noise, ct=args.ct)
            print(f"it {it}  {time.perf_counter() - t0:.0f} s  loss {loss.item():.3f}  "
                  f"held-out Dice {real:.3f}, shuffled image {shuffled:.3f}", flush=True)


if __name__ == "__main__":
    main()
