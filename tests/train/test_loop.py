"""`nnint train` end to end on a tiny dataset (CPU, a few iterations)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nnint.train.loop import TrainConfig, train


def _cfg(dataset, out, **kw) -> TrainConfig:
    base = dict(data=[str(dataset)], out=str(out), arch="tiny", patch=32, iterations=3, threads=1,
                workers=0, val_every=0, save_every=2, log_every=1, seed=1, max_rounds=1, batch=1, cache=str(out.parent / "cache"))
    base.update(kw)
    return TrainConfig(**base)


def _run_diagnose_script(name: str, *args: str, folder: str = "diagnose") -> str:
    """Run ``scripts/FOLDER/NAME`` with this interpreter; its stdout (fails on a non-zero exit)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / folder / name
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_three_iterations_write_a_loadable_model_folder(dataset, make_case, tmp_path):
    from nnint.backends.torch.checkpoint import load_model_folder

    out = tmp_path / "run"
    summary = train(_cfg(dataset, out, val_every=3, val_cases=1, val_targets=1, val_autozoom=False), log=lambda s: None)
    assert summary["iteration"] == 3
    assert np.isfinite(summary["loss"])
    for name in ("checkpoint_latest.pth", "log.csv", "curves.png", "config.json", "val.csv"):
        assert (out / name).exists(), name
    assert 0.0 <= summary["val_box+5"] <= 1.0
    folder = out / "model"
    mf = load_model_folder(folder)
    net = mf.build_network("cpu")  # strict load_state_dict inside
    assert mf.num_input_channels == 8 and mf.interaction_decay == 0.98
    assert mf.supported_interactions["bbox3d"] is True
    info = json.loads((folder / "inference_info.json").read_text())
    assert info["channel_mapping"]["points"] == [3, 4]
    assert (folder / "LICENSE").exists() and (folder / "fold_0" / "checkpoint_final.pth").exists()
    with torch.no_grad():
        assert net(torch.zeros(1, 8, 32, 32, 32)).shape == (1, 2, 32, 32, 32)
    engine_mod = pytest.importorskip("nnint.backends.torch.engine")
    from nnint.image import Image
    from nnint.plugins import load_engine
    from nnint.prompts import Point

    del engine_mod
    engine = load_engine(str(folder), backend="torch", device="cpu", autozoom=False)
    img, _ = make_case(np.random.default_rng(9))
    engine.set_image(Image(img))
    upd = engine.predict([Point((20, 20, 20))], np.zeros(img.shape, np.uint8))
    assert upd is not None and upd.values.dtype == np.uint8


def test_resume_continues_exactly(dataset, tmp_path):
    straight = tmp_path / "straight"
    train(_cfg(dataset, straight, iterations=2, save_every=100), log=lambda s: None)
    split = tmp_path / "split"
    first = train(_cfg(dataset, split, iterations=2, stop_at=1, save_every=100), log=lambda s: None)
    assert first["iteration"] == 1 and first["stopped"]
    second = train(_cfg(dataset, split, iterations=2, resume=True), log=lambda s: None)
    assert second["iteration"] == 2
    a = torch.load(straight / "checkpoint_latest.pth", weights_only=False)
    b = torch.load(split / "checkpoint_latest.pth", weights_only=False)
    assert [h["loss"] for h in a["history"] if "loss" in h] == [h["loss"] for h in b["history"] if "loss" in h]
    for k, v in a["network_weights"].items():
        torch.testing.assert_close(v, b["network_weights"][k], rtol=0, atol=1e-6)
    assert a["weight_average"]["updates"] == b["weight_average"]["updates"] == 2
    for k, v in a["weight_average"]["shadow"].items():
        torch.testing.assert_close(v, b["weight_average"]["shadow"][k], rtol=0, atol=1e-6)


def test_the_exported_model_is_the_weight_average(dataset, tmp_path):
    from nnint.backends.torch.checkpoint import load_model_folder

    out = tmp_path / "run"
    train(_cfg(dataset, out, iterations=2), log=lambda s: None)
    state = torch.load(out / "checkpoint_latest.pth", weights_only=False)
    exported = load_model_folder(out / "model").network_weights
    shadow, last = state["weight_average"]["shadow"], state["network_weights"]
    assert exported.keys() == last.keys()
    for k in shadow:
        torch.testing.assert_close(exported[k].float(), shadow[k], rtol=0, atol=0)
    assert any(not torch.equal(shadow[k], last[k].float()) for k in shadow)


def test_weight_average_ramps_up_and_tracks_the_weights():
    from nnint.train.loop import WeightAverage

    net = torch.nn.Linear(3, 1)
    avg = WeightAverage(net, decay=0.999)
    with torch.no_grad():
        net.weight.fill_(1.0)
    avg.update(net)  # first update keeps 2/11 of the start
    start = avg.state_dict()["shadow"]["weight"].clone()
    assert not torch.equal(start, net.weight)
    for _ in range(200):
        avg.update(net)
    # the ramp lets it follow the weights within a few hundred updates, not ~1/(1-decay) = 1000s
    torch.testing.assert_close(avg.weights(net)["weight"], net.weight.detach(), rtol=0, atol=0.05)
    copy = WeightAverage(net, decay=0.999)
    copy.load_state_dict(avg.state_dict())
    assert copy.updates == 201 and torch.equal(copy.weights(net)["weight"], avg.weights(net)["weight"])
    assert torch.equal(WeightAverage(net, decay=0.0).weights(net)["weight"], net.weight)


def test_cli_registers_train_and_export(dataset, tmp_path):
    from nnint.cli import build_parser, main
    from nnint.default_plugins.train_command import _explicit

    args = build_parser().parse_args(["train", "--data", str(dataset), "--out", str(tmp_path / "o"),
                                      "--val-cases", "4"])
    assert args.command == "train" and args.patch == 64
    # options given on the command line (even with their default value) override a checkpoint's on --resume
    assert set(_explicit(args)) == {"data", "val_cases"}
    out = tmp_path / "run"
    train(_cfg(dataset, out, iterations=1, supervoxels=True), log=lambda s: None)
    metas = [json.loads(p.read_text()) for p in (tmp_path / "cache").glob("*/meta.json")]
    assert any(m.get("sv_targets") for m in metas)  # supervoxel pseudo-label targets were prepared
    import shutil

    shutil.rmtree(out / "model")
    assert main(["train", "--out", str(out), "--export"]) == 0
    assert (out / "model" / "plans.json").exists()


def test_init_fine_tunes_a_model_folder(dataset, tmp_path):
    from nnint.backends.torch.checkpoint import load_model_folder

    base = tmp_path / "base"
    train(_cfg(dataset, base, iterations=1), log=lambda s: None)
    ft = tmp_path / "ft"
    summary = train(_cfg(dataset, ft, iterations=1, init=str(base / "model"), arch="small"), log=lambda s: None)
    assert summary["iteration"] == 1
    a, b = load_model_folder(base / "model"), load_model_folder(ft / "model")
    assert a.plans == b.plans and a.configuration_name == b.configuration_name  # the initial model's architecture
    assert b.channel_mapping == a.channel_mapping and b.interaction_decay == a.interaction_decay
    b.build_network("cpu")
    changed = [k for k in a.network_weights if not torch.equal(a.network_weights[k], b.network_weights[k])]
    assert changed  # it trained
    # fine-tuned weights inherit the initial model's licence (ours: Apache-2.0, so they can ship)
    assert (ft / "model" / "LICENSE").read_text() == (base / "model" / "LICENSE").read_text()
    assert (ft / "model" / "LICENSE").read_text().startswith("Apache-2.0")


