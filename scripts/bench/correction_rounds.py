"""Benchmark: the serial CPU work of one simulated correction round in `nnint train`.

Between two forward passes of an iteration, the training loop places one correction per sample
(a click, scribble, lasso or 2-D box at the current error) and rebuilds that sample's prompt
channels. That runs on the CPU in the main process while a GPU would wait, so it bounds how fast
a GPU run can go (session 8: about 0.7 s per iteration at batch 16, 96^3, one core). This script
draws a batch of real training samples (procedural CT/MR/microscopy volumes, built here, no
download), takes a plausible wrong prediction for each (the target dilated, eroded or shifted)
and times the loop's own per-sample step (``nnint.train.loop._correction_step``) over the batch:
one thread, then the thread pool the loop uses. Medians over ``--repeats``; compare the ratio,
not the absolute numbers, on a shared machine.

    .venv/bin/python scripts/bench/correction_rounds.py --patch 96 --batch 16 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch

from nnint.train import dataset as ds
from nnint.train import simulate
from nnint.train.loop import TrainConfig, _correction_step, _model_setup


def wrong_prediction(target: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    mode = str(rng.choice(["dilate", "erode", "shift", "partial"]))
    return simulate.corrupt_mask(target.astype(bool), rng, mode).astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patch", type=int, default=96)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--volumes", type=int, default=3, help="procedural volumes to draw samples from")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads of the pooled run")
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    setup = _model_setup(TrainConfig(data=["x"], out="unused", arch="small", patch=args.patch))
    with tempfile.TemporaryDirectory() as tmp:
        print(f"building {args.volumes} procedural volumes ...", flush=True)
        cases = ds.prepare_cases([f"synthetic:{args.volumes}:0"], os.path.join(tmp, "cache"), "train")
        scfg = ds.SampleConfig(patch=args.patch, decay=setup.decay, point_radius=setup.point_radius,
                               mapping=setup.mapping, num_channels=setup.num_channels, p_zoom=0.0)
        ts = ds.TrainSet(cases, scfg, seed=5)
        items = [it for it in (ts[i] for i in range(4 * args.batch)) if it["prompts"] is not None][: args.batch]
    rng = np.random.default_rng(0)
    preds = [wrong_prediction(it["target"].numpy(), rng) for it in items]

    def one_round(pool: ThreadPoolExecutor) -> float:
        agents = [simulate.sample_agent(np.random.default_rng(i)) for i in range(len(items))]
        rngs = [np.random.default_rng([i, 7]) for i in range(len(items))]
        t = time.perf_counter()
        list(pool.map(lambda b: _correction_step(items[b]["target"].numpy(), preds[b], items[b]["prev_seg"],
                                                 list(items[b]["prompts"]),
                                                 agents[b], rngs[b], setup, False), range(len(items))))
        return time.perf_counter() - t

    rows = {}
    for threads in sorted({1, max(1, args.threads)}):
        with ThreadPoolExecutor(max_workers=threads) as pool:
            one_round(pool)  # warm-up (kernels, caches)
            times = [one_round(pool) for _ in range(args.repeats)]
        rows[threads] = float(np.median(times))
        print(f"{len(items)} samples at {args.patch}^3, {threads} thread(s): {1000 * rows[threads]:.0f} ms per round "
              f"({1000 * rows[threads] / len(items):.1f} ms per sample)", flush=True)
    if len(rows) > 1:
        print(f"speed-up with {max(rows)} threads: {rows[1] / rows[max(rows)]:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"patch": args.patch, "batch": len(items), "repeats": args.repeats,
                       "seconds_per_round_by_threads": rows, "cpu_count": os.cpu_count(),
                       "load_average": os.getloadavg(), "machine": platform.processor() or platform.machine()},
                      f, indent=1)


if __name__ == "__main__":
    main()
