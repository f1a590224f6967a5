"""Model folders: write_model_folder -> load_model_folder round trip and every error path.

That the official nnInteractive session loads what write_model_folder writes (and reads the
metadata the same way) is checked by scripts/compat/check_checkpoint.py with the official venv.
"""

from __future__ import annotations

import fractions
import json
import shutil
from pathlib import Path

import pytest
import torch

from nnint.backends.torch.architectures import make_plans, small_architecture, small_plans
from nnint.backends.torch.checkpoint import ModelFolder, default_inference_info, load_model_folder, write_model_folder
from nnint.backends.torch.network import build_network
from nnint.errors import CheckpointError, DeviceError, IncompatibleModelError

CFG = "3d_fullres"


def _weights(n_in: int = 8, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    return build_network(small_architecture(), n_in, 2).state_dict()


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    """A valid folder (small architecture, default capabilities, LICENSE); copy before mutating."""
    folder = tmp_path_factory.mktemp("models") / "small"
    write_model_folder(
        folder,
        plans=small_plans(),
        configuration=CFG,
        network_weights=_weights(),
        license_text="\n  Apache-2.0  \nfull text follows\n",
    )
    return folder


@pytest.fixture
def folder(written, tmp_path) -> Path:
    dst = tmp_path / "model"
    shutil.copytree(written, dst)
    return dst


def _edit_json(path: Path, update: dict | None = None, remove: tuple = ()) -> None:
    data = json.loads(path.read_text())
    data.update(update or {})
    for k in remove:
        data.pop(k, None)
    path.write_text(json.dumps(data))


def _error(fn, *args, cls=CheckpointError, **kwargs) -> CheckpointError:
    with pytest.raises(cls) as e:
        fn(*args, **kwargs)
    return e.value


# --- round trip -------------------------------------------------------------------------------


def test_round_trip_strict_load(written):
    m = load_model_folder(written)
    assert isinstance(m, ModelFolder)
    assert m.configuration_name == CFG and m.patch_size == (64, 64, 64)
    assert m.num_image_channels == 1 and m.num_interaction_channels == 7 and m.num_input_channels == 8
    assert m.channel_mapping == {
        "prev_seg": 0,
        "bbox2d": (1, 2),
        "bbox3d": (1, 2),
        "lasso": (1, 2),
        "points": (3, 4),
        "scribble": (5, 6),
    }
    assert m.supported_interactions == {
        "scribble": True,
        "lasso": True,
        "points": True,
        "bbox2d": True,
        "bbox3d": False,
    }
    assert m.supports_initial_label is True
    assert (m.interaction_decay, m.point_radius, m.preferred_scribble_thickness) == (0.98, 4, (2.0, 2.0, 2.0))
    assert m.pad_mode_image == "constant" and m.license == "Apache-2.0"
    assert m.trainer_name == "nnInteractiveTrainer_stub" and m.fold == "fold_0"
    assert m.metadata_file == "inference_info.json"

    net = m.build_network("cpu")
    ref = build_network(small_architecture(), 8, 2)
    ref.load_state_dict(_weights(), strict=True)
    x = torch.randn(1, 8, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(net(x), ref.eval()(x))
    assert not net.training


def test_written_checkpoint_is_plain_and_stores_aliases_once(written):
    ckpt = torch.load(written / "fold_0" / "checkpoint_final.pth", weights_only=True)  # no pickled objects
    assert ckpt["init_args"]["configuration"] == CFG and ckpt["trainer_name"] == "nnInteractiveTrainer_stub"
    load_model_folder(written, allow_pickle=False)
    n_bytes = sum(p.numel() * 4 for p in build_network(small_architecture(), 8, 2).parameters())
    assert (written / "fold_0" / "checkpoint_final.pth").stat().st_size < 1.2 * n_bytes


def test_aliases_stored_once_even_from_separate_copies(tmp_path):
    # an exponential moving average holds one tensor per key, and channels-last tensors are copied
    # when made contiguous: the writer must still store each parameter once (80 -> 22 MB for `small`)
    net = build_network(small_architecture(), 8, 2).to(memory_format=torch.channels_last_3d)
    copies = {k: v.detach().clone() for k, v in net.state_dict().items()}
    write_model_folder(tmp_path / "m", plans=small_plans(), configuration=CFG, network_weights=copies)
    n_bytes = sum(p.numel() * 4 for p in net.parameters())
    assert (tmp_path / "m" / "fold_0" / "checkpoint_final.pth").stat().st_size < 1.2 * n_bytes
    loaded = load_model_folder(tmp_path / "m").build_network("cpu")
    x = torch.randn(1, 8, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x), net.eval()(x))


def test_build_network_dtype(written):
    net = load_model_folder(written).build_network("cpu", torch.float64)
    assert next(net.parameters()).dtype == torch.float64


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device_raises_device_error(written):
    _error(load_model_folder(written).build_network, "cuda", cls=DeviceError)


def test_pickled_checkpoint_needs_allow_pickle(tmp_path):
    folder = write_model_folder(
        tmp_path / "m",
        plans=small_plans(),
        configuration=CFG,
        network_weights=_weights(),
        extra_checkpoint={"logging": {"lr": [fractions.Fraction(1, 3)]}},
    )
    assert load_model_folder(folder).trainer_name == "nnInteractiveTrainer_stub"  # weights_only=False fallback
    e = _error(load_model_folder, folder, allow_pickle=False)
    assert e.file.endswith("checkpoint_final.pth")


# --- metadata files ---------------------------------------------------------------------------


def test_legacy_string_metadata_uses_decay_0_9(tmp_path):
    f = write_model_folder(
        tmp_path / "m",
        plans=small_plans(),
        configuration=CFG,
        network_weights=_weights(),
        legacy_metadata="nnInteractiveInferenceSession",
    )
    m = load_model_folder(f)
    assert m.metadata_file == "inference_session_class.json"
    assert m.interaction_decay == 0.9 and m.num_interaction_channels == 7 and m.license == "!!MISSING!!"


def test_legacy_object_metadata_like_official_v1(tmp_path):
    meta = {"inference_class": "nnInteractiveInferenceSession", "point_radius": 4, "preferred_scribble_thickness": 2}
    f = write_model_folder(
        tmp_path / "m", plans=small_plans(), configuration=CFG, network_weights=_weights(), legacy_metadata=meta
    )
    m = load_model_folder(f)
    assert m.interaction_decay == 0.98 and m.preferred_scribble_thickness == (2.0, 2.0, 2.0)
    assert m.supported_interactions["bbox3d"] is False


def test_inference_info_wins_over_legacy(folder):
    (folder / "inference_session_class.json").write_text('"nnInteractiveInferenceSession"')
    _edit_json(folder / "inference_info.json", {"interaction_decay": 0.5})
    assert load_model_folder(folder).interaction_decay == 0.5


def test_custom_capability_negative_indices_and_channel_count(tmp_path):
    info = default_inference_info(
        interaction_channels=4,
        preferred_scribble_thickness=[1, 2, 3],
        supported_interactions={"lasso": False},
        channel_mapping={
            "prev_seg": -1,
            "points": [0, 1],
            "scribble": [-3, -2],
            "bbox2d": [0, 1],
            "bbox3d": [0, 1],
            "lasso": [0, 1],
        },
    )
    f = write_model_folder(
        tmp_path / "m", plans=small_plans(), configuration=CFG, network_weights=_weights(6), inference_info=info
    )
    m = load_model_folder(f)
    assert m.num_interaction_channels == 5 and m.num_input_channels == 6
    assert m.channel_mapping["prev_seg"] == 4 and m.channel_mapping["scribble"] == (2, 3)
    assert m.supported_interactions == {
        "scribble": True,
        "lasso": False,
        "points": True,
        "bbox2d": True,
        "bbox3d": False,
    }
    assert m.preferred_scribble_thickness == (1.0, 2.0, 3.0)
    m.build_network()


def test_partial_channel_mapping_is_merged_and_count_inferred(folder):
    _edit_json(
        folder / "inference_info.json", {"channel_mapping": {"points": [3, 4]}}, remove=("interaction_channels",)
    )
    m = load_model_folder(folder)
    assert m.channel_mapping["scribble"] == (5, 6) and m.num_interaction_channels == 7


def test_license_rules(tmp_path):
    plans = make_plans(
        small_architecture(),
        configuration="3d_fullres_ps192_bs24",
        patch_size=(64,) * 3,
        batch_size=24,
        dataset_name="Dataset225_nnInteractiveV2",
    )
    assert "architecture" not in plans["configurations"]["3d_fullres_ps192_bs24"]  # only via inherits_from
    f = write_model_folder(
        tmp_path / "official_like", plans=plans, configuration="3d_fullres_ps192_bs24", network_weights=_weights()
    )
    m = load_model_folder(f)
    assert m.license == "CC BY-NC-SA 4.0"
    assert m.patch_size == (64, 64, 64) and m.configuration["batch_size"] == 24  # inherits_from resolved
    (f / "LICENSE").write_text("\n\nMIT\n")
    assert load_model_folder(f).license == "MIT"


def test_modality_key_counts_image_channels(tmp_path):
    ds = {"modality": {"0": "CT", "1": "MR"}, "labels": {"background": 0, "foreground": 1}}
    f = write_model_folder(
        tmp_path / "m", plans=small_plans(), configuration=CFG, network_weights=_weights(9), dataset_json=ds
    )
    assert load_model_folder(f).num_input_channels == 9


# --- error paths ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["plans.json", "dataset.json"])
def test_missing_json_file(folder, name):
    (folder / name).unlink()
    e = _error(load_model_folder, folder)
    assert e.file == str(folder / name) and name in str(e)


def test_missing_both_metadata_files(folder):
    (folder / "inference_info.json").unlink()
    e = _error(load_model_folder, folder)
    assert e.file.endswith("inference_info.json") and "inference_session_class.json" in str(e)


def test_invalid_json(folder):
    (folder / "plans.json").write_text("{not json")
    assert _error(load_model_folder, folder).file.endswith("plans.json")


def test_not_a_folder(tmp_path):
    assert _error(load_model_folder, tmp_path / "nope").file == str(tmp_path / "nope")


def test_two_fold_folders_need_use_fold(folder):
    shutil.copytree(folder / "fold_0", folder / "fold_1")
    e = _error(load_model_folder, folder)
    assert e.key == "use_fold" and "fold_0" in str(e) and "fold_1" in str(e)
    assert load_model_folder(folder, use_fold=1).fold == "fold_1"
    assert load_model_folder(folder, use_fold="0").fold == "fold_0"


def test_missing_fold_and_checkpoint_name(folder):
    assert _error(load_model_folder, folder, use_fold=3).file.endswith("fold_3/checkpoint_final.pth")
    assert _error(load_model_folder, folder, checkpoint_name="checkpoint_best.pth").file.endswith("checkpoint_best.pth")
    assert _error(load_model_folder, folder, use_fold="x").key == "use_fold"
    shutil.rmtree(folder / "fold_0")
    assert _error(load_model_folder, folder).key == "use_fold"


@pytest.mark.parametrize(
    ("update", "key"),
    [
        ({"channel_mapping": {"box": [1, 2]}}, "channel_mapping.box"),
        ({"channel_mapping": {"points": [3]}}, "channel_mapping.points"),
        ({"channel_mapping": {"points": [3, 9]}}, "channel_mapping.points"),
        ({"channel_mapping": {"prev_seg": "zero"}}, "channel_mapping.prev_seg"),
        ({"channel_mapping": [1, 2]}, "channel_mapping"),
        ({"supported_interactions": {"clicks": True}}, "supported_interactions.clicks"),
        ({"interaction_decay": 0}, "interaction_decay"),
        ({"interaction_decay": 1.5}, "interaction_decay"),
        ({"interaction_decay": "0.9"}, "interaction_decay"),
        ({"point_radius": -1}, "point_radius"),
        ({"preferred_scribble_thickness": [1, 2]}, "preferred_scribble_thickness"),
        ({"supports_initial_label": "yes"}, "supports_initial_label"),
        ({"interaction_channels": "six"}, "interaction_channels"),
    ],
)
def test_bad_capability(folder, update, key):
    _edit_json(folder / "inference_info.json", update)
    e = _error(load_model_folder, folder)
    assert e.file == str(folder / "inference_info.json") and e.key == key


@pytest.mark.parametrize(
    ("update", "key"),
    [
        ({"inference_class_min_version": "99.0.0"}, "inference_class_min_version"),
        ({"inference_class": "nnInteractiveInferenceSessionV3"}, "inference_class"),
        ({"pad_mode_image": "reflect"}, "pad_mode_image"),
    ],
)
def test_incompatible_model(folder, update, key):
    _edit_json(folder / "inference_info.json", update)
    e = _error(load_model_folder, folder, cls=IncompatibleModelError)
    assert e.file.endswith("inference_info.json") and e.key == key


def test_older_min_version_is_fine(folder):
    _edit_json(folder / "inference_info.json", {"inference_class_min_version": "v2.0.1"})
    load_model_folder(folder)


def test_legacy_metadata_of_wrong_type(folder):
    (folder / "inference_info.json").unlink()
    (folder / "inference_session_class.json").write_text("[1, 2]")
    assert _error(load_model_folder, folder).file.endswith("inference_session_class.json")


def _rewrite_checkpoint(folder: Path, fn) -> None:
    path = folder / "fold_0" / "checkpoint_final.pth"
    ckpt = torch.load(path, weights_only=True)
    fn(ckpt)
    torch.save(ckpt, path)


@pytest.mark.parametrize("change", ["drop", "extra", "shape"])
def test_wrong_state_dict(folder, change):
    def edit(ckpt):
        w = ckpt["network_weights"]
        if change == "drop":
            del w["decoder.seg_layers.0.weight"]
        elif change == "extra":
            w["decoder.seg_layers.9.weight"] = torch.zeros(1)
        else:
            w["encoder.stem.convs.0.conv.weight"] = torch.zeros(8, 9, 3, 3, 3)

    _rewrite_checkpoint(folder, edit)
    m = load_model_folder(folder)
    e = _error(m.build_network)
    assert e.file.endswith("checkpoint_final.pth") and e.key == "network_weights"
    assert {
        "drop": "decoder.seg_layers.0.weight",
        "extra": "decoder.seg_layers.9.weight",
        "shape": "encoder.stem.convs.0.conv.weight",
    }[change] in str(e)


def test_more_interaction_channels_than_weights(folder):
    _edit_json(folder / "inference_info.json", {"interaction_channels": 7})  # 9 inputs vs 8-input weights
    e = _error(load_model_folder(folder).build_network)
    assert e.key == "network_weights" and "wrong shape" in str(e)


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda c: c.pop("trainer_name"), "trainer_name"),
        (lambda c: c.pop("init_args"), "init_args"),
        (lambda c: c["init_args"].pop("configuration"), "init_args.configuration"),
        (lambda c: c.update(network_weights=[1, 2]), "network_weights"),
    ],
)
def test_checkpoint_missing_keys(folder, edit, key):
    _rewrite_checkpoint(folder, edit)
    e = _error(load_model_folder, folder)
    assert e.file.endswith("checkpoint_final.pth") and e.key == key


