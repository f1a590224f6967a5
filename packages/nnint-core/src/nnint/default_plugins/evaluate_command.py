"""Registers ``nnint evaluate``: simulated users drive models through sessions; Dice, NSD, time per step."""

from __future__ import annotations

import argparse
import sys

from nnint.plugins import hookimpl


def _labels(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--labels {text!r}: expected comma-separated integers, e.g. 1,2") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"--labels {text!r}: label values are positive integers")
    return values


def _evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, metavar="DIR",
                   help="nnU-Net raw dataset folder (dataset.json, imagesTr/labelsTr, imagesTs/labelsTs), "
                   "a folder of such datasets, or a folder with a manifest.json of image/label pairs")
    p.add_argument("--model", action="append", metavar="NAME",
                   help="registered model name or model folder; repeat for side-by-side curves; "
                   "'classical' is the classical backend")
    p.add_argument("--backend", help="backend for every --model (default: each model's own); "
                   "'--backend classical' without --model evaluates the classical backend")
    p.add_argument("--protocol", action="append", metavar="NAME",
                   help="simulated user: box+clicks (default), points, scribble, lasso, box2d; repeatable, "
                   "or comma-separated")
    p.add_argument("--clicks", type=int, default=5, help="corrections after the initial prompt (default: 5)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (results.csv, summary.json, report.png)")
    p.add_argument("--resume", action="store_true",
                   help="keep results.csv and skip (case, structure, model, protocol) already complete")
    p.add_argument("--split", help="a split of splits.json (e.g. dev), or train/test for imagesTr/imagesTs")
    p.add_argument("--cases", type=int, metavar="N", help="evaluate only the first N cases (sorted by name)")
    p.add_argument("--labels", type=_labels, metavar="1,2", help="evaluate only these label values")
    p.add_argument("--structures", type=int, metavar="N",
                   help="at most N structures per case, spread from the smallest to the largest")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulated users (default: 0)")
    p.add_argument("--nsd-rule", choices=("all", "challenge"), default="all",
                   help="'challenge': NSD only where Dice > 0.2, else 0 (CVPR 2025); 'all': always (default)")
    p.add_argument("--nsd-tolerance", type=float, default=2.0, metavar="MM", help="NSD tolerance in mm (default: 2)")
    p.add_argument("--report-only", action="store_true", help="only rewrite summary.json and report.png from results.csv")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def _evaluate(args) -> int:
    from nnint.evaluate.report import write_report
    from nnint.evaluate.runner import EvalConfig, run_evaluation

    protocols: list[str] = []
    for item in args.protocol or ["box+clicks"]:
        protocols += [p.strip() for p in item.split(",") if p.strip()]
    config = EvalConfig(
        data=args.data,
        out=args.out,
        models=tuple(args.model or ()),
        backend=args.backend,
        protocols=tuple(protocols),
        clicks=args.clicks,
        resume=args.resume,
        split=args.split,
        max_cases=args.cases,
        labels=tuple(args.labels) if args.labels else None,
        max_structures=args.structures,
        device=args.device,
        seed=args.seed,
        nsd_rule=args.nsd_rule,
        nsd_tolerance_mm=args.nsd_tolerance,
        progress=not args.quiet,
    )
    if args.report_only:
        summary = write_report(args.out)
    else:
        run_evaluation(config)
        summary = write_report(args.out)
    for model, per_protocol in summary.get("results", {}).items():
        for protocol, block in per_protocol.items():
            o = block["overall"]
            print(
                f"{model:<20} {protocol:<11} n={o['n_targets']:<4} initial Dice {o['initial_dice']:.3f}  "
                f"final Dice {o['final_dice']:.3f}  final NSD {o['final_nsd']:.3f}  "
                f"median {o['median_seconds']:.3f} s/interaction"
            )
    print(f"wrote {args.out}/results.csv, summary.json, report.png", file=sys.stderr)
    return 0


@hookimpl
def nnint_register_commands(register):
    register(
        "evaluate",
        "simulated-user evaluation: Dice/NSD per interaction for one or more models",
        _evaluate_arguments,
        _evaluate,
    )