def test_a_float16_weight_snapshot_loads_and_warm_starts_training(dataset, tmp_path):
    """scripts/release/snapshot_weights.py: what survives a session is what is committed."""
    from nnint.backends.torch.checkpoint import load_model_folder

    run = tmp_path / "run"
    train(_cfg(dataset, run, iterations=2), log=lambda s: None)
    (run / "COMMAND.txt").write_text("nnint train --out run ...\n")
    snap = tmp_path / "snap"
    _run_diagnose_script("snapshot_weights.py", "--run", str(run), "--out", str(snap), "--note", "test", folder="release")
    a, b = load_model_folder(run / "model"), load_model_folder(snap)
    assert a.plans == b.plans and a.channel_mapping == b.channel_mapping
    assert (snap / "fold_0" / "checkpoint_final.pth").stat().st_size < 0.7 * (
        run / "model" / "fold_0" / "checkpoint_final.pth").stat().st_size
    for k, w in a.network_weights.items():
        if w.is_floating_point():
            assert b.network_weights[k].dtype == torch.float16
            torch.testing.assert_close(b.network_weights[k].float(), w, rtol=1e-3, atol=1e-4)
    meta = json.loads((snap / "SNAPSHOT.json").read_text())
    assert meta["iteration"] == 2 and meta["commands"] == ["nnint train --out run ..."] and meta["note"] == "test"
    ft = tmp_path / "ft"
    assert train(_cfg(dataset, ft, iterations=1, init=str(snap), arch="small"), log=lambda s: None)["iteration"] == 1
    assert all(v.dtype == torch.float32 for v in load_model_folder(ft / "model").network_weights.values()
               if v.is_floating_point())


def test_redistributable_only_trains_on_cases_marked_redistributable(dataset, tmp_path):
    from nnint.errors import NnintError
    from nnint.train.dataset import prepare_cases

    cache = tmp_path / "cache"
    with pytest.raises(NnintError, match="no provenance.json"):
        prepare_cases([str(dataset)], cache, "train", redistributable_only=True, log=None)
    prov = {f"{dataset.name}/c{i}": {"redistributable": i % 2 == 0} for i in range(5)}
    (dataset.parent / "provenance.json").write_text(json.dumps(prov))
    try:
        kept = prepare_cases([str(dataset)], cache, "train", redistributable_only=True, log=None)
        assert sorted(r.name for r in kept) == ["c0", "c2"]
        assert len(prepare_cases([str(dataset)], cache, "train", log=None)) == 4
        del prov[f"{dataset.name}/c3"]
        (dataset.parent / "provenance.json").write_text(json.dumps(prov))
        with pytest.raises(NnintError, match="'c3'.*not in its provenance.json"):
            prepare_cases([str(dataset)], cache, "train", redistributable_only=True, log=None)
    finally:
        (dataset.parent / "provenance.json").unlink()


def test_cpu_autocast_is_bf16_only_where_the_cpu_has_it():
    from nnint.train.loop import _amp_settings

    assert _amp_settings(False, torch.device("cpu")) == (False, torch.float32)
    enabled, dtype = _amp_settings(True, torch.device("cpu"))
    assert enabled == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert dtype == (torch.bfloat16 if enabled else torch.float32)


def test_coarse_view_is_the_target_at_a_coarser_zoom():
    from nnint.train.dataset import coarse_view

    zz, yy, xx = np.indices((48, 48, 48))
    ball = (zz - 30) ** 2 + (yy - 20) ** 2 + (xx - 24) ** 2 < 20**2  # cut by the window border
    for zoom in (1.3, 2.0, 3.0):
        c = coarse_view(ball, zoom, np.random.default_rng(0)).astype(bool)
        dice = 2 * (c & ball).sum() / (c.sum() + ball.sum())
        assert 0.9 < dice < 1.0 or zoom < 1.5, (zoom, dice)  # close to the truth, not the truth
        assert c.shape == ball.shape and c[-1].any()  # still reaches the border it was cut at


def test_big_click_samples_fill_the_window(tmp_path):
    """A click on an object bigger than the window: zoom 1, one click-like prompt on the object, no
    previous mask, and a target cut by the window (what makes AutoZoom zoom out at inference)."""
    from nnint.train import simulate
    from nnint.train.dataset import SampleConfig, TrainSet, _touches_border, _write_case
    from nnint.train.loop import _model_setup

    rng = np.random.default_rng(1)
    zz, yy, xx = np.indices((80, 80, 80))
    img = rng.normal(0, 1, (80, 80, 80)).astype(np.float32)
    lab = ((zz - 40) ** 2 + (yy - 40) ** 2 + (xx - 40) ** 2 < 36**2).astype(np.uint8)
    lab[2:8, 2:8, 2:8] = 2  # a small target the big-click samples must never pick
    img[lab == 1] += 3
    ref = _write_case(tmp_path / "big", "big", img, lab, (1.0, 1.0, 1.0), False, keep_raw=False, signature="t")
    setup = _model_setup(TrainConfig(data=["x"], out=str(tmp_path), arch="tiny", patch=32))
    cfg = SampleConfig(patch=32, decay=setup.decay, point_radius=setup.point_radius, mapping=setup.mapping,
                       num_channels=setup.num_channels, p_big_click=1.0, p_component=0.0)
    ts = TrainSet([ref], cfg, seed=0)
    kinds = set()
    for i in range(10):
        item = ts[i]
        tgt = item["target"].numpy().astype(bool)
        assert item["zoom"] == 1.0 and len(item["prompts"]) == 1 and not item["prev_seg"].any()
        assert _touches_border(tgt) and tgt.mean() > 0.1
        prompt = item["prompts"][0]
        kinds.add(type(prompt).__name__)
        if isinstance(prompt, simulate.Point):
            assert max(abs(v - 16) for v in prompt.index) <= 2 and tgt[prompt.index]  # centred, like the engine
    assert "Point" in kinds


