"""Registers ``nnint train`` (see docs/training.md)."""

from __future__ import annotations

import argparse
import json
import sys

from nnint.plugins import hookimpl


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", action="append", default=[], metavar="DIR",
                   help="nnU-Net raw dataset, folder of datasets, manifest folder, or synthetic:N[:SEED] (repeatable)")
    p.add_argument("--out", required=True, help="output folder (checkpoints, model/, log.csv, curves.png)")
    p.add_argument("--arch", default="small", help="small | tiny | v1 | PLANS.json[:CONFIGURATION] (default small)")
    p.add_argument("--patch", type=_patches, default=64,
                   help="training patch edge in voxels (default 64), or several (e.g. 64,96) alternated between batches")
    p.add_argument("--infer-patch", type=int, default=None,
                   help="inference patch edge written to plans.json (default: --patch)")
    p.add_argument("--iterations", type=int, default=10000, help="total iterations (default 10000)")
    p.add_argument("--minutes", type=float, default=None,
                   help="fit the run into M minutes of training: the iteration count (at most --iterations) is "
                        "re-estimated from the measured speed, so the learning rate still decays on time")
    p.add_argument("--batch", type=int, default=2, help="samples per iteration and process (default 2)")
    p.add_argument("--lr", type=float, default=None,
                   help="peak learning rate (default 1e-3 AdamW / 1e-2 SGD, divided by 10 with --init)")
    p.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw")
    p.add_argument("--device", default="cpu", help="cpu | cuda (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--workers", type=int, default=1, help="data-loading worker processes (default 1)")
    p.add_argument("--no-amp", action="store_true",
                   help="train in float32 (default: bf16/fp16 autocast on GPUs and on CPUs with bf16 instructions)")
    p.add_argument("--resume", action="store_true", help="continue OUT/checkpoint_latest.pth exactly")
    p.add_argument("--init", metavar="FOLDER", help="start from a compatible model folder (fine-tuning)")
    p.add_argument("--val-every", type=int, default=500, help="validate every N iterations (0: never)")
    p.add_argument("--val-cases", type=int, default=4, help="dev cases used for validation (default 4)")
    p.add_argument("--val-targets", type=int, default=3, help="targets per dev case (largest to smallest; default 3)")
    p.add_argument("--val-no-autozoom", action="store_true",
                   help="validate without AutoZoom (cheaper; default: the engine's normal behaviour)")
    p.add_argument("--save-every", type=int, default=200, help="checkpoint every N iterations (default 200)")
    p.add_argument("--save-minutes", type=float, default=10.0, help="... or every M minutes (default 10)")
    p.add_argument("--log-every", type=int, default=10, help="progress line every N iterations")
    p.add_argument("--max-rounds", type=int, default=3, help="most simulated correction rounds per iteration")
    p.add_argument("--min-cnr", type=float, default=0.0,
                   help="train only on targets whose contrast-to-noise ratio to their surround is at least this "
                        "(default 0: all); a curriculum that makes the network look at the image")
    p.add_argument("--magnify-samples", type=float, default=0.0,
                   help="share of small targets (under patch/6 across) shown magnified up to 3x, as the engine's "
                        "magnify option shows them (default 0: off)")
    p.add_argument("--first-prompts", type=_kinds, default=None, metavar="KIND[:W],...",
                   help="open every training episode with one of these prompt kinds (point, box2d, box3d, "
                        "scribble, lasso, initial_mask; optional weights, e.g. box3d:0.8,box2d:0.2); "
                        "default: all kinds. Trains a specialist for sessions that start that way")
    p.add_argument("--correction-weight", type=float, default=0.0,
                   help="extra cross-entropy weight of the error regions that simulated corrections point at "
                        "(default 0: off); teaches the network to act on clicks")
    p.add_argument("--boundary-weight", type=float, default=0.0,
                   help="weight of an auxiliary, training-only head that predicts where the label map changes "
                        "(a target no prompt gives away, so only the image can lower it; default 0: off; "
                        "fixed for the run, the exported model is the same)")
    p.add_argument("--window-rank", action="store_true",
                   help="add the window-rank input channel (the window's intensity ranks; helps faint soft-tissue "
                        "edges). With --init from a model without it, the fine-tune starts as that model")
    p.add_argument("--prompt-likeness", action="store_true",
                   help="add the prompt-likeness input channels (how alike each voxel is to what the positive "
                        "clicks, negative clicks, box middle and previous mask cover). With --init from a model "
                        "without them, the fine-tune starts as that model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--supervoxels", action="store_true", help="add supervoxel pseudo-label targets")
    p.add_argument("--redistributable-only", action="store_true",
                   help="train only on cases that provenance.json marks redistributable (weights you will ship)")
    p.add_argument("--cache", help="preprocessed-case cache folder (default OUT/cache)")
    p.add_argument("--license", help="LICENSE text of the exported model folder (first line = licence id)")
    p.add_argument("--export", action="store_true",
                   help="only export OUT/checkpoint_latest.pth as the model folder OUT/model and exit")
    _track_explicit(p)


