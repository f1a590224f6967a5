"""`nnint train` under `torchrun`: two CPU ranks (gloo) train one model in data parallel."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def test_torchrun_two_cpu_ranks_stay_in_sync_and_export_one_model(dataset, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "nnint.cli", "train", "--data", str(dataset), "--out", str(out), "--arch", "tiny",
           "--patch", "32", "--iterations", "4", "--batch", "1", "--threads", "1", "--workers", "0",
           "--val-every", "0", "--save-every", "2", "--log-every", "1", "--max-rounds", "1",
           "--seed", "5", "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    # the weights of both ranks were compared after the last step, and only rank 0 wrote files
    assert "ranks in sync" in log and "on all 2 ranks" in log, log[-4000:]
    assert log.count("training iterations 0..4") == 1, log[-4000:]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["world_size"] == 2
    assert (out / "model" / "fold_0" / "checkpoint_final.pth").exists()
    assert (out / "checkpoint_latest.pth").exists()
