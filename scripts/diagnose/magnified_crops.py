"""Diagnosis: would a model answer small dev targets better if it saw them magnified?

For each target under ``--max-voxels`` of a dev split, a crop around it (160 / z voxels per axis,
clipped to the image) is trilinearly upsampled z times and a whole simulated-user protocol runs on
that crop at the model's own zoom (the official engine, unchanged); the answers are area-averaged
back onto the image grid and scored there. One JSON line per target with the Dice per step for
every zoom factor. This found the size prior behind the engine option ``magnify`` (session 18,
docs/training.md); the target sizes here come from the ground truth, which the engine cannot
know, so read it as an upper bound of what magnification can do.

    .venv/bin/python scripts/diagnose/magnified_crops.py --model checkpoints/nnint-small-wip \\
        --data data/raw-v2 --protocol points --zooms 1,2,3 --out out/magnified-crops-points.jsonl
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
import torch.nn.functional as F


def resample(array: np.ndarray, size, mode: str) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]
    kw = {"align_corners": False} if mode == "trilinear" else {}
    return F.interpolate(t, size=tuple(int(s) for s in size), mode=mode, **kw)[0, 0].numpy()


def main(argv=None) -> None:
    from nnint.evaluate import protocols
    from nnint.evaluate.data import load_case, open_dataset, targets_of
    from nnint.evaluate.metrics import dice
    from nnint.evaluate.runner import target_rng
    from nnint.image import Image
    from nnint.plugins import load_engine
    from nnint.session import Session

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="model name or folder (torch backend)")
    ap.add_argument("--data", required=True, help="dataset root with a dev split")
    ap.add_argument("--split", default="dev")
    ap.add_argument("--protocol", default="points", choices=["points", "box+clicks"])
    ap.add_argument("--zooms", default="1,2,3", help="magnification factors")
    ap.add_argument("--max-voxels", type=int, default=5000)
    ap.add_argument("--structures", type=int, default=5, help="targets per case, as nnint evaluate")
    ap.add_argument("--clicks", type=int, default=5)
    ap.add_argument("--out", required=True, help="JSON lines file")
    args = ap.parse_args(argv)

    zooms = [float(z) for z in args.zooms.split(",")]
    engine = load_engine(args.model, backend="torch", precision="fast", confine_to_box=True, one_way_corrections=True)
    spec = protocols.get_protocol(args.protocol)
    ds = open_dataset(args.data, split=args.split)
    n = 0
    with open(args.out, "w") as out:
        for case in ds.cases:
            image, labels = load_case(case)
            for value in targets_of(labels, None, args.structures):
                gt = labels == value
                if int(gt.sum()) >= args.max_voxels:
                    continue
                idx = np.argwhere(gt)
                centre = (idx.min(0) + idx.max(0)) // 2
                row = {"case": case.name, "label": int(value), "voxels": int(gt.sum())}
                for z in zooms:
                    half = int(np.ceil(80 / z))
                    lo = np.maximum(centre - half, 0)
                    hi = np.minimum(centre + half, gt.shape)
                    sl = tuple(slice(a, b) for a, b in zip(lo, hi))
                    crop, g = image.array[sl].astype(np.float32), gt[sl]
                    fine = [int(round(s * z)) for s in crop.shape]
                    img_z = resample(crop, fine, "trilinear") if z != 1 else crop
                    gt_z = resample(g, fine, "nearest") > 0.5 if z != 1 else g
                    session = Session(Image(img_z), engine)
                    rng = target_rng(0, case.name, int(value), args.protocol)
                    user = spec.factory(gt_z, rng=rng, spacing=(1.0, 1.0, 1.0), capabilities=engine.capabilities)
                    obj = session.new_object(name="target")
                    scores = []
                    for step in range(args.clicks + 1):
                        prompt = user.first() if step == 0 else user.next(obj.mask)
                        if prompt is not None:
                            session.add(prompt, object_id=obj.id)
                        m = obj.mask.astype(np.float32)
                        if z != 1:
                            m = resample(m, g.shape, "area")
                        scores.append(round(dice(m >= 0.5, g), 4))
                    row[f"z{z:g}"] = scores
                out.write(json.dumps(row) + "\n")
                out.flush()
                n += 1
                print(f"[{n}] {case.name} / {value} ({row['voxels']} voxels): "
                      + "  ".join(f"{k} {v[0]:.2f}->{v[-1]:.2f}" for k, v in row.items() if k.startswith("z")), flush=True)


if __name__ == "__main__":
    main()
