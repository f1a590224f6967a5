"""Final Dice of one or more `nnint evaluate` runs, grouped by how visible each target is.

Visibility is the contrast-to-noise ratio that `nnint train --min-cnr` filters training samples
by (:func:`nnint.train.dataset.contrast_to_noise`: the target's mean against a 2-voxel ring around
it, over the SD inside the target), on the raw image. The ring holds every neighbour, so a target
between a brighter and a darker neighbour reads lower than it looks; the ratio ranks targets, it
does not grade them.

Session 15 (v2 dev split, box + 5 / point + 5): on the 42 targets with a ratio >= 3 the network
(session 14) scored 0.765 / 0.641 and the classical region growing 0.714 / 0.656; on the 13 below 1
0.686 / 0.601 against 0.606 / 0.340. The network's lead comes mostly from shape priors on faint
targets, not from reading edges.

    python scripts/diagnose/dev_by_contrast.py out/eval-classical/results.csv out/eval-s14-mix/results.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path

import numpy as np

from nnint.evaluate.data import load_case, open_dataset
from nnint.train.dataset import contrast_to_noise

BINS = ((0.0, 1.0), (1.0, 2.0), (2.0, 3.0), (3.0, float("inf")))


def target_contrast(data: str, split: str, wanted: dict[str, set[int]]) -> dict[str, float]:
    """``{"case|label": contrast-to-noise ratio}`` for the targets in ``wanted``."""
    out = {}
    for case in open_dataset(data, split=split).cases:
        if case.name not in wanted:
            continue
        img, lab = load_case(case)
        a = img.array.astype(np.float32)
        for v in sorted(wanted[case.name]):
            t = lab == v
            # the target's bounding box plus the ring: the measure only looks there
            sl = tuple(slice(max(0, int(c.min()) - 3), int(c.max()) + 4) for c in np.nonzero(t))
            out[f"{case.name}|{v}"] = contrast_to_noise(a[sl], t[sl])
        print(f"  {case.name}: {len(wanted[case.name])} targets", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+", help="results.csv files of nnint evaluate (same split)")
    ap.add_argument("--data", default="data/raw-v2")
    ap.add_argument("--split", default="dev")
    ap.add_argument("--step", default=None, help="interaction step (default: the last one)")
    ap.add_argument("--cache", default="out/dev-contrast-v2.json", help="per-target ratios, reused if present")
    args = ap.parse_args()

    runs = {p: list(csv.DictReader(Path(p).read_text().splitlines())) for p in args.results}
    step = args.step or str(max(int(r["step"]) for rows in runs.values() for r in rows))
    wanted: dict[str, set[int]] = {}
    for rows in runs.values():
        for r in rows:
            wanted.setdefault(r["case"], set()).add(int(r["label"]))
    cache = Path(args.cache)
    ratio = json.loads(cache.read_text()) if cache.exists() else {}
    missing = {c: {v for v in vs if f"{c}|{v}" not in ratio} for c, vs in wanted.items()}
    missing = {c: vs for c, vs in missing.items() if vs}
    if missing:
        print(f"measuring contrast of {sum(map(len, missing.values()))} targets ...", flush=True)
        ratio.update(target_contrast(args.data, args.split, missing))
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(ratio, indent=1))

    protocols = sorted({r["protocol"] for rows in runs.values() for r in rows})
    for proto in protocols:
        print(f"\n{proto}, step {step}: mean Dice (targets) per contrast-to-noise bin")
        print("  " + " ".join(f"{f'[{lo:g}, {hi:g})':>16}" for lo, hi in BINS) + "  run")
        for path, rows in runs.items():
            cells = []
            for lo, hi in BINS:
                d = [float(r["dice"]) for r in rows if r["protocol"] == proto and r["step"] == step
                     and lo <= ratio[f"{r['case']}|{r['label']}"] < hi]
                cells.append(f"{statistics.mean(d):.3f} ({len(d)})" if d else "-")
            print("  " + " ".join(f"{c:>16}" for c in cells) + f"  {path}")


if __name__ == "__main__":
    main()
