"""Fold ensembles (nnint.backends.torch.ensemble) and scripts/release/ensemble_folder.py."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nnint.backends.torch.architectures import SMALL_CONFIGURATION, small_plans
from nnint.backends.torch.checkpoint import load_model_folder, write_model_folder
from nnint.backends.torch.engine import TorchEngine
from nnint.backends.torch.ensemble import FoldEnsemble
from nnint.backends.torch.network import build_network
from nnint.errors import CheckpointError
from nnint.prompts import Point

REPO = Path(__file__).resolve().parents[2]
PATCH = (32, 32, 32)


class Constant(torch.nn.Module):
    """Logits ``[0, d]`` everywhere."""

    def __init__(self, d: float) -> None:
        super().__init__()
        self.d = float(d)

    def forward(self, x):
        z = torch.zeros_like(x[:, :1])
        return torch.cat([z, z + self.d], 1)


def test_mean_of_probabilities_as_log_probabilities():
    x = torch.zeros(1, 8, 4, 4, 4)
    out = FoldEnsemble([Constant(2.0), Constant(-1.0)])(x)
    p1 = (1 / (1 + math.exp(-2.0)) + 1 / (1 + math.exp(1.0))) / 2
    assert torch.allclose(out.exp().sum(1), torch.ones(1, 4, 4, 4))
    assert torch.allclose(out[:, 1].exp(), torch.full((1, 4, 4, 4), p1))
    # the argmax is the mean probability's: 0.5 * (0.88 + 0.27) = 0.58 -> foreground
    assert bool((out[:, 1] > out[:, 0]).all())
    # a vote is not a mean: one confident member outweighs a hesitant one
    out = FoldEnsemble([Constant(-0.2), Constant(5.0)])(x)
    assert bool((out[:, 1] > out[:, 0]).all())


def test_identical_members_keep_the_full_logit():
    """No clipping: a member whose logit difference is 200 keeps it (the intensity veto reads it)."""
    x = torch.zeros(1, 8, 2, 2, 2)
    for d in (200.0, -200.0, 0.3):
        out = FoldEnsemble([Constant(d), Constant(d)])(x)
        assert torch.allclose(out[:, 1] - out[:, 0], torch.full((1, 2, 2, 2), d), atol=1e-4)
    with pytest.raises(ValueError):
        FoldEnsemble([])


def _ensemble_script(name: str = "ensemble_folder"):
    path = REPO / "scripts" / "release" / f"{name}.py"
    sys.path.insert(0, str(path.parent))  # it imports its sibling scripts
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


def _folder(path: Path, seed: int) -> Path:
    plans = small_plans(PATCH[0])
    torch.manual_seed(seed)
    net = build_network(plans["configurations"][SMALL_CONFIGURATION]["architecture"], 8, 2)
    return write_model_folder(path, plans=plans, configuration=SMALL_CONFIGURATION, network_weights=net.state_dict())


@pytest.fixture(scope="module")
def two_folds(tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("ens")
    a, b = _folder(root / "a", 1), _folder(root / "b", 2)
    out = root / "ab"
    record = _ensemble_script().build(out, [a, b])
    assert [m["fold"] for m in record["members"]] == [0, 1]
    return a, b, out


def test_ensemble_folder_engine_averages_its_folds(two_folds):
    a, b, out = two_folds
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["fold_0", "fold_1"]
    assert (out / "ENSEMBLE.json").is_file() and (out / "plans.json").is_file()
    with pytest.raises(CheckpointError, match="use_fold"):  # two folds: a plain load must pick
        load_model_folder(out)
    eng = TorchEngine.from_model(out, use_fold=[0, 1])
    assert isinstance(eng.network, FoldEnsemble) and len(eng.network.members) == 2
    singles = [TorchEngine.from_model(p).network for p in (a, b)]
    x = torch.randn(1, 8, *PATCH, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        want = FoldEnsemble(singles)(x)  # the folds hold float16 copies: compare loosely
        got = eng.network(x)
    assert (got.argmax(1) == want.argmax(1)).float().mean() > 0.99
    # one fold in a list is that fold alone; an empty list is refused
    assert not isinstance(TorchEngine.from_model(out, use_fold=[1]).network, FoldEnsemble)
    with pytest.raises(ValueError, match="empty"):
        TorchEngine.from_model(out, use_fold=[])
    with pytest.raises(CheckpointError, match="fold_5"):
        TorchEngine.from_model(out, use_fold=[0, 5])


def test_ensemble_engine_segments_like_any_engine(two_folds):
    _, _, out = two_folds
    eng = TorchEngine.from_model(out, use_fold=[0, 1], intensity_veto=1.0, magnify=3)
    from nnint.image import Image

    rng = np.random.default_rng(0)
    eng.set_image(Image(rng.normal(0, 1, (40, 40, 40)).astype(np.float32)))
    update = eng.predict([Point((20, 20, 20))], np.zeros((40, 40, 40), np.uint8))
    assert update is not None and update.values.dtype == np.uint8
    assert eng.last_run["forwards"] >= 1


def test_ensemble_script_refuses_mismatched_members(tmp_path, two_folds):
    a, _, _ = two_folds
    other = tmp_path / "other"
    plans = small_plans(48)  # another patch size: not a fold of the same model
    torch.manual_seed(0)
    net = build_network(plans["configurations"][SMALL_CONFIGURATION]["architecture"], 8, 2)
    write_model_folder(other, plans=plans, configuration=SMALL_CONFIGURATION, network_weights=net.state_dict())
    with pytest.raises(SystemExit, match="patch_size"):
        _ensemble_script().build(tmp_path / "bad", [a, other])
    assert not (tmp_path / "bad").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["other"]  # no half-written folder left behind


def test_specialist_fold_answers_objects_opened_by_its_prompt_kind(two_folds):
    """``specialist_folds={"box2d": 1}``: an object whose first prompt is a 2D box is answered by
    fold 1 for all its interactions, corrections included; every other object by fold 0. (The
    test folders do not support 3D boxes; nnint's model card routes ``box3d`` the same way.)"""
    from nnint.image import Image
    from nnint.prompts import Box

    _, _, out = two_folds
    routed = TorchEngine.from_model(out, use_fold=0, specialist_folds={"box2d": 1})
    plain = {k: TorchEngine.from_model(out, use_fold=k) for k in (0, 1)}
    image = Image(np.random.default_rng(1).normal(0, 1, (40, 40, 40)).astype(np.float32))
    for eng in (routed, *plain.values()):
        eng.set_image(image)
    empty = np.zeros((40, 40, 40), np.uint8)
    box = Box((20, 12, 12), (21, 28, 28))
    for prompts, fold in (([box], 1), ([box, Point((20, 20, 20), positive=False)], 1),
                          ([Point((20, 20, 20))], 0), ([Point((20, 20, 20)), box], 0)):
        got = routed.predict(prompts, empty)
        want = plain[fold].predict(prompts, empty)
        assert got.lo == want.lo and np.array_equal(got.values, want.values), (prompts, fold)
    # the two folds are different networks, so the routing above is visible
    a, b = (plain[k].predict([box], empty) for k in (0, 1))
    assert not np.array_equal(a.values, b.values)
    # a fold list as the specialist: box sessions get the two folds' ensemble, points fold 0
    both = TorchEngine.from_model(out, use_fold=0, specialist_folds={"box2d": [0, 1]})
    mean = TorchEngine.from_model(out, use_fold=[0, 1])
    for eng in (both, mean):
        eng.set_image(image)
    for prompts, want_eng in (([box], mean), ([Point((20, 20, 20))], plain[0])):
        got, want = both.predict(prompts, empty), want_eng.predict(prompts, empty)
        assert got.lo == want.lo and np.array_equal(got.values, want.values), prompts
    with pytest.raises(ValueError, match="empty fold list"):
        TorchEngine.from_model(out, use_fold=0, specialist_folds={"box2d": []})
    with pytest.raises(ValueError, match="prompt kind"):
        TorchEngine.from_model(out, use_fold=0, specialist_folds={"boxes": 1})
    with pytest.raises(ValueError, match="specialist_folds"):
        TorchEngine.from_model(out, use_fold=0, specialist_folds=[1])


def test_ensemble_script_takes_the_plans_of_the_member_with_input_extensions(tmp_path, two_folds):
    """A plain network as fold 0 and a prompt-likeness one as fold 1: the folder gets the wider
    plans, and fold 0 (zero weights on the extra inputs) still answers as it did alone."""
    from nnint.backends.torch.network import PROMPT_LIKENESS_KEY

    a, _, _ = two_folds
    plans = small_plans(PATCH[0])
    plans["configurations"][SMALL_CONFIGURATION]["architecture"]["arch_kwargs"][PROMPT_LIKENESS_KEY] = True
    torch.manual_seed(3)
    net = build_network(plans["configurations"][SMALL_CONFIGURATION]["architecture"], 8, 2)
    wide = write_model_folder(tmp_path / "wide", plans=plans, configuration=SMALL_CONFIGURATION,
                              network_weights=net.state_dict())
    out = tmp_path / "mixed"
    _ensemble_script().build(out, [a, wide])
    fold0, fold1 = (load_model_folder(out, k) for k in (0, 1))
    assert fold0.architecture["arch_kwargs"].get(PROMPT_LIKENESS_KEY)
    x = torch.randn(1, 8, *PATCH, generator=torch.Generator().manual_seed(1))
    x[:, 1:] = (x[:, 1:] > 1.5).float()  # prompt channels are 0/1-like
    with torch.inference_mode():
        want = TorchEngine.from_model(a).network(x)
        got = fold0.build_network("cpu")(x)
        other = fold1.build_network("cpu")(x)
    assert (got.argmax(1) == want.argmax(1)).float().mean() > 0.99
    assert (other.argmax(1) != want.argmax(1)).float().mean() > 0.01


def test_bundle_script_refuses_weights_from_a_run_that_could_see_restricted_data():
    bundle = _ensemble_script("bundle_model")
    ok = ["nnint train --data data/raw --data synthetic:120:0 --redistributable-only --out runs/a",
          "nnint train --data pack:.devicepack/cases --data synthetic:12:100 --redistributable-only --out runs/g",
          "nnint train --out runs/a --resume --iterations 7500"]
    # a GPU case pack is made from data/raw's redistributable cases, so it stands for data/raw
    assert bundle.data_sources(ok) == ["data/raw", "synthetic:120:0", "synthetic:12:100"]
    with pytest.raises(SystemExit, match="did not use --redistributable-only"):
        bundle.data_sources([*ok, "nnint train --data data/raw --out runs/b"])
    snapshot = {"commands": ["nnint train --data data/raw --redistributable-only --out r   # CPU, session 10"]}
    assert bundle.training_commands(snapshot) == ["nnint train --data data/raw --redistributable-only --out r"]


def test_average_script_writes_the_mean_of_two_snapshots(tmp_path):
    """scripts/release/average_weights.py: the float16 mean of each tensor, the decoder's view of the
    encoder still shared, every member's command once (then its own), and no folder touched when
    the members do not fit together."""
    import json

    soup = _ensemble_script("average_weights")
    members = []
    for seed, cmds in ((1, ["nnint train --out runs/a   # first"]),
                       (2, ["nnint train --out runs/a   # first", "nnint train --out runs/b --init runs/a"])):
        folder = _folder(tmp_path / f"m{seed}", seed)
        (folder / "LICENSE").write_text("Apache-2.0\n")
        (folder / "SNAPSHOT.json").write_text(json.dumps({"commands": cmds, "command_minutes": [10, 5][:len(cmds)],
                                                          "iteration": 100 * seed, "snapshot_commit": "x"}))
        members.append(folder)
    out = tmp_path / "soup"
    meta = soup.average(out, [str(m) for m in members], ["--out", str(out), *map(str, members)])
    assert meta["commands"][:2] == ["nnint train --out runs/a   # first", "nnint train --out runs/b --init runs/a"]
    assert meta["command_minutes"] == [10, 5, 0] and "average_weights.py" in meta["commands"][2]
    assert meta["iteration"] == 200
    w = [load_model_folder(f, 0).network_weights for f in (*members, out)]
    k = next(k for k in w[0] if k.startswith("encoder.") and w[0][k].ndim == 5)
    want = ((w[0][k].float() + w[1][k].float()) / 2).half()
    assert torch.equal(w[2][k], want)
    saved = torch.load(out / "fold_0" / "checkpoint_final.pth", weights_only=False)["network_weights"]
    assert saved[k].untyped_storage().data_ptr() == saved["decoder." + k].untyped_storage().data_ptr()
    # the soup runs in the engine like any folder
    TorchEngine.from_model(out)
    # members of different architectures are refused before anything is written
    other = tmp_path / "other"
    plans = small_plans(48)
    net = build_network(plans["configurations"][SMALL_CONFIGURATION]["architecture"], 8, 2)
    write_model_folder(other, plans=plans, configuration=SMALL_CONFIGURATION, network_weights=net.state_dict())
    (other / "SNAPSHOT.json").write_text((members[0] / "SNAPSHOT.json").read_text())
    with pytest.raises(SystemExit, match="plans.json differ"):
        soup.average(tmp_path / "bad", [str(members[0]), str(other)], [])
    assert not (tmp_path / "bad").exists()
