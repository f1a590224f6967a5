"""Pack the real training cases for a machine that has no raw data, no SimpleITK and no network.

    .venv/bin/python scripts/device/pack_cases.py --data data/raw --exclude-source synthetic \
        --redistributable-only --out .devicepack/cases

A rented GPU (this project's device machine) gets a copy of the working tree of at most 64 MiB and
cannot download anything; the preprocessed training cache is 1.6 GB. This writes the cases of
``--data`` (train split) as a case pack (:func:`nnint.train.dataset.write_pack`: normalised
images in float16, compressed; ~34 MB for the five redistributable real MR cases) that
``nnint train --data pack:DIR`` reads there. Synthetic cases are better regenerated on the machine
(``--data synthetic:N:SEED``): they are noise-heavy and compress badly.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nnint.train import dataset as ds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", action="append", required=True, help="nnU-Net raw dataset or folder of them (repeatable)")
    p.add_argument("--out", required=True, help="pack folder to write (one .npz per case)")
    p.add_argument("--cache", default="runs/pack-cache", help="preprocessed-case cache (reused if fresh)")
    p.add_argument("--redistributable-only", action="store_true", help="only cases provenance.json marks redistributable")
    p.add_argument("--exclude-source", action="append", default=[],
                   help="leave out cases whose provenance 'source' is this (e.g. synthetic); repeatable")
    args = p.parse_args(argv)
    # licence and source come from the provenance files, so only the cases to pack are prepared
    free = {name for name, _ in ds._list_sources(args.data, "train", redistributable_only=True)}
    sources = {}
    for src in args.data:
        for key, entry in (ds._provenance(src) or {}).items():
            sources[key] = entry.get("source")

    def wanted(name: str) -> bool:
        return (not args.redistributable_only or name in free) and sources.get(name) not in args.exclude_source

    keep = ds.prepare_cases(args.data, args.cache, "train", keep=wanted, log=print)
    files = ds.write_pack(keep, args.out, {r.name: r.name in free for r in keep})
    total = sum(f.stat().st_size for f in files)
    for f in files:
        print(f"{f}  {f.stat().st_size / 1e6:.1f} MB")
    print(f"{len(files)} cases, {total / 1e6:.1f} MB in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
