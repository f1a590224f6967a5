"""Put several trained model folders into one folder as folds, for the engine's fold ensemble.

    .venv/bin/python scripts/release/ensemble_folder.py --out OUT FIRST_MODEL OTHER_MODEL [...]

The member with the most weights (the one with the most input extensions; the first of them on a
tie) gives the folder its ``plans.json``, ``dataset.json``, ``inference_info.json`` and
``LICENSE``; member ``k`` becomes ``fold_k/checkpoint_final.pth`` with float16 weights (as
``snapshot_weights.py`` stores them). A member whose network lacks one of those parameter-free
input extensions (window rank, prompt likeness) gets zero weights for the extra inputs, so it
computes exactly what it computed before (``nnint.train.loop.widened_weights``).
Everything else about the members must match: the channel layout, decay and point radius are
checked, and every fold is loaded back strictly before the folder is kept.

Load it with ``use_fold: [0, 1, ...]`` among the model card's ``engine_options`` (or
``TorchEngine.from_model(OUT, use_fold=[0, 1])``): the engine averages the folds' softmax
(:mod:`nnint.backends.torch.ensemble`). Or keep one fold as the model and route objects to a
specialist fold by their first prompt: ``use_fold: 0, specialist_folds: {"box3d": 1}``. The
official package loads one fold of it (``use_fold=0``).
OUT/ENSEMBLE.json records where each fold came from.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from snapshot_weights import FILES, _half  # the sibling script (scripts/release is sys.path[0])

from nnint.backends.torch.checkpoint import load_model_folder
from nnint.backends.torch.network import build_network
from nnint.train.loop import widened_weights

CKPT = "checkpoint_final.pth"


def _same_prompts(a, b) -> list[str]:
    keys = ("channel_mapping", "num_interaction_channels", "num_image_channels", "interaction_decay", "point_radius",
            "patch_size", "configuration_name")
    return [k for k in keys if getattr(a, k) != getattr(b, k)]


def build(out: Path, members: list[Path]) -> dict:
    """Write ``out`` (which must not exist); returns what ENSEMBLE.json records."""
    if out.exists():
        raise SystemExit(f"{out} exists; remove it or pick another --out")
    loaded = [load_model_folder(m) for m in members]
    size = [sum(w.numel() for w in mf.network_weights.values()) for mf in loaded]
    widest = max(range(len(members)), key=lambda k: (size[k], -k))
    first = loaded[widest]
    n_in = first.num_input_channels
    with torch.device("meta"):
        wanted = build_network(first.architecture, n_in, first.num_classes).state_dict()
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    record = {"members": []}
    try:
        for name in FILES:
            if (members[widest] / name).is_file():
                shutil.copy2(members[widest] / name, tmp / name)
        for k, (path, mf) in enumerate(zip(members, loaded)):
            diff = _same_prompts(first, mf)
            if diff:
                raise SystemExit(f"{path} differs from {members[widest]} in {', '.join(diff)}; it cannot be a fold of it")
            ckpt = torch.load(mf.checkpoint_file, map_location="cpu", weights_only=False)
            ckpt["network_weights"] = _half(widened_weights(dict(mf.network_weights), wanted))
            ckpt.setdefault("init_args", {})["fold"] = k
            (tmp / f"fold_{k}").mkdir()
            torch.save(ckpt, tmp / f"fold_{k}" / CKPT)
            snap = path / "SNAPSHOT.json"
            record["members"].append({
                "fold": k, "source": str(path),
                "snapshot": json.loads(snap.read_text()) if snap.is_file() else None,
            })
        for k in range(len(members)):  # every fold must load strictly with the folder's plans
            load_model_folder(tmp, k).build_network("cpu")
        (tmp / "ENSEMBLE.json").write_text(json.dumps(record, indent=1) + "\n")
        tmp.chmod(0o755)  # mkdtemp creates 0700; a model folder is meant to be shared
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return record


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("members", nargs="+", type=Path, help="model folders, fold 0 first")
    a = ap.parse_args(argv)
    if len(a.members) < 2:
        ap.error("an ensemble needs at least two model folders")
    build(a.out, a.members)
    size = sum(f.stat().st_size for f in a.out.rglob("*") if f.is_file())
    print(f"{a.out}: {len(a.members)} folds, {size / 1e6:.1f} MB; load it with use_fold={list(range(len(a.members)))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