def test_a_first_click_is_at_the_window_centre_for_targets_of_every_size(tmp_path):
    """The engine centres a click's window on the click; training must too, for small targets as
    well as big ones (session 12: a centred click had meant "an object larger than the window")."""
    from nnint.train import simulate
    from nnint.train.dataset import SampleConfig, TrainSet, _write_case
    from nnint.train.loop import _model_setup

    rng = np.random.default_rng(2)
    zz, yy, xx = np.indices((80, 80, 80))
    img = rng.normal(0, 1, (80, 80, 80)).astype(np.float32)
    lab = np.zeros((80, 80, 80), np.uint8)
    lab[(zz - 20) ** 2 + (yy - 20) ** 2 + (xx - 20) ** 2 < 5**2] = 1  # ~500 voxels
    lab[(zz - 50) ** 2 + (yy - 50) ** 2 + (xx - 50) ** 2 < 9**2] = 2  # ~3,000 voxels
    img[lab > 0] += 3
    ref = _write_case(tmp_path / "small", "small", img, lab, (1.0, 1.0, 1.0), False, keep_raw=False, signature="t")
    setup = _model_setup(TrainConfig(data=["x"], out=str(tmp_path), arch="tiny", patch=32))
    cfg = SampleConfig(patch=32, decay=setup.decay, point_radius=setup.point_radius, mapping=setup.mapping,
                       num_channels=setup.num_channels, p_zoom=0.0, p_big_click=0.0, p_component=0.0,
                       p_corrupt_prev=0.0, first_kinds={"point": 0.5, "box3d": 0.5})
    ts = TrainSet([ref], cfg, seed=0)
    clicks = boxes = 0
    for i in range(24):
        item = ts[i]
        prompt = item["prompts"][0]
        if isinstance(prompt, simulate.Point):
            assert max(abs(v - 16) for v in prompt.index) <= 2, prompt.index
            assert item["target"].numpy().astype(bool)[prompt.index]
            clicks += 1
        else:
            boxes += 1
    assert clicks >= 5 and boxes >= 5


def test_small_targets_can_be_shown_magnified_as_the_engine_shows_them(tmp_path):
    """SampleConfig.p_magnify: a target under patch/6 across, in a window P * z voxels across
    upsampled to the patch (z = (extent + P // 3) / P, at least 1/3), never with a first point."""
    from nnint.train import simulate
    from nnint.train.dataset import SampleConfig, TrainSet, _write_case
    from nnint.train.loop import _model_setup

    rng = np.random.default_rng(5)
    zz, yy, xx = np.indices((60, 60, 60))
    img = rng.normal(0, 1, (60, 60, 60)).astype(np.float32)
    lab = np.zeros((60, 60, 60), np.uint8)
    lab[(zz - 30) ** 2 + (yy - 30) ** 2 + (xx - 30) ** 2 <= 2**2] = 1  # 33 voxels, 5 across (< 48 / 6)
    img[lab > 0] += 4
    ref = _write_case(tmp_path / "speck", "speck", img, lab, (1.0, 1.0, 1.0), False, keep_raw=False, signature="t")
    setup = _model_setup(TrainConfig(data=["x"], out=str(tmp_path), arch="tiny", patch=48))
    common = dict(patch=48, decay=setup.decay, point_radius=setup.point_radius, mapping=setup.mapping,
                  num_channels=setup.num_channels, p_zoom=0.0, p_big_click=0.0, p_component=0.0, p_big=0.0,
                  first_kinds={"point": 0.5, "box3d": 0.5})
    plain, magnified = (TrainSet([ref], SampleConfig(**common, p_magnify=p), seed=0) for p in (0.0, 1.0))
    sizes = {0.0: [], 1.0: []}
    for i in range(8):
        a, b = plain[i], magnified[i]
        assert b["image"].shape == a["image"].shape == (1, 48, 48, 48) and b["zoom"] == 1.0
        assert not isinstance(b["prompts"][0], simulate.Point)
        sizes[0.0].append(int(a["target"].sum()))
        sizes[1.0].append(int(b["target"].sum()))
    # (5 + 16) / 48 -> about 2.3x per axis, about 12x the voxels (spatial augmentation scales by up to 1.4)
    assert np.median(sizes[1.0]) > 5 * np.median(sizes[0.0])
    # the stream without it is unchanged
    again = TrainSet([ref], SampleConfig(**common), seed=0)
    assert torch.equal(again[3]["target"], plain[3]["target"])


def test_windows_that_cut_big_targets_become_refinement_samples(tmp_path):
    from nnint.train.dataset import SampleConfig, TrainSet, _touches_border, _write_case
    from nnint.train.loop import _model_setup

    rng = np.random.default_rng(0)
    zz, yy, xx = np.indices((80, 80, 80))
    img = rng.normal(0, 1, (80, 80, 80)).astype(np.float32)
    lab = ((zz - 40) ** 2 + (yy - 40) ** 2 + (xx - 40) ** 2 < 36**2).astype(np.uint8)
    img[lab > 0] += 3
    ref = _write_case(tmp_path / "big", "big", img, lab, (1.0, 1.0, 1.0), False, keep_raw=False, signature="t")
    setup = _model_setup(TrainConfig(data=["x"], out=str(tmp_path), arch="tiny", patch=32))
    cfg = SampleConfig(patch=32, decay=setup.decay, point_radius=setup.point_radius, mapping=setup.mapping,
                       num_channels=setup.num_channels, p_zoom=0.0, p_refine=1.0, p_big=1.0, p_corrupt_prev=0.0,
                       p_big_click=0.0)
    ts = TrainSet([ref], cfg, seed=0)
    refine = 0
    for i in range(12):
        item = ts[i]
        tgt = item["target"].numpy().astype(bool)
        if item["zoom"] == 1.0 and _touches_border(tgt):
            prev = item["prev_seg"].astype(bool)
            assert prev.any() and len(item["prompts"]) == 1  # a coarse mask to sharpen, one prompt
            assert np.array_equal(item["channels"][setup.mapping["prev_seg"]] > 0.5, prev)
            refine += 1
    assert refine >= 3


def test_sample_dice_script_scores_a_model_on_training_samples(dataset, tmp_path):
    """scripts/diagnose/sample_dice.py: the training-distribution check used in session 5."""
    out = tmp_path / "run"
    train(_cfg(dataset, out, iterations=1), log=lambda s: None)
    table = tmp_path / "dice.json"
    _run_diagnose_script("sample_dice.py", "--model", str(out / "model"), "--data", str(dataset), "--cache",
                         str(out.parent / "cache"), "--patch", "32", "--samples", "6", "--threads", "1", "--json", str(table))
    rows = json.loads(table.read_text())["rows"]
    overall = [r for r in rows if r["kind"] == "all" and r["size"] == "all"]
    assert overall and overall[0]["n"] == 6 and 0.0 <= overall[0]["dice"] <= 1.0
    assert 0.0 <= overall[0]["dice_shuffled_image"] <= 1.0
    assert sum(r["n"] for r in rows if r["kind"] == "all" and r["size"] != "all") == 6


def test_magnified_crops_script_scores_every_zoom_per_target(dataset, tmp_path):
    """scripts/diagnose/magnified_crops.py: the size-prior check behind the engine's ``magnify``."""
    out = tmp_path / "run"
    train(_cfg(dataset, out, iterations=1), log=lambda s: None)
    lines = tmp_path / "crops.jsonl"
    _run_diagnose_script("magnified_crops.py", "--model", str(out / "model"), "--data", str(dataset),
                         "--zooms", "1,2", "--max-voxels", "100000", "--structures", "2", "--clicks", "2",
                         "--out", str(lines))
    rows = [json.loads(line) for line in lines.read_text().splitlines()]
    assert len(rows) == 2 and all(r["case"].endswith("c4") for r in rows)  # the dev case only
    for r in rows:
        assert len(r["z1"]) == 3 and len(r["z2"]) == 3
        assert all(0.0 <= d <= 1.0 for d in r["z1"] + r["z2"])


