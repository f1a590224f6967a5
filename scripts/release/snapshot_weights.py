"""Keep a training run's latest weights in the repository, so the next session can continue from them.

    .venv/bin/python scripts/release/snapshot_weights.py --run runs/NAME --out checkpoints/nnint-small-wip

Why: a session's ``runs/`` folder (gitignored) does not survive into the next session's checkout
(session 10 started from an empty one and lost 14,000 CPU iterations). Only what is committed
survives. A full training checkpoint (weights + AdamW moments) is ~66 MB, too big to commit every
session, so this keeps only the exported model folder with its weights stored as float16
(11 MB instead of 22 MB). ``nnint train --init OUT`` and the torch backend load it unchanged
(``load_state_dict`` casts to the network's float32); the optimiser state and the learning-rate
schedule are not kept, so continue with a short warm-up, as every ``--init`` run does.

Writes OUT/{plans.json, dataset.json, inference_info.json, LICENSE, fold_0/checkpoint_final.pth} and
OUT/SNAPSHOT.json (where the weights came from: the run's commands and iteration, and the commit checked out when the snapshot was taken). This is a
work-in-progress warm start, not the bundled model: ``scripts/release/bundle_model.py`` ships one.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
FILES = ("plans.json", "dataset.json", "inference_info.json", "LICENSE")
CKPT = Path("fold_0") / "checkpoint_final.pth"


def _half(weights: dict) -> dict:
    """float16 copies of the floating-point tensors, keeping shared tensors shared: an nnU-Net
    decoder holds its encoder, so the state dict names every encoder tensor twice."""
    done: dict[tuple, torch.Tensor] = {}
    out = {}
    for k, v in weights.items():
        if not v.is_floating_point():
            out[k] = v
            continue
        key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape), tuple(v.stride()))
        if key not in done:
            done[key] = v.half()
        out[k] = done[key]
    return out


def snapshot(run: Path, out: Path, note: str = "") -> dict:
    """Copy ``run/model`` to ``out`` with float16 weights; returns what SNAPSHOT.json records."""
    model = run / "model"
    if not (model / CKPT).is_file():
        raise SystemExit(f"{model / CKPT} is missing: export the run first (nnint train --out {run} --export)")
    ckpt = torch.load(model / CKPT, map_location="cpu", weights_only=False)
    ckpt["network_weights"] = _half(ckpt["network_weights"])
    if out.exists():
        shutil.rmtree(out)
    (out / CKPT).parent.mkdir(parents=True)
    for name in FILES:
        shutil.copy2(model / name, out / name)
    torch.save(ckpt, out / CKPT)
    commands = (run / "COMMAND.txt").read_text().splitlines() if (run / "COMMAND.txt").exists() else []
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    meta = {
        "source": str(run),
        "iteration": int(ckpt.get("current_epoch", -1)),
        "commands": [c for c in commands if c.strip()],
        "snapshot_commit": commit,
        "weights": "float16 copy of the exported float32 weights",
        "note": note,
    }
    (out / "SNAPSHOT.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, type=Path, help="an nnint train output folder (uses RUN/model)")
    p.add_argument("--out", required=True, type=Path, help="the snapshot folder to (re)write")
    p.add_argument("--note", default="", help="one line for SNAPSHOT.json (e.g. the dev numbers)")
    args = p.parse_args(argv)
    meta = snapshot(args.run, args.out, args.note)
    size = (args.out / CKPT).stat().st_size / 1e6
    print(f"snapshot of {args.run} (iteration {meta['iteration']}): {size:.1f} MB -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
