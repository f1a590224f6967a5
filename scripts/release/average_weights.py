"""Average the weights of several snapshots of one training lineage into one snapshot (a "model soup").

    .venv/bin/python scripts/release/average_weights.py --out checkpoints/nnint-small-box-wip \
        checkpoints/nnint-small-box-wip@ead2f2e checkpoints/nnint-small-box-wip@7d91136

Each member is a weights snapshot (``scripts/release/snapshot_weights.py``); ``FOLDER@COMMIT`` reads
the folder as it was committed at COMMIT (``git archive``), so a soup of a snapshot and its own
earlier version is reproducible from the repository alone. The members must share plans.json
(same architecture and inputs). The output is an ordinary snapshot: the first member's model
folder with the float16 mean of every floating-point tensor, and a SNAPSHOT.json whose commands
are every member's training commands (each once, in order) followed by this command.

Why: networks fine-tuned from one another sit in one basin of the loss, and the mean of their
weights is often better than either end point (Wortsman et al. 2022, "Model soups"; the same idea
as stochastic weight averaging). Unlike a fold ensemble it costs nothing at inference: one network,
one forward pass. Each member's exported weights are already an exponential moving average over
about 1,000 iterations (nnint.train.loop.WeightAverage); the soup averages across runs.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from snapshot_weights import CKPT, FILES  # the sibling script (scripts/release is sys.path[0])

REPO = Path(__file__).resolve().parents[2]


def checkout(member: str, scratch: Path) -> Path:
    """``member`` as a folder: itself, or for ``FOLDER@COMMIT`` that folder as committed at COMMIT."""
    if "@" not in member:
        return Path(member)
    folder, commit = member.rsplit("@", 1)
    dest = scratch / commit
    dest.mkdir(parents=True, exist_ok=True)
    rel = Path(folder).resolve().relative_to(REPO)
    archive = subprocess.run(["git", "archive", commit, str(rel)], cwd=REPO, capture_output=True)
    if archive.returncode != 0:
        raise SystemExit(f"cannot read {rel} at {commit}: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest / rel


def mean_weights(states: list[dict]) -> dict:
    """The float16 mean of each floating-point tensor; tensors shared within the first state dict
    stay shared (an nnU-Net decoder holds its encoder, so every encoder tensor is named twice)."""
    first = states[0]
    if any(s.keys() != first.keys() for s in states[1:]):
        raise SystemExit("the members' networks have different tensors; average snapshots of one architecture")
    out: dict = {}
    done: dict[tuple, torch.Tensor] = {}
    for k, v in first.items():
        if not v.is_floating_point():
            out[k] = v
            continue
        key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape), tuple(v.stride()))
        if key not in done:
            done[key] = (sum(s[k].float() for s in states) / len(states)).half()
        out[k] = done[key]
    return out


def average(out: Path, members: list[str], argv: list[str]) -> dict:
    """Write the soup of ``members`` to ``out``; returns what its SNAPSHOT.json records."""
    with tempfile.TemporaryDirectory() as scratch:
        folders = [checkout(m, Path(scratch)) for m in members]
        plans = [json.loads((f / "plans.json").read_text()) for f in folders]
        if any(p != plans[0] for p in plans[1:]):
            raise SystemExit("the members' plans.json differ; average snapshots of one architecture and input layout")
        snaps = [json.loads((f / "SNAPSHOT.json").read_text()) for f in folders]
        ckpts = [torch.load(f / CKPT, map_location="cpu", weights_only=False) for f in folders]
        soup = ckpts[0]
        soup["network_weights"] = mean_weights([c["network_weights"] for c in ckpts])
        commands: dict[str, float] = {}
        for s in snaps:
            if len(s.get("command_minutes", ())) != len(s["commands"]):
                raise SystemExit("a member's SNAPSHOT.json lacks command_minutes (one number per command)")
            for c, m in zip(s["commands"], s["command_minutes"]):
                commands.setdefault(c, m)
        own = "python " + shlex.join(["scripts/release/average_weights.py", *argv])
        commands[own + "   # the mean of the members' weights (seconds)"] = 0
        staged = Path(scratch) / "out"
        (staged / CKPT).parent.mkdir(parents=True)
        for name in FILES:
            shutil.copy2(folders[0] / name, staged / name)
        torch.save(soup, staged / CKPT)
        meta = {
            "source": "average of " + ", ".join(members),
            "iteration": max(int(s.get("iteration", -1)) for s in snaps),
            "members": [{"member": m, "source": s.get("source"), "iteration": s.get("iteration"),
                         "snapshot_commit": s.get("snapshot_commit")} for m, s in zip(members, snaps)],
            "commands": list(commands),
            "command_minutes": list(commands.values()),
            "command_minutes_source": "the members' command_minutes; 0 for the averaging",
            "snapshot_commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                                              text=True).stdout.strip(),
            "weights": "float16 mean of the members' weights",
            "engine_options": snaps[0].get("engine_options", {}),
            "note": "",
        }
        (staged / "SNAPSHOT.json").write_text(json.dumps(meta, indent=1) + "\n")
        if out.exists():  # only now: a member may be the output folder itself
            shutil.rmtree(out)
        shutil.copytree(staged, out)
    return meta


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path, help="the snapshot folder to (re)write")
    p.add_argument("members", nargs="+", help="snapshot folders, FOLDER or FOLDER@COMMIT (at least two)")
    args = p.parse_args(argv)
    if len(args.members) < 2:
        raise SystemExit("name at least two snapshots to average")
    meta = average(args.out, args.members, argv)
    size = (args.out / CKPT).stat().st_size / 1e6
    print(f"averaged {len(args.members)} snapshots (latest iteration {meta['iteration']}): {size:.1f} MB -> {args.out}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