def _nan_loss_for(monkeypatch, calls: set[int]) -> None:
    """Make the training loss NaN on the given (1-based) loss evaluations."""
    from nnint.train import loop

    real, count = loop.deep_supervision_loss, [0]

    def patched(outputs, target, weight=None):
        count[0] += 1
        loss = real(outputs, target, weight)
        return loss * float("nan") if count[0] in calls else loss

    monkeypatch.setattr(loop, "deep_supervision_loss", patched)


def test_a_non_finite_step_is_skipped_not_applied(dataset, tmp_path, monkeypatch):
    _nan_loss_for(monkeypatch, {2})
    lines: list[str] = []
    out = tmp_path / "run"
    summary = train(_cfg(dataset, out, iterations=3), log=lines.append)
    assert summary["iteration"] == 3 and np.isfinite(summary["loss"])
    state = torch.load(out / "checkpoint_latest.pth", weights_only=False)
    assert all(torch.isfinite(v).all() for v in state["network_weights"].values())
    assert any("1 non-finite steps skipped" in line for line in lines)


def test_many_non_finite_steps_in_a_row_stop_with_a_clear_error(dataset, tmp_path, monkeypatch):
    from nnint.errors import NnintError
    from nnint.train import loop

    monkeypatch.setattr(loop, "MAX_BAD_STEPS", 2)
    _nan_loss_for(monkeypatch, {1, 2, 3})
    with pytest.raises(NnintError, match="non-finite loss or gradient.*--no-amp"):
        train(_cfg(dataset, tmp_path / "run", iterations=3), log=lambda s: None)


def test_contrast_to_noise_tells_visible_from_invisible_targets():
    from nnint.train.dataset import contrast_to_noise

    rng = np.random.default_rng(0)
    zz, yy, xx = np.indices((32, 32, 32))
    ball = (zz - 16) ** 2 + (yy - 16) ** 2 + (xx - 16) ** 2 < 36
    noise = rng.normal(0, 1, ball.shape).astype(np.float32)
    assert contrast_to_noise(noise + 5 * ball, ball) > 3
    assert contrast_to_noise(noise, ball) < 0.5
    assert contrast_to_noise(noise, np.ones_like(ball)) == float("inf")  # no surround: kept


def test_min_cnr_keeps_only_visible_targets(tmp_path):
    from nnint.train.dataset import SampleConfig, TrainSet, _write_case, contrast_to_noise
    from nnint.train.loop import _model_setup

    rng = np.random.default_rng(3)
    zz, yy, xx = np.indices((48, 48, 48))
    img = rng.normal(0, 1, (48, 48, 48)).astype(np.float32)
    lab = np.zeros((48, 48, 48), np.uint8)
    lab[(zz - 14) ** 2 + (yy - 14) ** 2 + (xx - 14) ** 2 < 49] = 1  # visible: +4 noise SDs
    lab[(zz - 34) ** 2 + (yy - 34) ** 2 + (xx - 34) ** 2 < 49] = 2  # invisible: same intensity
    img[lab == 1] += 4
    ref = _write_case(tmp_path / "c", "c", img, lab, (1.0, 1.0, 1.0), False, keep_raw=False, signature="t")
    setup = _model_setup(TrainConfig(data=["x"], out=str(tmp_path), arch="tiny", patch=32))
    common = dict(patch=32, decay=setup.decay, point_radius=setup.point_radius, mapping=setup.mapping,
                  num_channels=setup.num_channels)
    every = TrainSet([ref], SampleConfig(**common), seed=0)
    visible = TrainSet([ref], SampleConfig(**common, min_cnr=2.0), seed=0)
    cnr_all = [contrast_to_noise(every[i]["image"][0].numpy(), every[i]["target"].numpy()) for i in range(16)]
    cnr_kept = [contrast_to_noise(visible[i]["image"][0].numpy(), visible[i]["target"].numpy()) for i in range(16)]
    assert min(cnr_all) < 2.0  # the invisible ball is drawn without the filter
    assert min(cnr_kept) >= 2.0


def test_toy_learnability_script_reports_real_and_shuffled_dice():
    """scripts/diagnose/toy_learnability.py: the session-7 check that the network can learn edges."""
    stdout = _run_diagnose_script("toy_learnability.py", "--arch", "tiny", "--iterations", "2", "--every", "2",
                                  "--held-out", "2", "--batch", "1", "--threads", "1")
    assert "held-out Dice" in stdout and "shuffled image" in stdout


def test_toy_learnability_starts_from_a_model_folder(dataset, tmp_path):
    """--init (session 16): the same check from trained weights, with the score before training."""
    base = tmp_path / "base"
    train(_cfg(dataset, base, iterations=1), log=lambda s: None)
    stdout = _run_diagnose_script("toy_learnability.py", "--init", str(base / "model"), "--iterations", "2",
                                  "--every", "2", "--held-out", "2", "--batch", "1", "--threads", "1")
    reports = [line.split()[1] for line in stdout.splitlines() if line.startswith("it ")]
    assert reports == ["0", "2"]


def test_weighted_cross_entropy_with_unit_weights_is_the_plain_loss():
    from nnint.train.loop import deep_supervision_loss, dice_ce_loss

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 8, 8, 8, generator=g)
    target = (torch.rand(2, 8, 8, 8, generator=g) > 0.5).long()
    ones = torch.ones(2, 8, 8, 8)
    assert torch.allclose(dice_ce_loss(logits, target), dice_ce_loss(logits, target, ones))
    heads = [logits, torch.randn(2, 2, 4, 4, 4, generator=g), torch.randn(2, 2, 2, 2, 2, generator=g)]
    assert torch.allclose(deep_supervision_loss(heads, target), deep_supervision_loss(heads, target, ones))
    # a wrong voxel weighted up raises the loss
    w = ones.clone()
    wrong = (logits.argmax(1) != target)
    w[wrong] = 11.0
    assert dice_ce_loss(logits, target, w) > dice_ce_loss(logits, target) + 1.0


def test_correction_weight_weights_the_corrected_error_regions(dataset, tmp_path, monkeypatch):
    """--correction-weight: the loss gets 1 + w on the error regions the simulated corrections point
    at, 1 elsewhere; without it the loss is unweighted."""
    from nnint.train import loop

    seen: list = []
    real = loop.deep_supervision_loss

    def spy(outputs, target, weight=None):
        seen.append(None if weight is None else weight.detach().clone())
        return real(outputs, target, weight)

    monkeypatch.setattr(loop, "deep_supervision_loss", spy)
    monkeypatch.setattr(loop, "_rounds", lambda rng, max_rounds: 1)
    train(_cfg(dataset, tmp_path / "off", iterations=2), log=lambda s: None)
    assert seen and all(w is None for w in seen)
    seen.clear()
    train(_cfg(dataset, tmp_path / "on", iterations=3, correction_weight=9.0), log=lambda s: None)
    weighted = [w for w in seen if w is not None]
    assert weighted, "a correction round happened but the loss was not weighted"
    for w in weighted:
        assert set(torch.unique(w).tolist()) <= {1.0, 10.0} and (w == 10.0).any()


