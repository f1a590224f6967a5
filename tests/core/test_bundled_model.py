"""The model shipped inside nnint-core: registered as the default, documented, and working on every
prompt kind (the quality numbers come from `nnint evaluate`, see its model card)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nnint import plugins
from nnint.models import HERE as MODELS_DIR

CARDS = sorted(MODELS_DIR.glob("*/model_card.json"))
pytestmark = pytest.mark.skipif(not CARDS, reason="no bundled model in this checkout")
SAMPLE = Path(plugins.__file__).parent / "data"


@pytest.fixture(scope="module")
def card() -> dict:
    return json.loads(CARDS[0].read_text())


@pytest.fixture(scope="module")
def engine():
    return plugins.load_engine(threads=2)


@pytest.fixture(scope="module")
def sample():
    from nnint import Image

    image = Image.read(SAMPLE / "sample_ct.nii.gz")
    ref = Image.read(SAMPLE / "sample_ct_reference.nii.gz").array == 1
    return image, ref


def test_the_bundled_model_is_the_registered_default(card):
    assert plugins.default_model_name() == card["name"]
    spec = plugins.models()[card["name"]]
    assert spec.backend == "torch"
    assert spec.license == (spec.path / "LICENSE").read_text().splitlines()[0] == "Apache-2.0"
    weights = sorted(spec.path.glob("fold_*/checkpoint_final.pth"))
    assert weights and sum(w.stat().st_size for w in weights) <= 25e6
    # every specialist named by the card is a fold of the folder
    folds = card["engine_options"].get("specialist_folds", {}).values()
    assert {spec.path / f"fold_{k}" / "checkpoint_final.pth" for k in folds} <= set(weights)


def test_model_card_documents_provenance_training_and_evaluation(card):
    training = card["training"]
    assert training["commit"] and training["hardware"] and training["cpu_minutes"] > 0
    assert len(training["folds"]) == 1 + len(card["engine_options"].get("specialist_folds", {}))
    for fold in training["folds"]:
        assert fold["commands"] and fold["iteration_of_last_run"] > 0
        # every run that read data was restricted to redistributable cases
        assert all("--redistributable-only" in c for c in fold["commands"] if "--data" in c)
    assert card["data"]["cases"] > 0
    assert all(src["redistributable"] for src in card["data"]["sources"])
    results = card["evaluation"]["results"]
    assert card["name"] in results and "classical" in results
    assert {"box+clicks", "points"} <= set(results[card["name"]])
    assert card["speed"]["volume"] == [256, 256, 256] and card["speed"]["median_seconds"] > 0
    assert (MODELS_DIR / card["name"] / "MODEL_CARD.md").is_file()


def test_bundled_model_takes_every_prompt_kind(engine, sample):
    from nnint import Box, InitialMask, Lasso, Point, Scribble, Session

    assert engine.capabilities.prompt_kinds == {"point", "box2d", "box3d", "scribble", "lasso", "initial_mask"}
    image, ref = sample
    zz, yy, xx = np.nonzero(ref)
    z = int(np.median(zz))
    lo = (int(zz.min()), int(yy.min()), int(xx.min()))
    hi = (int(zz.max()) + 1, int(yy.max()) + 1, int(xx.max()) + 1)
    sl = ref[z, lo[1]:hi[1], lo[2]:hi[2]]
    ys, xs = np.nonzero(sl)
    row = int(np.median(ys))
    cols = np.nonzero(sl[row])[0]
    scribble = np.zeros((1, 1, cols.max() - cols.min() + 1), bool)
    scribble[0, 0, cols - cols.min()] = True
    inside = np.argwhere(ref)[len(zz) // 2]
    prompts = {
        "3D box": Box(lo, hi),
        "2D box": Box((z, lo[1], lo[2]), (z + 1, hi[1], hi[2])),
        "point": Point(tuple(int(v) for v in inside)),
        "scribble": Scribble(scribble, (z, lo[1] + row, lo[2] + int(cols.min()))),
        "lasso": Lasso(sl[None], (z, lo[1], lo[2])),
        "initial mask": InitialMask.from_full_mask(ref, predict=True),
    }
    for what, prompt in prompts.items():
        session = Session(image, engine)
        session.add(prompt)
        mask = session.active.mask.astype(bool)
        dice = 2 * (mask & ref).sum() / (mask.sum() + ref.sum())
        # one prompt on a dev-seed volume the model never saw: clearly the right object, not noise
        assert dice > 0.5, f"{what}: Dice {dice:.3f}"


def test_demo_segments_the_sample_with_the_bundled_model(tmp_path, card):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "nnint.cli", "demo", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert f"model: {card['name']}" in proc.stderr
    assert (out / "overview.png").stat().st_size > 10_000 and (out / "mask.nii.gz").is_file()
    dice = float(proc.stderr.split("Dice against the reference")[1].split(":")[1].split()[0])
    assert dice >= 0.8, proc.stderr