def test_corrupt_checkpoint(folder):
    (folder / "fold_0" / "checkpoint_final.pth").write_bytes(b"\x00garbage" * 10)
    assert _error(load_model_folder, folder).file.endswith("checkpoint_final.pth")


def test_configuration_missing_from_plans(folder):
    _rewrite_checkpoint(folder, lambda c: c["init_args"].update(configuration="2d"))
    e = _error(load_model_folder, folder)
    assert e.file.endswith("plans.json") and e.key == "configurations.2d"


def test_inherits_from_cycle_and_missing_parent(folder):
    plans = json.loads((folder / "plans.json").read_text())
    plans["configurations"]["a"] = {"inherits_from": "b"}
    plans["configurations"]["b"] = {"inherits_from": "a"}
    plans["configurations"]["c"] = {"inherits_from": "nope"}
    (folder / "plans.json").write_text(json.dumps(plans))
    _rewrite_checkpoint(folder, lambda c: c["init_args"].update(configuration="a"))
    assert _error(load_model_folder, folder).key.endswith("inherits_from")
    _rewrite_checkpoint(folder, lambda c: c["init_args"].update(configuration="c"))
    assert _error(load_model_folder, folder).key == "configurations.nope"


def test_bad_architecture_in_plans(folder):
    plans = json.loads((folder / "plans.json").read_text())
    plans["configurations"][CFG]["architecture"]["arch_kwargs"]["conv_op"] = "torch.nn.Conv1d"
    (folder / "plans.json").write_text(json.dumps(plans))
    e = _error(load_model_folder(folder).build_network)
    assert e.file.endswith("plans.json") and e.key == f"configurations.{CFG}.architecture.arch_kwargs.conv_op"


def test_missing_patch_size_and_channels(folder):
    _edit_json(folder / "dataset.json", remove=("channel_names",))
    assert _error(load_model_folder, folder).key == "channel_names"


# --- writer -----------------------------------------------------------------------------------


def test_writer_refuses_bad_input_and_leaves_nothing(tmp_path):
    bad = _weights()
    del bad["decoder.seg_layers.2.bias"]
    e = _error(write_model_folder, tmp_path / "m", plans=small_plans(), configuration=CFG, network_weights=bad)
    assert e.key == "network_weights"
    e = _error(
        write_model_folder,
        tmp_path / "m",
        plans=small_plans(),
        configuration=CFG,
        network_weights=_weights(),
        inference_info=default_inference_info(interaction_decay=2),
    )
    assert e.key == "interaction_decay"
    e = _error(write_model_folder, tmp_path / "m", plans=small_plans(), configuration="2d", network_weights=_weights())
    assert e.key == "configurations.2d"
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_non_empty_target(written):
    with pytest.raises(FileExistsError):
        write_model_folder(written, plans=small_plans(), configuration=CFG, network_weights=_weights())