def test_click_gain_script_reports_dice_per_click(dataset, tmp_path):
    """scripts/diagnose/click_gain.py: do correction clicks change the answer (session 8)?"""
    out = tmp_path / "run"
    train(_cfg(dataset, out, iterations=1), log=lambda s: None)
    table = tmp_path / "gain.json"
    _run_diagnose_script("click_gain.py", "--model", str(out / "model"), "--data", str(dataset), "--cache",
                         str(out.parent / "cache"), "--patch", "32", "--samples", "4", "--clicks", "2", "--threads", "1",
                         "--json", str(table))
    res = json.loads(table.read_text())
    curve = res["curves"]["all"]
    assert curve["n"] == 4 and len(curve["dice_per_step"]) == 3
    assert all(0.0 <= d <= 1.0 for d in curve["dice_per_step"])
    for v in res["clicks_by_kind"].values():
        assert v["n"] >= 1 and 0.0 <= v["no_effect"] <= 1.0


def test_label_boundaries_marks_both_sides_of_every_label_change():
    from nnint.train.dataset import label_boundaries

    lab = np.zeros((6, 6, 6), np.uint8)
    lab[:, :, 3:] = 1  # one plane of change between x = 2 and x = 3
    b = label_boundaries(lab)
    assert b.dtype == np.uint8
    assert b[:, :, 2:4].all() and not b[:, :, :2].any() and not b[:, :, 4:].any()
    assert not label_boundaries(np.full((5, 5, 5), 7)).any()  # the patch's own faces are no boundary
    lab2 = np.zeros((7, 7, 7), np.int32)
    lab2[3, 3, 3] = 2
    b2 = label_boundaries(lab2)
    assert b2.sum() == 7 and b2[3, 3, 3]  # the voxel and its six neighbours


def test_spatial_augmentation_moves_stacked_labels_like_one():
    """A (k, z, y, x) label stack gets exactly the transform a single label gets with the same draws."""
    from nnint.train import augment

    rng0 = np.random.default_rng(3)
    img = rng0.normal(0, 1, (24, 24, 24)).astype(np.float32)
    a = np.zeros((24, 24, 24), np.uint8)
    a[5:15, 8:20, 4:12] = 1
    b = np.zeros_like(a)
    b[10:20, 2:9, 9:22] = 1
    cfg = augment.AugmentConfig()
    cfg.p_affine = 1.0
    for seed in range(4):
        img1, a1 = augment.spatial(img, a, np.random.default_rng(seed), cfg)
        img2, ab = augment.spatial(img, np.stack([a, b]), np.random.default_rng(seed), cfg)
        _, b1 = augment.spatial(img, b, np.random.default_rng(seed), cfg)
        assert ab.shape == (2, 24, 24, 24)
        np.testing.assert_array_equal(img1, img2)
        np.testing.assert_array_equal(a1.astype(bool), ab[0].astype(bool))
        np.testing.assert_array_equal(b1.astype(bool), ab[1].astype(bool))


def test_boundary_samples_keep_the_sample_stream(dataset, tmp_path):
    """SampleConfig.boundary adds the window's label boundaries (moved with the target by the
    augmentation) and changes nothing else: same images, targets, prompts and channels."""
    from nnint.train import dataset as ds
    from nnint.train.loop import _model_setup

    setup = _model_setup(TrainConfig(data=["x"], out=str(tmp_path), arch="tiny", patch=32))
    cases = ds.prepare_cases([str(dataset)], tmp_path / "cache", "train")
    kw = dict(patch=32, decay=setup.decay, point_radius=setup.point_radius, mapping=setup.mapping,
              num_channels=setup.num_channels)
    plain = ds.TrainSet(cases, ds.SampleConfig(**kw), seed=4)
    withb = ds.TrainSet(cases, ds.SampleConfig(**kw, boundary=True), seed=4)
    usable = 0
    for i in range(12):
        p, q = plain[i], withb[i]
        assert "boundary" not in p
        for key in ("image", "target", "channels"):
            assert torch.equal(p[key], q[key]), key
        assert q["boundary"].shape == q["target"].shape and q["boundary"].dtype == torch.uint8
        if q["has_boundary"]:
            usable += 1
            t, b = q["target"].numpy().astype(bool), q["boundary"].numpy().astype(bool)
            inner = t & ~np.pad(~t, 1, constant_values=False)[tuple(slice(1, -1) for _ in range(3))]
            edge = t & ~inner
            # the target's own surface lies on the label map's boundaries (up to resampling)
            if edge.sum() > 20:
                assert (b[edge]).mean() > 0.5
        else:
            assert q["zoom"] > 1.0 and not q["boundary"].any()
    assert usable > 0


