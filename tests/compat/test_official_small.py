"""nnint against the official nnInteractive 2.6.0 package (small architecture, CI).

Runs ``scripts/compat/compare.py`` for the small architecture with both weight kinds (seeded
random, and weights whose output follows the prompts) and every interaction script on a small
volume, and asserts the compatibility target on every step: Dice >= 0.999 against the official
fp32 CPU output and the same written bbox, unless a documented deliberate difference applies.

Needs the official venv: ``.venv-official`` in the repository root (or ``$NNINT_OFFICIAL_PYTHON``);
build it with ``bash scripts/compat/setup_official.sh``. Without it the test fails, unless
``NNINT_SKIP_COMPAT=1`` is set (then it is skipped).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMPARE = REPO / "scripts" / "compat" / "compare.py"
SHAPE = "48,96,96"

pytestmark = [pytest.mark.compat, pytest.mark.slow]


def official_python() -> str:
    env = os.environ.get("NNINT_OFFICIAL_PYTHON")
    path = Path(env) if env else REPO / ".venv-official" / "bin" / "python"
    if not path.exists():
        message = (
            f"the official nnInteractive venv is missing ({path}); build it with "
            f"`bash scripts/compat/setup_official.sh` (or point NNINT_OFFICIAL_PYTHON at its python); "
            f"set NNINT_SKIP_COMPAT=1 to skip this test"
        )
        if os.environ.get("NNINT_SKIP_COMPAT") == "1":
            pytest.skip(message)
        pytest.fail(message)
    return str(path)


@pytest.mark.parametrize("weights", ["random", "follow"])
def test_small_architecture_matches_official(weights: str, tmp_path: Path) -> None:
    python = official_python()
    out = tmp_path / "result.json"
    cmd = [
        sys.executable,
        str(COMPARE),
        "--arch", "small",
        "--weights", weights,
        "--shape", SHAPE,
        "--script", "all",
        "--threads", "2",
        "--official-python", python,
        "--workdir", str(tmp_path / "work"),
        "--json", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=900)
    report = proc.stdout[-6000:] + proc.stderr[-3000:]
    assert out.exists(), f"compare.py produced no result (exit {proc.returncode}):\n{report}"
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert result["meta"]["official"]["version"] == "2.6.0"
    assert len(rows) >= 30, report  # every script ran
    failing = [r for r in rows if not r["ok"] and not r["deliberate"]]
    assert not failing, (
        "steps below the target:\n"
        + "\n".join(
            f"{r['script']}#{r['step']} {r['prompt']}: Dice {r['dice']:.5f}, {r['differing']} voxels, "
            f"bbox {r['ours_bbox']} vs {r['official_bbox']}"
            for r in failing
        )
        + "\n"
        + report
    )
    assert proc.returncode == 0, report
    # the scripts exercise what they are meant to (guards against a harness that compares nothing)
    assert any(r["ours_voxels"] > 0 for r in rows)
    if weights == "follow":
        zoomed = [r for r in rows if r["official_zoom"] not in (None, 1, 1.0)]
        assert zoomed, "no step zoomed out: the follow weights no longer exercise AutoZoom/refinement"
        assert any((r["official_boxes"] or 0) > 1 for r in zoomed), "no step refined with several boxes"


def test_fast_mode_bf16_stays_within_the_fast_target(tmp_path: Path) -> None:
    """nnint's bf16 fast mode against the official fp32 output: Dice >= 0.99 per step, and the
    harness reports the latency and peak-RSS ratios the performance benchmark relies on."""
    python = official_python()
    out = tmp_path / "result.json"
    cmd = [
        sys.executable, str(COMPARE), "--arch", "small", "--weights", "follow", "--shape", SHAPE,
        "--script", "points,large_box", "--threads", "2", "--precision", "bf16",
        "--official-python", python, "--workdir", str(tmp_path / "work"), "--json", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=900)
    report = proc.stdout[-6000:] + proc.stderr[-3000:]
    assert out.exists(), f"compare.py produced no result (exit {proc.returncode}):\n{report}"
    result = json.loads(out.read_text())
    assert result["meta"]["precision"] == "bf16"
    assert all(r["dice"] >= 0.99 for r in result["rows"]), report
    assert proc.returncode == 0, report
    med = result["meta"]["median_seconds"]
    assert med["ours"] > 0 and med["official"] > 0
    peaks = result["meta"]["peak_rss_bytes"]["follow"]
    assert peaks["ours"] > 2**20 and peaks["official"] > 2**20
