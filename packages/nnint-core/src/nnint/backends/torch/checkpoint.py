"""Read and write nnInteractive model folders (the official checkpoint format).

Layout (docs/reference-behaviour.md §2)::

    <folder>/
      plans.json                      nnU-Net v2 plans (architecture, patch size)
      dataset.json                    nnU-Net v2 dataset.json (number of image channels)
      inference_info.json             capability metadata (preferred)      } at least one
      inference_session_class.json    legacy metadata (string or object)   }
      LICENSE                         optional; first non-empty line = licence id
      fold_<k>/checkpoint_final.pth   torch pickle: network_weights, trainer_name, init_args

:func:`load_model_folder` reads and validates everything except the network itself and returns a
:class:`ModelFolder`; :meth:`ModelFolder.build_network` then builds the U-Net
(:mod:`.network`) and loads the weights strictly. :func:`write_model_folder` writes a folder the
official ``nnInteractiveInferenceSession`` loads unchanged.

Every problem raises :class:`~nnint.errors.CheckpointError` (or its subclass
:class:`~nnint.errors.IncompatibleModelError`) whose ``file`` is the offending file's path and
whose ``key`` is the offending JSON / checkpoint key.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import torch

from nnint.backends.torch.network import build_network as _build_network
from nnint.errors import CheckpointError, DeviceError, IncompatibleModelError

__all__ = [
    "ModelFolder",
    "load_model_folder",
    "write_model_folder",
    "default_inference_info",
    "COMPATIBLE_INFERENCE_VERSION",
    "INTERACTION_KEYS",
    "LEGACY_CHANNEL_MAPPING",
]

#: The nnInteractive ``nnInteractiveInferenceSession`` version whose behaviour nnint reproduces;
#: folders whose ``inference_class_min_version`` is newer are refused.
COMPATIBLE_INFERENCE_VERSION = "2.6.0"
INFERENCE_CLASS = "nnInteractiveInferenceSession"
#: the five interaction kinds of the capability format
INTERACTION_KEYS = ("scribble", "lasso", "points", "bbox2d", "bbox3d")
DEFAULT_SUPPORTED = {"scribble": True, "lasso": True, "points": True, "bbox2d": True, "bbox3d": False}
#: channel layout of every model before capability metadata existed (prev_seg + 3 pos/neg pairs)
LEGACY_CHANNEL_MAPPING: dict[str, Any] = {
    "prev_seg": 0,
    "bbox2d": (1, 2),
    "bbox3d": (1, 2),
    "lasso": (1, 2),
    "points": (3, 4),
    "scribble": (5, 6),
}
OFFICIAL_V1 = ("Dataset225_nnInteractiveV2", "3d_fullres_ps192_bs24")  # (dataset_name, configuration)
OFFICIAL_V1_LICENSE = "CC BY-NC-SA 4.0"
MISSING_LICENSE = "!!MISSING!!"
NUM_CLASSES = 2  # hard-wired like the official loader: background / foreground logits

INFO_FILE, LEGACY_FILE = "inference_info.json", "inference_session_class.json"


@attrs.frozen(eq=False)
class ModelFolder:
    """A validated nnInteractive model folder, weights loaded (CPU, possibly memory-mapped).

    Channel indices in ``channel_mapping`` are non-negative indices into the interaction channels
    (the network input is ``[image channels..., interaction channels...]``): ``prev_seg`` -> int,
    each key of :data:`INTERACTION_KEYS` -> ``(positive, negative)``.
    """

    path: Path
    plans: dict = attrs.field(repr=False)
    dataset_json: dict = attrs.field(repr=False)
    configuration_name: str
    #: the configuration after resolving ``inherits_from``
    configuration: dict = attrs.field(repr=False)
    patch_size: tuple[int, ...]
    num_image_channels: int
    num_interaction_channels: int
    channel_mapping: dict
    supported_interactions: dict
    supports_initial_label: bool
    supports_zero_shot_label_refinement: bool
    interaction_decay: float
    point_radius: float
    preferred_scribble_thickness: tuple[float, float, float]
    pad_mode_image: str
    license: str
    trainer_name: str
    #: ``"fold_0"``, ``"fold_all"``, ...
    fold: str
    checkpoint_file: Path
    #: which metadata file was used (``inference_info.json`` or ``inference_session_class.json``)
    metadata_file: str
    #: the raw JSON content of that file
    metadata: Any = attrs.field(repr=False)
    network_weights: Mapping[str, torch.Tensor] = attrs.field(repr=False)
    num_classes: int = NUM_CLASSES

    @property
    def num_input_channels(self) -> int:
        """Network input channels: image channels + interaction channels (8 for the official model)."""
        return self.num_image_channels + self.num_interaction_channels

    @property
    def architecture(self) -> dict:
        """The plans ``architecture`` entry of the configuration."""
        return self.configuration["architecture"]

    def build_network(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.nn.Module:
        """Build the U-Net, load ``network_weights`` strictly, move it to ``device``/``dtype``.

        Returns the module in eval mode. Its forward maps ``[B, num_input_channels, *patch]`` to
        ``[B, 2, *patch]`` logits. Raises :class:`CheckpointError` when the weights do not fit the
        architecture, :class:`DeviceError` when ``device`` is unavailable.
        """
        device = _check_device(device)
        try:
            net = _build_network(self.architecture, self.num_input_channels, self.num_classes)
        except CheckpointError as e:
            raise CheckpointError(
                str(e), file=str(self.path / "plans.json"), key=f"configurations.{self.configuration_name}.{e.key}"
            ) from None
        _check_state_dict(net.state_dict(), self.network_weights, str(self.checkpoint_file))
        net.load_state_dict(self.network_weights, strict=True)
        return net.to(device=device, dtype=dtype).eval()


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------


def load_model_folder(
    path: str | os.PathLike,
    use_fold: int | str | None = None,
    checkpoint_name: str = "checkpoint_final.pth",
    *,
    allow_pickle: bool = True,
) -> ModelFolder:
    """Read an nnInteractive model folder.

    ``use_fold``: an int or ``"all"`` selects ``fold_<use_fold>``; ``None`` requires exactly one
    ``fold_*`` sub-folder. ``allow_pickle``: the checkpoint is first read with
    ``torch.load(weights_only=True)``; official checkpoints contain other pickled objects and need
    ``weights_only=False``, which can run arbitrary code from the file: only load folders you trust,
    or pass ``allow_pickle=False`` to refuse such files.
    """
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(f"Model folder {root} does not exist or is not a folder.", file=str(root))
    plans = _read_json(root / "plans.json", expect_object=True)
    dataset_json = _read_json(root / "dataset.json", expect_object=True)
    meta_file, meta, capability = _read_metadata(root)
    runtime = _runtime(meta, str(root / meta_file))
    caps = _parse_capability(capability, str(root / meta_file))

    ckpt_file = _checkpoint_path(root, use_fold, checkpoint_name)
    ckpt = _torch_load(ckpt_file, allow_pickle)
    for key in ("network_weights", "trainer_name", "init_args"):
        if key not in ckpt:
            raise CheckpointError(
                f"{ckpt_file} has no {key!r}; it is not an nnU-Net/nnInteractive checkpoint.",
                file=str(ckpt_file),
                key=key,
            )
    init_args = ckpt["init_args"]
    if not isinstance(init_args, Mapping) or not isinstance(init_args.get("configuration"), str):
        raise CheckpointError(
            f"{ckpt_file}: init_args['configuration'] (the plans configuration name) is missing.",
            file=str(ckpt_file),
            key="init_args.configuration",
        )
    weights = ckpt["network_weights"]
    if not isinstance(weights, Mapping) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(
            f"{ckpt_file}: network_weights is not a state dict of tensors.", file=str(ckpt_file), key="network_weights"
        )
    cfg_name = init_args["configuration"]
    config = _resolve_configuration(plans, cfg_name, str(root / "plans.json"))

    return ModelFolder(
        path=root,
        plans=plans,
        dataset_json=dataset_json,
        configuration_name=cfg_name,
        configuration=config,
        patch_size=_patch_size(config, str(root / "plans.json"), cfg_name),
        num_image_channels=_num_image_channels(dataset_json, str(root / "dataset.json")),
        trainer_name=str(ckpt["trainer_name"]),
        fold=ckpt_file.parent.name,
        checkpoint_file=ckpt_file,
        license=_license(root, plans, cfg_name),
        metadata_file=meta_file,
        metadata=meta,
        network_weights=weights,
        **runtime,
        **caps,
    )


def _read_json(file: Path, expect_object: bool) -> Any:
    if not file.is_file():
        raise CheckpointError(
            f"{file} is missing; a model folder needs plans.json, dataset.json, inference_info.json "
            f"(or inference_session_class.json) and fold_<k>/checkpoint_final.pth.",
            file=str(file),
        )
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(
            f"{file} is not readable JSON ({e}); re-download or re-export the model.", file=str(file)
        ) from None
    if expect_object and not isinstance(data, dict):
        raise CheckpointError(f"{file} must contain a JSON object, found {type(data).__name__}.", file=str(file))
    return data


def _read_metadata(root: Path) -> tuple[str, Any, dict]:
    """Returns (file name, raw content, capability dict); ``inference_info.json`` wins (§2.3/§2.4)."""
    if (root / INFO_FILE).is_file():
        capability = _read_json(root / INFO_FILE, expect_object=True)
        _check_inference_class(capability, str(root / INFO_FILE))
        return INFO_FILE, capability, capability
    if (root / LEGACY_FILE).is_file():
        meta = _read_json(root / LEGACY_FILE, expect_object=False)
        if not isinstance(meta, (str, dict)):
            raise CheckpointError(
                f"{root / LEGACY_FILE} must hold a string or an object.", file=str(root / LEGACY_FILE)
            )
        return LEGACY_FILE, meta, {}  # legacy models have the legacy capabilities
    raise CheckpointError(
        f"{root} has neither {INFO_FILE} nor {LEGACY_FILE}; one of them is required (write an {INFO_FILE}, "
        f"see default_inference_info()).",
        file=str(root / INFO_FILE),
    )


def _runtime(meta: Any, file: str) -> dict:
    """Decay, point radius, scribble thickness and pad mode from either metadata file."""
    rt: dict[str, Any] = {
        "point_radius": 4,
        "preferred_scribble_thickness": [2, 2, 2],
        "interaction_decay": 0.98,
        "pad_mode_image": "constant",
    }
    if isinstance(meta, str):  # the very first releases stored only the class name, and used 0.9
        rt["interaction_decay"] = 0.9
    else:
        rt.update({k: meta[k] for k in rt if k in meta})
    return _validate_runtime(rt, file)


def _validate_runtime(rt: dict, file: str) -> dict:
    decay = rt["interaction_decay"]
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay <= 1:
        raise CheckpointError(
            f"interaction_decay must be a number in (0, 1], got {decay!r}.", file=file, key="interaction_decay"
        )
    radius = rt["point_radius"]
    if isinstance(radius, bool) or not isinstance(radius, (int, float)) or radius <= 0:
        raise CheckpointError(f"point_radius must be a positive number, got {radius!r}.", file=file, key="point_radius")
    th = rt["preferred_scribble_thickness"]
    th = list(th) if isinstance(th, (list, tuple)) else [th] * 3  # scalar -> all three axes
    if len(th) != 3 or not all(isinstance(t, (int, float)) and not isinstance(t, bool) and t > 0 for t in th):
        raise CheckpointError(
            f"preferred_scribble_thickness must be a positive number or 3 of them, got {th!r}.",
            file=file,
            key="preferred_scribble_thickness",
        )
    if rt["pad_mode_image"] != "constant":  # the reference asserts on anything else at predict time
        raise IncompatibleModelError(
            f"pad_mode_image {rt['pad_mode_image']!r} is not supported; only 'constant' is.",
            file=file,
            key="pad_mode_image",
        )
    return {
        "interaction_decay": float(decay),
        "point_radius": radius,
        "preferred_scribble_thickness": tuple(float(t) for t in th),
        "pad_mode_image": "constant",
    }


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(i) for i in re.findall(r"\d+", version))


def _check_inference_class(cap: dict, file: str) -> None:
    cls = cap.get("inference_class", INFERENCE_CLASS)
    if cls != INFERENCE_CLASS:
        raise IncompatibleModelError(
            f"The model needs inference class {cls!r}; nnint implements {INFERENCE_CLASS!r}.",
            file=file,
            key="inference_class",
        )
    min_version = cap.get("inference_class_min_version")
    if min_version is None:
        return
    if not isinstance(min_version, str):
        raise CheckpointError(
            f"inference_class_min_version must be a string, got {min_version!r}.",
            file=file,
            key="inference_class_min_version",
        )
    if _version_tuple(min_version) > _version_tuple(COMPATIBLE_INFERENCE_VERSION):
        raise IncompatibleModelError(
            f"The model needs {INFERENCE_CLASS} >= {min_version}; nnint reproduces {COMPATIBLE_INFERENCE_VERSION}. "
            f"Update nnint.",
            file=file,
            key="inference_class_min_version",
        )


def _int(v: Any, file: str, key: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) and not (isinstance(v, float) and v.is_integer()):
        raise CheckpointError(f"{key} must be an integer, got {v!r}.", file=file, key=key)
    return int(v)


def _parse_capability(cap: dict, file: str) -> dict:
    """Capability dict -> supported interactions, channel mapping (non-negative), channel count."""
    sup = cap.get("supported_interactions", {})
    if not isinstance(sup, dict):
        raise CheckpointError("supported_interactions must be an object.", file=file, key="supported_interactions")
    for k in sup:
        if k not in INTERACTION_KEYS:
            raise CheckpointError(
                f"supported_interactions has unknown key {k!r}; known: {', '.join(INTERACTION_KEYS)}.",
                file=file,
                key=f"supported_interactions.{k}",
            )
    supported = {**DEFAULT_SUPPORTED, **{k: bool(v) for k, v in sup.items()}}

    raw = cap.get("channel_mapping", {})
    if not isinstance(raw, dict):
        raise CheckpointError("channel_mapping must be an object.", file=file, key="channel_mapping")
    mapping = dict(LEGACY_CHANNEL_MAPPING)  # a partial mapping overrides the legacy default
    for k, v in raw.items():
        key = f"channel_mapping.{k}"
        if k == "prev_seg":
            mapping[k] = _int(v, file, key)
        elif k in INTERACTION_KEYS:
            if not isinstance(v, (list, tuple)) or len(v) != 2:
                raise CheckpointError(f"{key} must be a pair [positive, negative], got {v!r}.", file=file, key=key)
            mapping[k] = (_int(v[0], file, key), _int(v[1], file, key))
        else:
            raise CheckpointError(
                f"channel_mapping has unknown key {k!r}; known: prev_seg, {', '.join(INTERACTION_KEYS)}.",
                file=file,
                key=key,
            )

    indices = [mapping["prev_seg"]] + [i for k, p in mapping.items() if k != "prev_seg" for i in p]
    if "interaction_channels" in cap:  # counts the channels *without* prev_seg
        n = _int(cap["interaction_channels"], file, "interaction_channels") + 1
        if n < 1:
            raise CheckpointError("interaction_channels must be >= 0.", file=file, key="interaction_channels")
    else:  # largest non-negative index + 1, or the largest |negative index|
        n = max(max((i + 1 for i in indices if i >= 0), default=0), max((-i for i in indices if i < 0), default=0), 1)

    def positive(i: int, key: str) -> int:
        j = i + n if i < 0 else i
        if not 0 <= j < n:
            raise CheckpointError(f"{key} index {i} is outside the {n} interaction channels.", file=file, key=key)
        return j

    mapping = {
        k: positive(v, f"channel_mapping.{k}")
        if k == "prev_seg"
        else tuple(positive(i, f"channel_mapping.{k}") for i in v)
        for k, v in mapping.items()
    }
    for k in ("supports_initial_label", "supports_zero_shot_label_refinement"):
        if not isinstance(cap.get(k, True), bool):
            raise CheckpointError(f"{k} must be true or false.", file=file, key=k)
    return {
        "supported_interactions": supported,
        "channel_mapping": mapping,
        "num_interaction_channels": n,
        "supports_initial_label": cap.get("supports_initial_label", True),
        "supports_zero_shot_label_refinement": cap.get("supports_zero_shot_label_refinement", True),
    }


def _checkpoint_path(root: Path, use_fold: int | str | None, name: str) -> Path:
    if use_fold is None:
        folds = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("fold_"))
        if len(folds) != 1:
            raise CheckpointError(
                f"{root} has {len(folds)} fold_* folders ({', '.join(folds) or 'none'}); pass use_fold to pick one.",
                file=str(root),
                key="use_fold",
            )
        fold = folds[0]
    else:
        if use_fold != "all":
            try:
                use_fold = int(use_fold)
            except (TypeError, ValueError):
                raise CheckpointError(
                    f"use_fold must be an int, 'all' or None, got {use_fold!r}.", file=str(root), key="use_fold"
                ) from None
        fold = f"fold_{use_fold}"
    file = root / fold / name
    if not file.is_file():
        raise CheckpointError(
            f"{file} is missing; check use_fold / checkpoint_name or re-download the model.", file=str(file)
        )
    return file


def _torch_load(file: Path, allow_pickle: bool) -> dict:
    """Memory-mapped when possible (the weights are paged in on use, not copied)."""

    def load(weights_only: bool) -> Any:
        try:
            return torch.load(file, map_location="cpu", weights_only=weights_only, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):  # legacy (non-zip) files cannot be memory-mapped
                raise
            return torch.load(file, map_location="cpu", weights_only=weights_only)

    try:
        try:
            ckpt = load(weights_only=True)
        except pickle.UnpicklingError:
            if not allow_pickle:
                raise CheckpointError(
                    f"{file} contains pickled objects besides tensors and allow_pickle is False.", file=str(file)
                ) from None
            ckpt = load(weights_only=False)
    except CheckpointError:
        raise
    except Exception as e:  # truncated / corrupt / not a torch file
        raise CheckpointError(
            f"{file} could not be read by torch.load ({type(e).__name__}: {e}); re-download the checkpoint.",
            file=str(file),
        ) from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{file} holds a {type(ckpt).__name__}, not a checkpoint dict.", file=str(file))
    return ckpt


def _resolve_configuration(plans: dict, name: str, file: str) -> dict:
    """nnU-Net semantics: a child configuration's keys override its ``inherits_from`` parent's (shallow)."""
    configs = plans.get("configurations")
    if not isinstance(configs, dict):
        raise CheckpointError("plans.json has no 'configurations' object.", file=file, key="configurations")
    chain: list[str] = []
    while True:
        if name not in configs or not isinstance(configs[name], dict):
            raise CheckpointError(
                f"Configuration {name!r} (named by the checkpoint or an inherits_from) is not in "
                f"plans.json; available: {', '.join(configs)}.",
                file=file,
                key=f"configurations.{name}",
            )
        if name in chain:
            raise CheckpointError(
                f"Circular inherits_from: {' -> '.join(chain + [name])}.",
                file=file,
                key=f"configurations.{name}.inherits_from",
            )
        chain.append(name)
        parent = configs[name].get("inherits_from")
        if parent is None:
            break
        name = parent
    config: dict = {}
    for n in reversed(chain):
        config.update(configs[n])
    if "architecture" not in config:
        raise CheckpointError(
            f"Configuration {chain[0]!r} has no 'architecture' (pre-2.4 nnU-Net plans); re-plan with nnU-Net >= 2.4.",
            file=file,
            key=f"configurations.{chain[0]}.architecture",
        )
    if config.get("previous_stage"):
        raise IncompatibleModelError(
            "Cascade configurations (previous_stage) are not supported.",
            file=file,
            key=f"configurations.{chain[0]}.previous_stage",
        )
    return config


def _patch_size(config: dict, file: str, name: str) -> tuple[int, ...]:
    ps = config.get("patch_size")
    if not isinstance(ps, (list, tuple)) or not ps or not all(isinstance(p, int) and p > 0 for p in ps):
        raise CheckpointError(
            f"patch_size must be a list of positive ints, got {ps!r}.",
            file=file,
            key=f"configurations.{name}.patch_size",
        )
    return tuple(ps)


def _num_image_channels(dataset_json: dict, file: str) -> int:
    key = "modality" if "modality" in dataset_json else "channel_names"  # nnU-Net v1 spelling first, like nnU-Net
    channels = dataset_json.get(key)
    if not isinstance(channels, dict) or not channels:
        raise CheckpointError(
            "dataset.json needs a non-empty 'channel_names' object (one entry per image channel).", file=file, key=key
        )
    return len(channels)


def _license(root: Path, plans: dict, configuration: str) -> str:
    file = root / "LICENSE"
    if file.is_file():
        for line in file.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.strip():
                return line.strip()
    if (plans.get("dataset_name"), configuration) == OFFICIAL_V1:
        return OFFICIAL_V1_LICENSE
    return MISSING_LICENSE


def _check_state_dict(expected: Mapping[str, torch.Tensor], got: Mapping[str, torch.Tensor], file: str) -> None:
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [
        f"{k} {tuple(got[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in got and got[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        parts = [
            f"{label} ({len(items)}): {', '.join(items[:4])}{', ...' if len(items) > 4 else ''}"
            for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes))
            if items
        ]
        raise CheckpointError(
            f"network_weights do not fit the architecture in plans.json: {'; '.join(parts)}. "
            f"The checkpoint and plans.json belong to different models.",
            file=file,
            key="network_weights",
        )


def _check_device(device: torch.device | str) -> torch.device:
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise DeviceError(f"Unknown device {device!r}: {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError("CUDA was requested but is not available; use device='cpu'.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("MPS was requested but is not available; use device='cpu'.")
    return device


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------


def default_inference_info(**overrides: Any) -> dict:
    """The capability metadata of a 7-channel model like the official one (``inference_info.json``)."""
    info = {
        "inference_class": INFERENCE_CLASS,
        "point_radius": 4,
        "preferred_scribble_thickness": [2, 2, 2],
        "interaction_decay": 0.98,
        "pad_mode_image": "constant",
        "supported_interactions": dict(DEFAULT_SUPPORTED),
        "supports_initial_label": True,
        "supports_zero_shot_label_refinement": True,
        "interaction_channels": 6,
        "channel_mapping": {k: list(v) if isinstance(v, tuple) else v for k, v in LEGACY_CHANNEL_MAPPING.items()},
    }
    info.update(overrides)
    return info


def _share_aliases(net: torch.nn.Module, weights: dict) -> dict:
    """``weights`` with every key that names the same parameter of ``net`` pointing at one tensor.

    nnU-Net networks reach each parameter under several keys (``conv.weight`` and
    ``all_modules.0.weight``; the encoder again as ``decoder.encoder.*``); torch.save stores a
    shared tensor once. Weights that arrive as separate copies (an exponential moving average,
    channels-last tensors made contiguous) would otherwise take ~3.7x the space (80 instead of
    22 MB for the ``small`` network). Copies that differ are kept as they are."""
    first: dict[int, str] = {}
    out = dict(weights)
    for key, tensor in net.state_dict(keep_vars=True).items():
        owner = first.setdefault(id(tensor), key)
        if owner != key and key in out and owner in out and torch.equal(out[key], out[owner]):
            out[key] = out[owner]
    return out


def write_model_folder(
    path: str | os.PathLike,
    *,
    plans: dict,
    configuration: str,
    network_weights: Mapping[str, torch.Tensor],
    dataset_json: dict | None = None,
    inference_info: dict | None = None,
    legacy_metadata: dict | str | None = None,
    license_text: str | None = None,
    fold: int | str = 0,
    checkpoint_name: str = "checkpoint_final.pth",
    trainer_name: str = "nnInteractiveTrainer_stub",
    extra_checkpoint: dict | None = None,
) -> Path:
    """Write a model folder in the official format; returns its path.

    ``plans``/``configuration``: nnU-Net v2 plans and the configuration the weights belong to
    (see :mod:`.architectures`). ``network_weights``: the network's ``state_dict()`` (tensors are
    saved on the CPU; aliased keys sharing storage are stored once). Metadata: ``inference_info``
    (default :func:`default_inference_info`) is written as ``inference_info.json``; with
    ``legacy_metadata`` instead, only ``inference_session_class.json`` is written (like the
    official v1.0 folder). ``license_text``: written to ``LICENSE`` (first line = licence id).

    Everything is validated first by parsing it exactly as :func:`load_model_folder` does and
    checking the state dict against the architecture (built on the ``meta`` device, so no memory is
    used); the folder is assembled in a temporary sibling and renamed, so a failure leaves nothing.
    ``path`` must not exist or be an empty folder.
    """
    root = Path(path)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root} exists and is not an empty folder.")
    if inference_info is not None and legacy_metadata is not None:
        raise ValueError("pass inference_info or legacy_metadata, not both")
    dataset_json = (
        dataset_json
        if dataset_json is not None
        else {
            "channel_names": {"0": "image"},
            "labels": {"background": 0, "foreground": 1},
            "numTraining": 0,
            "file_ending": ".nii.gz",
        }
    )
    files: dict[str, Any] = {"plans.json": plans, "dataset.json": dataset_json}
    if legacy_metadata is not None:
        files[LEGACY_FILE] = legacy_metadata
    else:
        files[INFO_FILE] = default_inference_info() if inference_info is None else inference_info

    # validate with the reader's own rules (file names in errors refer to the destination)
    meta_name = LEGACY_FILE if legacy_metadata is not None else INFO_FILE
    meta, meta_path = files[meta_name], str(root / meta_name)
    if meta_name == INFO_FILE:
        if not isinstance(meta, dict):
            raise CheckpointError(f"{INFO_FILE} content must be an object.", file=meta_path)
        _check_inference_class(meta, meta_path)
    elif not isinstance(meta, (str, dict)):
        raise CheckpointError(f"{LEGACY_FILE} content must be a string or an object.", file=meta_path)
    _runtime(meta, meta_path)
    caps = _parse_capability(meta if meta_name == INFO_FILE else {}, meta_path)
    config = _resolve_configuration(plans, configuration, str(root / "plans.json"))
    _patch_size(config, str(root / "plans.json"), configuration)
    n_in = _num_image_channels(dataset_json, str(root / "dataset.json")) + caps["num_interaction_channels"]
    with torch.device("meta"):
        try:
            net = _build_network(config["architecture"], n_in, NUM_CLASSES)
        except CheckpointError as e:
            raise CheckpointError(
                str(e), file=str(root / "plans.json"), key=f"configurations.{configuration}.{e.key}"
            ) from None
    ckpt_rel = Path(f"fold_{fold}") / checkpoint_name
    _check_state_dict(net.state_dict(), network_weights, str(root / ckpt_rel))

    weights = _share_aliases(net, {k: v.detach().cpu().contiguous() for k, v in network_weights.items()})
    checkpoint = {
        # the keys nnU-Net checkpoints carry; nnInteractive reads network_weights, trainer_name and
        # init_args["configuration"]. Only plain types, so weights_only=True loading works.
        "network_weights": weights,
        "optimizer_state": None,
        "grad_scaler_state": None,
        "logging": {},
        "_best_ema": None,
        "current_epoch": 0,
        "init_args": {"plans": plans, "configuration": configuration, "fold": fold},
        "trainer_name": trainer_name,
        "inference_allowed_mirroring_axes": None,
    }
    checkpoint.update(extra_checkpoint or {})

    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp creates 0700; a model folder is meant to be shared
        for name, content in files.items():
            (tmp / name).write_text(json.dumps(content, indent=4) + "\n", encoding="utf-8")
        if license_text is not None:
            (tmp / "LICENSE").write_text(
                license_text if license_text.endswith("\n") else license_text + "\n", encoding="utf-8"
            )
        (tmp / ckpt_rel).parent.mkdir()
        torch.save(checkpoint, tmp / ckpt_rel)
        if root.exists():
            root.rmdir()  # empty, checked above
        tmp.rename(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root