def test_boundary_weight_trains_a_head_that_is_not_exported(dataset, tmp_path):
    """--boundary-weight: the auxiliary head is trained (its loss is logged, its weights are in the
    checkpoint and resume), its gradient reaches the network, and the model folder is unchanged."""
    from nnint.backends.torch.checkpoint import load_model_folder
    from nnint.train import loop

    out_b = tmp_path / "on"
    train(_cfg(dataset, out_b, iterations=2, boundary_weight=1.0), log=lambda s: None)
    state = torch.load(out_b / "checkpoint_latest.pth", map_location="cpu", weights_only=False)
    assert state["boundary_head"] is not None and "conv.weight" in state["boundary_head"]
    assert any("boundary_loss" in h for h in state["history"])
    train(_cfg(dataset, tmp_path / "off", iterations=2), log=lambda s: None)
    on = torch.load(out_b / "model" / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    off = torch.load(tmp_path / "off" / "model" / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert set(on["network_weights"]) == set(off["network_weights"])
    load_model_folder(out_b / "model").build_network("cpu")  # strict load
    split = tmp_path / "split"  # stopped and resumed: the same head as the straight run
    train(_cfg(dataset, split, iterations=2, stop_at=1, save_every=100, boundary_weight=1.0), log=lambda s: None)
    assert train(_cfg(dataset, split, iterations=2, resume=True), log=lambda s: None)["iteration"] == 2
    resumed = torch.load(split / "checkpoint_latest.pth", map_location="cpu", weights_only=False)["boundary_head"]
    for k, v in state["boundary_head"].items():
        torch.testing.assert_close(v, resumed[k], rtol=0, atol=1e-6)
    # the auxiliary loss alone moves the shared decoder (else it could not teach the network anything)
    setup = loop._model_setup(_cfg(dataset, tmp_path / "x"))
    net = loop.build_model(setup, 0)
    head = loop.BoundaryHead(net)
    x = torch.randn(2, 8, 32, 32, 32)
    net(x)
    bnd = torch.zeros(2, 32, 32, 32)
    bnd[:, :, :, 15:17] = 1
    head.loss(bnd, torch.tensor([True, False])).backward()
    assert net.decoder.stages[-1].convs[0].conv.weight.grad.abs().sum() > 0
    assert float(head.loss(bnd, torch.tensor([False, False]))) == 0.0


def test_correction_round_benchmark_times_serial_and_pooled_rounds(tmp_path):
    """scripts/bench/correction_rounds.py: the serial CPU work of a correction round, 1 vs N threads."""
    table = tmp_path / "rounds.json"
    _run_diagnose_script("correction_rounds.py", "--patch", "32", "--batch", "2", "--repeats", "1", "--volumes", "1",
                         "--threads", "2", "--json", str(table), folder="bench")
    res = json.loads(table.read_text())
    assert res["batch"] == 2 and set(res["seconds_per_round_by_threads"]) == {"1", "2"}
    assert all(v > 0 for v in res["seconds_per_round_by_threads"].values())


def test_big_click_script_scores_models_on_clicks_in_big_regions(dataset, tmp_path):
    """scripts/diagnose/big_click.py: one click on a region bigger than the window (session 9)."""
    out = tmp_path / "run"
    train(_cfg(dataset, out, iterations=1), log=lambda s: None)
    table, png = tmp_path / "big.json", tmp_path / "big.png"
    _run_diagnose_script("big_click.py", "--model", f"a={out / 'model'}", "--model", f"b={out / 'model'}",
                         "--data", str(dataset), "--cache", str(out.parent / "cache"), "--patch", "16",
                         "--samples", "2", "--rows", "2", "--threads", "1", "--json", str(table), "--png", str(png))
    res = json.loads(table.read_text())
    assert set(res["mean_dice"]) == {"a", "b"} and res["mean_dice"]["a"] == res["mean_dice"]["b"]
    assert 0.0 <= res["mean_dice"]["a"] <= 1.0 and png.stat().st_size > 1000


def test_a_case_pack_trains_like_its_source_cache(dataset, tmp_path):
    """``write_pack`` + ``--data pack:DIR``: training cases travel (to a GPU machine without the raw
    data or SimpleITK) as compressed float16 files, keep their targets and licence flag, and train."""
    from nnint.errors import NnintError
    from nnint.train.dataset import prepare_cases, write_pack

    refs = prepare_cases([str(dataset)], tmp_path / "cache", "train", log=None)
    files = write_pack(refs, tmp_path / "pack", {r.name: r.name != "c1" for r in refs})
    assert len(files) == 4
    got = prepare_cases([f"pack:{tmp_path / 'pack'}"], tmp_path / "cache2", "train", log=None)
    by_name = {r.name: r for r in got}
    assert sorted(by_name) == sorted(r.name for r in refs)
    for r in refs:
        g = by_name[r.name]
        assert g.targets == r.targets and g.shape == r.shape and g.spacing == r.spacing
        np.testing.assert_array_equal(g.labels(), r.labels())
        np.testing.assert_allclose(g.image(), r.image(), rtol=1e-3, atol=1e-3)  # float16
        assert g.image().dtype == np.float32
    assert prepare_cases([f"pack:{tmp_path / 'pack'}"], tmp_path / "cache2", "dev", log=None) == []
    kept = prepare_cases([f"pack:{tmp_path / 'pack'}"], tmp_path / "cache3", "train", redistributable_only=True, log=None)
    assert sorted(r.name for r in kept) == sorted(r.name for r in refs if r.name != "c1")
    with pytest.raises(NnintError, match="no .npz case files"):
        prepare_cases([f"pack:{tmp_path}"], tmp_path / "cache4", "train", log=None)
    summary = train(_cfg(f"pack:{tmp_path / 'pack'}", tmp_path / "run", iterations=2), log=lambda s: None)
    assert summary["iteration"] == 2 and np.isfinite(summary["loss"])


def test_mixed_patches_alternate_window_sizes_between_batches(dataset, tmp_path):
    from nnint.backends.torch.checkpoint import load_model_folder
    from nnint.train import dataset as ds
    from nnint.train.loop import _model_setup

    setup = _model_setup(TrainConfig(data=["x"], out=str(tmp_path), arch="tiny", patch=(32, 48)))
    refs = ds.prepare_cases([str(dataset)], tmp_path / "cache", "train", log=None)
    scfg = ds.SampleConfig(patch=32, decay=setup.decay, point_radius=setup.point_radius, mapping=setup.mapping,
                           num_channels=setup.num_channels)
    tset = ds.TrainSet(refs, scfg, seed=3, patches=(32, 48), batch=2)
    sizes = [tuple(tset[i]["image"].shape[1:]) for i in range(8)]
    assert sizes == [(32,) * 3] * 2 + [(48,) * 3] * 2 + [(32,) * 3] * 2 + [(48,) * 3] * 2
    one = ds.TrainSet(refs, scfg, seed=3)  # a single size keeps the old sample stream
    np.testing.assert_array_equal(one[1]["image"].numpy(), tset[1]["image"].numpy())
    out = tmp_path / "run"
    summary = train(_cfg(dataset, out, patch=(32, 48), batch=2, iterations=2), log=lambda s: None)
    assert summary["iteration"] == 2 and np.isfinite(summary["loss"])
    assert load_model_folder(out / "model").patch_size[0] == 48  # the largest window, unless --infer-patch



def test_first_prompts_restricts_how_every_episode_opens(tmp_path):
    """``--first-prompts box3d`` (``restrict_first_kinds``): every sample opens with a 3D box,
    zoomed-out and big-object samples included; corrections keep their mix."""
    import argparse

    from nnint.default_plugins.train_command import _kinds
    from nnint.prompts import Box
    from nnint.train.dataset import SampleConfig, TrainSet, _write_case, restrict_first_kinds
    from nnint.train.loop import _model_setup

    rng = np.random.default_rng(2)
    zz, yy, xx = np.indices((80, 80, 80))
    img = rng.normal(0, 1, (80, 80, 80)).astype(np.float32)
    lab = ((zz - 40) ** 2 + (yy - 40) ** 2 + (xx - 40) ** 2 < 30**2).astype(np.uint8)
    lab[4:12, 4:12, 4:12] = 2
    img[lab > 0] += 3
    ref = _write_case(tmp_path / "c", "c", img, lab, (1.0, 1.0, 1.0), False, keep_raw=False, signature="t")
    setup = _model_setup(TrainConfig(data=["x"], out=str(tmp_path), arch="tiny", patch=32))
    base = SampleConfig(patch=32, decay=setup.decay, point_radius=setup.point_radius, mapping=setup.mapping,
                        num_channels=setup.num_channels, p_big_click=0.5)
    boxes = restrict_first_kinds(base, {"box3d": 1.0})
    assert boxes.p_big_click == 0.0 and boxes.correction_kinds == base.correction_kinds
    ts = TrainSet([ref], boxes, seed=0)
    zooms = set()
    pos_point = setup.mapping["points"][0]
    for i in range(16):
        item = ts[i]
        if item["prompts"] is None:  # a zoomed-out view, rasterised block-wise: read the channels
            ch = item["channels"].numpy()
            assert ch[setup.mapping["bbox3d"][0]].max() > 0 and ch[pos_point].max() == 0
        else:
            first = item["prompts"][0]
            assert isinstance(first, Box) and not first.is_2d, first
        zooms.add(item["zoom"] > 1.0)
    assert zooms == {False, True}  # both the 1x and the zoomed-out views of the big target
    clicks = restrict_first_kinds(base, {"point": 1.0, "box3d": 1.0})
    assert clicks.p_big_click == 0.5 and set(clicks.big_click_kinds) == {"point"}
    for bad in ({"boxes": 1.0}, {}, {"point": 0.0}):
        with pytest.raises(ValueError):
            restrict_first_kinds(base, bad)
    assert _kinds("box3d") == {"box3d": 1.0} and _kinds("box3d:0.8,box2d:0.2") == {"box3d": 0.8, "box2d": 0.2}
    for bad in ("boxes", "box3d:x", "box3d:0", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            _kinds(bad)

def test_train_cli_parses_one_or_several_patch_edges():
    import argparse

    from nnint.default_plugins.train_command import _patches

    assert _patches("64") == 64 and _patches("64,96") == (64, 96)
    for bad in ("64,x", "8"):
        with pytest.raises(argparse.ArgumentTypeError):
            _patches(bad)


def test_minutes_fits_the_schedule_into_a_time_budget(dataset, tmp_path):
    """--minutes: the iteration count is re-estimated from the measured speed, the run ends in
    time with its learning rate decayed to zero, and --iterations stays an upper bound."""
    out = tmp_path / "run"
    summary = train(_cfg(dataset, out, iterations=1000, minutes=0.05, save_every=0, warmup=1), log=lambda s: None)
    assert 25 <= summary["iteration"] < 1000 and not summary["stopped"]
    rows = list(__import__("csv").DictReader(open(out / "log.csv")))
    assert float(rows[-1]["lr"]) < 0.2 * float(rows[0]["lr"])
    assert (out / "model" / "fold_0" / "checkpoint_final.pth").exists()
    capped = train(_cfg(dataset, tmp_path / "capped", iterations=30, minutes=5, save_every=0), log=lambda s: None)
    assert capped["iteration"] == 30


def test_the_device_scripts_pack_cases_and_run_a_time_boxed_training(dataset, tmp_path):
    """scripts/device/: pack_cases.py writes the redistributable non-synthetic cases, and
    train_gpu.sh (here on the CPU, with the tiny network) trains on the pack plus synthetic cases
    for --minutes and returns the run folder as tar parts, as it does on the rented GPU."""
    import os
    import subprocess
    import sys
    import tarfile
    from pathlib import Path

    from nnint.backends.torch.checkpoint import load_model_folder

    repo = Path(__file__).resolve().parents[2]
    prov = {f"{dataset.name}/c{i}": {"source": "registry", "redistributable": i != 1} for i in range(5)}
    (dataset.parent / "provenance.json").write_text(json.dumps(prov))
    try:
        out = _run_diagnose_script("pack_cases.py", "--data", str(dataset), "--redistributable-only",
                                   "--exclude-source", "synthetic", "--cache", str(tmp_path / "cache"),
                                   "--out", str(tmp_path / "pack"), folder="device")
    finally:
        (dataset.parent / "provenance.json").unlink()
    assert "3 cases" in out  # train split c0-c3 without c1
    assert len(list((tmp_path / "pack").glob("*.npz"))) == 3
    results = tmp_path / "out"
    results.mkdir()
    env = dict(os.environ, OUT=str(results), PY=sys.executable, DEVICE="cpu", MINUTES="0.05", INIT="", SEEDS="1",
               PER_SEED="2", BATCH="1", WORKERS="0", RUN=str(tmp_path / "run"), PACK=str(tmp_path / "pack"),
               WHEELS=str(tmp_path / "no-wheels"),
               EXTRA="--arch tiny --patch 32,48 --infer-patch 48 --threads 1 --max-rounds 1")
    proc = subprocess.run(["bash", str(repo / "scripts" / "device" / "train_gpu.sh")], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = (results / "train.log").read_text()
    assert "(final)" in log and "5 training cases" in log  # 3 packed + 2 synthetic
    parts = sorted(results.glob("run.tgz.part*"))
    assert parts
    (tmp_path / "run.tgz").write_bytes(b"".join(p.read_bytes() for p in parts))
    with tarfile.open(tmp_path / "run.tgz") as tar:
        tar.extractall(tmp_path / "back", filter="data")
    model = next((tmp_path / "back").rglob("plans.json")).parent
    assert load_model_folder(model).patch_size[0] == 48


def test_window_rank_fine_tune_starts_as_the_initial_model(dataset, tmp_path):
    """--window-rank on --init: a zero stem slice for the new channel, so same logits before training."""
    from nnint.backends.torch.checkpoint import load_model_folder
    from nnint.backends.torch.network import WINDOW_RANK_KEY
    from nnint.train.loop import _model_setup, build_model

    base = tmp_path / "base"
    train(_cfg(dataset, base, iterations=1), log=lambda s: None)
    setup = _model_setup(_cfg(dataset, tmp_path / "ft", init=str(base / "model"), window_rank=True))
    ranked = build_model(setup, seed=0).eval()
    plain = load_model_folder(base / "model").build_network("cpu")
    assert ranked.window_rank is not None and plain.window_rank is None
    x = torch.randn(2, 8, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ranked(x), plain(x), rtol=1e-4, atol=1e-4)
    # and the exported fine-tune keeps the channel
    ft = tmp_path / "ft"
    train(_cfg(dataset, ft, iterations=1, init=str(base / "model"), window_rank=True), log=lambda s: None)
    mf = load_model_folder(ft / "model")
    assert mf.architecture["arch_kwargs"][WINDOW_RANK_KEY] is True
    assert mf.build_network("cpu").window_rank is not None


def test_prompt_likeness_fine_tune_starts_as_the_initial_model(dataset, tmp_path):
    """--prompt-likeness (with --window-rank) on --init from a plain model: zero stem slices for the
    five new channels, in the order the network appends them, so the same logits before training."""
    from nnint.backends.torch.checkpoint import load_model_folder
    from nnint.train.loop import _model_setup, build_model

    base = tmp_path / "base"
    train(_cfg(dataset, base, iterations=1), log=lambda s: None)
    setup = _model_setup(_cfg(dataset, tmp_path / "ft", init=str(base / "model"), window_rank=True,
                              prompt_likeness=True))
    grown = build_model(setup, seed=0).eval()
    plain = load_model_folder(base / "model").build_network("cpu")
    assert grown.prompt_likeness is not None and grown.encoder.stem.convs[0].conv.weight.shape[1] == 13
    x = torch.randn(2, 8, 32, 32, 32)
    x[:, 1:] = 0
    x[:, 4, 10:14, 10:14, 10:14] = 1.0
    with torch.no_grad():
        torch.testing.assert_close(grown(x), plain(x), rtol=1e-4, atol=1e-4)


def test_correction_rounds_feed_back_the_mask_the_engine_would_show():
    """Training rounds pass the network's answer through the engine's answer rules before the
    simulated user looks at it: a negative click only removes, a positive 3D box confines."""
    from nnint.prompts import Box, Point
    from nnint.train.loop import shown_mask

    shown = np.zeros((8, 8, 8), np.uint8)
    shown[2:6, 2:6, 2:6] = 1
    pred = np.zeros_like(shown)
    pred[3:7, 3:7, 3:7] = 1  # grew on one side, shrank on the other
    box = Box((1, 1, 1), (7, 7, 7), True)

    after_negative = shown_mask(pred, shown, [box, Point((5, 5, 5), False)])
    assert np.array_equal(after_negative, shown & pred)
    after_positive = shown_mask(pred, shown, [box, Point((3, 3, 3), True)])
    assert np.array_equal(after_positive, shown | pred)

    # the first answer to a box: nothing on screen yet, only the box limit applies
    first = shown_mask(np.ones_like(shown), np.zeros_like(shown), [box])
    assert first.sum() == 6 ** 3 and first[1:7, 1:7, 1:7].all()
    # a positive click outside the box lifts the limit
    lifted = shown_mask(np.ones_like(shown), shown, [box, Point((0, 0, 0), True)])
    assert lifted.all()


def test_dev_by_contrast_groups_final_dice_by_target_visibility(tmp_path):
    """scripts/diagnose/dev_by_contrast.py: the session-15 split of dev Dice by target visibility."""
    from nnint.evaluate.data import open_dataset, write_nnunet_dataset

    rng = np.random.default_rng(0)
    image = rng.normal(100.0, 5.0, (24, 24, 24)).astype(np.float32)
    labels = np.zeros(image.shape, np.uint8)
    labels[4:10, 4:10, 4:10] = 1
    image[4:10, 4:10, 4:10] += 60.0  # 12 noise SDs brighter than its ring: visible
    labels[14:20, 14:20, 14:20] = 2  # the same intensity as its surround: invisible
    root = tmp_path / "Dataset001_Contrast"
    write_nnunet_dataset(root, [("c0", image, labels, (1.0, 1.0, 1.0))], {"bright": 1, "hidden": 2})
    (root / "splits.json").write_text(json.dumps({"train": [], "dev": ["c0"]}))
    case = open_dataset(str(root), split="dev").cases[0].name
    results = tmp_path / "results.csv"
    rows = ["model,protocol,case,label,step,dice"]
    for step, (d1, d2) in enumerate([(0.5, 0.1), (0.9, 0.2)]):
        rows += [f"m,box+clicks,{case},1,{step},{d1}", f"m,box+clicks,{case},2,{step},{d2}"]
    results.write_text("\n".join(rows) + "\n")
    out = _run_diagnose_script("dev_by_contrast.py", str(results), "--data", str(root), "--split", "dev",
                               "--cache", str(tmp_path / "cnr.json"))
    line = [ln for ln in out.splitlines() if str(results) in ln][0].split()
    assert line[:2] == ["0.200", "(1)"]  # CNR < 1: the hidden cube, final step
    assert line[-3:-1] == ["0.900", "(1)"]  # CNR >= 3: the bright one
    assert line[2:4] == ["-", "-"]  # nothing in between
    cnr = json.loads((tmp_path / "cnr.json").read_text())
    assert cnr[f"{case}|1"] > 3 > 1 > cnr[f"{case}|2"]


def _diagnose_module(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "diagnose" / name
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_focused_fit_references_score_a_clicked_cube():
    """scripts/diagnose/focused_fit.py's fixed answers (session 16) on a bright cube clicked at its
    centre: the click's ball, the size-aware ball, and region growing."""
    from nnint.prompts import Point
    from nnint.train import simulate

    ff = _diagnose_module("focused_fit.py")
    rng = np.random.default_rng(0)
    image = rng.normal(0.0, 0.1, (32, 32, 32)).astype(np.float32)
    target = np.zeros(image.shape, bool)
    target[13:19, 13:19, 13:19] = True  # 216 voxels
    image[target] += 2.0
    prompts = [Point((16, 16, 16), True)]
    chans = simulate.prompt_channels(prompts, np.zeros(image.shape, np.uint8))
    item = {"image": torch.from_numpy(image)[None], "target": torch.from_numpy(target.astype(np.uint8)),
            "channels": torch.from_numpy(chans), "prompts": prompts}
    foot, sized, grown = ff.references([item])
    ball = (chans[3] > 0).sum()
    inside = (chans[3] > 0)[target].sum()
    assert foot == pytest.approx(2 * inside / (ball + target.sum()))
    assert sized > foot and sized > 0.8  # the cube's own volume around its centre
    assert grown > 0.8  # a cube 20 noise SDs bright is region growing's easy case (smoothing rounds its corners)
    # --min-region-growing keeps the samples an edge follower finds: the same cube made invisible
    # (its intensity taken away) is skipped
    hidden = dict(item, image=torch.from_numpy(image - 2.0 * target)[None])
    kept, next_index = ff.slice_samples([hidden, item, hidden], 0, 1, 500, min_growing=0.5)
    assert len(kept) == 1 and kept[0] is item and next_index == 2
    # --min-voxels skips targets smaller than the slice
    speck = torch.zeros_like(item["target"])
    speck[15:17, 15:17, 15:17] = 1  # 8 voxels
    kept, next_index = ff.slice_samples([dict(item, target=speck), item], 0, 1, 500, min_voxels=216)
    assert kept[0] is item and next_index == 2


def test_focused_fit_prompt_likeness_copy_answers_as_the_model_did(dataset, tmp_path):
    """--prompt-likeness (session 17) gives the copy four more input channels with zero weights."""
    from nnint.backends.torch.checkpoint import load_model_folder

    ff = _diagnose_module("focused_fit.py")
    base = tmp_path / "base"
    train(_cfg(dataset, base, iterations=1), log=lambda s: None)
    mf = load_model_folder(base / "model")
    net, grown = mf.build_network("cpu").eval(), ff.with_prompt_likeness(mf).eval()
    x = torch.randn(1, 8, 32, 32, 32)
    x[:, 1:] = 0
    x[:, 4, 14:18, 14:18, 14:18] = 1.0
    with torch.no_grad():
        assert grown._input(x).shape[1] == net._input(x).shape[1] + 4
        torch.testing.assert_close(grown(x), net(x))


def test_focused_fit_trains_a_copy_on_one_slice(dataset, tmp_path):
    base = tmp_path / "base"
    train(_cfg(dataset, base, iterations=1), log=lambda s: None)
    before = (base / "model" / "fold_0" / "checkpoint_final.pth").read_bytes()
    _run_diagnose_script("focused_fit.py", "--model", str(base / "model"), "--data", str(dataset),
                         "--cache", str(tmp_path / "cache"), "--patch", "32", "--iterations", "2",
                         "--eval-every", "1", "--eval-samples", "3", "--max-voxels", "100000", "--threads", "1",
                         "--json", str(tmp_path / "fit.json"), "--png", str(tmp_path / "fit.png"))
    fit = json.loads((tmp_path / "fit.json").read_text())
    assert [c["iteration"] for c in fit["curve"]] == [0, 1, 2]
    assert all(0.0 <= c["dice"] <= 1.0 for c in fit["curve"])
    assert 0.0 <= fit["footprint_dice"] <= 1.0 and 0.0 <= fit["region_growing_dice"] <= 1.0
    assert (tmp_path / "fit.png").stat().st_size > 0
    assert (base / "model" / "fold_0" / "checkpoint_final.pth").read_bytes() == before  # never written