def _kinds(text: str) -> dict[str, float]:
    from nnint.train.simulate import FIRST_KINDS

    out: dict[str, float] = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, _, weight = item.partition(":")
        if name not in FIRST_KINDS:
            raise argparse.ArgumentTypeError(f"{name!r} is not a prompt kind; choose from {', '.join(FIRST_KINDS)}")
        try:
            out[name] = float(weight) if weight else 1.0
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r}: the weight after ':' must be a number") from None
        if not out[name] > 0:
            raise argparse.ArgumentTypeError(f"{item!r}: weights must be positive")
    if not out:
        raise argparse.ArgumentTypeError("give at least one prompt kind, e.g. box3d")
    return out


def _patches(text: str) -> int | tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give an edge in voxels (64) or several (64,96)") from None
    if any(v < 16 for v in sizes):
        raise argparse.ArgumentTypeError(f"{text!r}: patch edges below 16 voxels do not fit the network")
    return sizes[0] if len(sizes) == 1 else sizes


def _track_explicit(p: argparse.ArgumentParser) -> None:
    """Make every option record its dest in ``namespace._explicit`` when given on the command line
    (on --resume, given options override the checkpoint's settings, the others are taken from it)."""
    for action in p._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        base = type(action)

        class Tracked(base):  # type: ignore[misc, valid-type]
            def __call__(self, parser, namespace, values, option_string=None):
                given = set(getattr(namespace, "_explicit", ()))
                given.add(self.dest)
                namespace._explicit = given
                super().__call__(parser, namespace, values, option_string)

        action.__class__ = Tracked


def _explicit(args) -> tuple:
    names = {"val_no_autozoom": "val_autozoom", "no_amp": "amp"}
    return tuple(sorted(names.get(k, k) for k in getattr(args, "_explicit", ()) if k != "out"))


def _run(args) -> int:
    import os

    # OpenMP threads that spin while waiting collapse under CPU contention (10x slower with 2
    # threads on a shared 2-core machine); passive waiting costs nothing when the machine is idle.
    # Only effective if torch's OpenMP runtime has not started yet.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from nnint.train.loop import TrainConfig, export_only, train

    if args.export:
        folder = export_only(args.out)
        print(f"wrote {folder}", file=sys.stderr)
        return 0
    cfg = TrainConfig(
        data=list(args.data), out=args.out, arch=args.arch, patch=args.patch, infer_patch=args.infer_patch,
        iterations=args.iterations, minutes=args.minutes, batch=args.batch, lr=args.lr, optimizer=args.optimizer, device=args.device,
        threads=args.threads, workers=args.workers, resume=args.resume, init=args.init, val_every=args.val_every,
        val_cases=args.val_cases, val_targets=args.val_targets,
        val_autozoom=not args.val_no_autozoom, save_every=args.save_every, save_minutes=args.save_minutes,
        log_every=args.log_every, seed=args.seed, supervoxels=args.supervoxels, max_rounds=args.max_rounds, min_cnr=args.min_cnr,
        correction_weight=args.correction_weight, magnify_samples=args.magnify_samples,
        first_prompts=args.first_prompts,
        boundary_weight=args.boundary_weight, window_rank=args.window_rank,
        prompt_likeness=args.prompt_likeness,
        cache=args.cache, license=args.license, amp=not args.no_amp,
        redistributable_only=args.redistributable_only, explicit=_explicit(args),
    )
    summary = train(cfg)
    print(json.dumps(summary, default=str))
    return 0


@hookimpl
def nnint_register_commands(register):
    register("train", "train (or fine-tune) a promptable segmentation model; writes an nnInteractive model folder",
             _arguments, _run)
