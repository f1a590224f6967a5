"""The training loop behind ``nnint train``.

One iteration = one batch of samples (:mod:`nnint.train.dataset`), then ``r`` simulated correction
rounds (``r`` drawn per iteration): the network predicts without gradients, its argmax becomes
the mask on screen (after the engine's answer rules, :func:`shown_mask`) and ``prev_seg``
(sometimes corrupted), the simulated user (:mod:`nnint.train.simulate`) adds one
correction prompt from the error of that prediction, and the prompt channels are rebuilt with the
inference rasteriser. The last input gets the gradient. Loss: soft Dice + cross-entropy on the 2
logits (with deep supervision). AdamW (or SGD) with polynomial learning-rate decay and warm-up;
autocast (bf16, else fp16 with a grad scaler) on CUDA.

What is exported, validated and shipped is an exponential moving average of the weights
(:class:`WeightAverage`), not the last step's: with batches of 2 on a CPU the last step's weights
are noisy, and the average is a usable model at any iteration, not only once the learning rate
has decayed to zero at the end of a schedule.

Outputs in ``OUT``: ``checkpoint_latest.pth`` (everything needed to resume exactly), ``model/``
(the exported weight average as an nnInteractive model folder, rewritten at every checkpoint), ``log.csv``,
``curves.png``, ``val.csv`` and ``config.json``. Checkpoints are written every ``save_every``
iterations or ``save_minutes`` minutes, at the end, and on SIGTERM / SIGINT.

Determinism: sample ``i`` depends only on ``(seed, rank, i)`` and the correction rounds of
iteration ``k`` only on ``(seed, rank, k)`` and the network, so ``--resume`` continues the exact
sequence (on the same device type and thread count).

Distributed: launched by ``torchrun`` (``RANK``/``WORLD_SIZE`` set) the loop uses DDP (nccl on
CUDA, gloo on CPU), every rank draws its own sample stream, and only rank 0 writes files.
"""

from __future__ import annotations

import csv
import gc
import json
import math
import os
import random
import shutil
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import attrs
import numpy as np
import torch
import torch.nn.functional as F

from nnint.engine import MaskUpdate, answer_rules
from nnint.errors import NnintError
from nnint.train import dataset as ds
from nnint.train import simulate

__all__ = ["TrainConfig", "train", "ARCHITECTURES", "architecture_plans", "export_model", "validate"]

CHECKPOINT = "checkpoint_latest.pth"
#: consecutive steps with a non-finite gradient after which training stops with an error
MAX_BAD_STEPS = 20
MODEL_DIR = "model"


# --- architectures ----------------------------------------------------------------------------


def _arch_small() -> dict:
    from nnint.backends.torch.architectures import resenc_architecture

    # the bundled-model candidate: 5 stages 8-24-48-96-192, residual blocks 1-1-2-2-2
    # (5.48 M parameters = 21.9 MB float32 with 8 inputs / 2 outputs; 21.7 GMAC per 96^3 forward,
    # 2.4x less than 16-32-64-128-192: the full-resolution stage dominates CPU time)
    return resenc_architecture([8, 24, 48, 96, 192], [1, 1, 2, 2, 2])


def _arch_tiny() -> dict:
    from nnint.backends.torch.architectures import small_architecture

    return small_architecture()


def _arch_v1() -> dict:
    from nnint.backends.torch.architectures import official_v1_architecture

    return official_v1_architecture()


ARCHITECTURES = {"small": _arch_small, "tiny": _arch_tiny, "v1": _arch_v1}


def architecture_plans(arch: str, patch: int) -> tuple[dict, str]:
    """``(plans, configuration)`` for a preset name or a plans.json path (its first 3-D configuration,
    or ``path.json:CONFIGURATION``)."""
    from nnint.backends.torch.architectures import make_plans

    if arch in ARCHITECTURES:
        name = {"small": "nnintSmallPlans", "tiny": "nnintTinyPlans", "v1": "nnintV1Plans"}[arch]
        plans = make_plans(ARCHITECTURES[arch](), configuration="3d_fullres", patch_size=(patch,) * 3,
                           dataset_name="Dataset990_nnintTrain", plans_name=name, base_configuration=None)
        return plans, "3d_fullres"
    path, _, cfg = arch.partition(".json:")
    path = path if path.endswith(".json") else path + ".json"
    if not Path(path).exists():
        raise NnintError(f"--arch {arch!r}: not one of {', '.join(ARCHITECTURES)} and not a plans.json file")
    plans = json.loads(Path(path).read_text())
    confs = plans.get("configurations", {})
    if not cfg:
        cfg = next((k for k, v in confs.items() if "3d" in k), None) or next(iter(confs))
    if cfg not in confs:
        raise NnintError(f"{path} has no configuration {cfg!r}; available: {', '.join(confs)}")
    return plans, cfg


# --- config ---------------------------------------------------------------------------------


@attrs.define
class TrainConfig:
    data: list = attrs.field(factory=list)
    out: str = "runs/train"
    arch: str = "small"
    #: training window edge, or several (alternated between batches; see ``TrainSet``)
    patch: int | tuple[int, ...] = 64
    #: inference patch size written to plans.json (default: ``patch``)
    infer_patch: int | None = None
    iterations: int = 10000
    batch: int = 2
    lr: float | None = None
    optimizer: str = "adamw"
    weight_decay: float = 3e-5
    warmup: int = 100
    device: str = "cpu"
    threads: int | None = None
    workers: int = 1
    resume: bool = False
    init: str | None = None
    val_every: int = 500
    val_cases: int = 4
    val_targets: int = 3
    #: validation engine with AutoZoom (what users get); off makes early validations of untrained
    #: networks (which zoom out and refine everywhere) much cheaper
    val_autozoom: bool = True
    save_every: int = 200
    save_minutes: float = 10.0
    log_every: int = 10
    seed: int = 0
    supervoxels: bool = False
    #: train only on cases whose provenance.json marks them redistributable (for shipped weights)
    redistributable_only: bool = False
    max_rounds: int = 3
    #: train only on targets with at least this contrast-to-noise ratio (``SampleConfig.min_cnr``);
    #: may change on --resume (a curriculum: visible targets first)
    min_cnr: float = 0.0
    #: cross-entropy weight, on top of 1, of the error regions the iteration's simulated corrections
    #: point at (:func:`nnint.train.simulate.corrected_region`); 0: off. Session 8: after a box the
    #: models left 40 % of the negative clicks without effect; with 20 that halved, but the clicks
    #: gained no more Dice (the network does not see where the object ends). May change on --resume
    correction_weight: float = 0.0
    #: weight of an auxiliary loss: a training-only 1x1x1 head on the full-resolution decoder
    #: features predicts where the window's label map changes value (:class:`BoundaryHead`). That
    #: target depends on no prompt, so only the image can lower it (session 7: the CPU-trained
    #: models answer from the prompts' shape). 0: off; the exported model is the same either way
    boundary_weight: float = 0.0
    deep_supervision: bool = True
    #: give the network the window-rank input channel (:class:`~nnint.backends.torch.network.WindowRank`;
    #: session 12). With --init from a model without it, the new channel's stem weights start at
    #: zero, so the fine-tune starts as exactly the initial model
    window_rank: bool = False
    #: give the network the prompt-likeness input channels
    #: (:class:`~nnint.backends.torch.network.PromptLikeness`; session 17), zero stem weights as above
    prompt_likeness: bool = False
    #: share of small targets (under patch / 6 across) shown magnified up to 3x, as the engine's
    #: ``magnify`` option shows them (``SampleConfig.p_magnify``; session 19). 0: off
    magnify_samples: float = 0.0
    #: open every training episode with one of these prompt kinds (kind -> probability; None: the
    #: default mix of :data:`nnint.train.simulate.FIRST_KINDS`). A specialist, such as a network
    #: for sessions that start with a 3D box (session 22), spends all its iterations there
    first_prompts: dict | None = None
    #: decay of the exported weight average per iteration (0: export the last step's weights)
    ema_decay: float = 0.999
    cache: str | None = None
    amp: bool = True
    #: stop (checkpoint and return, like a SIGTERM) once this iteration is reached; for tests/schedulers
    stop_at: int | None = None
    #: fit the run into this many minutes of training (a rented GPU's budget): every 25 iterations
    #: the iteration count is re-estimated from the speed of the last 25, so the learning-rate
    #: schedule still decays to zero on time; ``iterations`` is then an upper bound
    minutes: float | None = None
    #: LICENSE text of the exported model folder (first line = licence id); default: Apache-2.0 for
    #: weights trained from scratch, the initial model's licence terms with --init
    license: str | None = None
    #: option names given explicitly (on --resume they override the checkpoint's values)
    explicit: tuple = ()

    @property
    def patches(self) -> tuple[int, ...]:
        return tuple(int(p) for p in self.patch) if isinstance(self.patch, (tuple, list)) else (int(self.patch),)

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return float(self.lr)
        base = 1e-2 if self.optimizer == "sgd" else 1e-3
        return base / 10 if self.init else base


# --- distributed ------------------------------------------------------------------------------


def _dist_setup(device: str) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    dev = torch.device(device)
    if world > 1:
        import torch.distributed as dist

        local = int(os.environ.get("LOCAL_RANK", "0"))
        if dev.type == "cuda":
            torch.cuda.set_device(local)
            dev = torch.device("cuda", local)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return rank, world, dev


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


# --- loss -----------------------------------------------------------------------------------


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy + (1 - soft Dice of the foreground) for 2-logit outputs.

    The Dice is per sample, then averaged: the evaluation scores every target equally, and a batch
    Dice let one big target hide the over-segmentation of a small one in the same batch (session 3:
    the model answered boxes with ~1.5-2.5x too many voxels). ``weight`` (same shape as
    ``target``): per-voxel cross-entropy weights (the mean stays over all voxels)."""
    logits = logits.float()
    if weight is None:
        ce = F.cross_entropy(logits, target.long())
    else:
        ce = (F.cross_entropy(logits, target.long(), reduction="none") * weight).mean()
    prob = torch.softmax(logits, 1)[:, 1].flatten(1)
    t = target.float().flatten(1)
    inter = (prob * t).sum(1)
    dice = (2 * inter + 1e-5) / (prob.sum(1) + t.sum(1) + 1e-5)
    return ce + (1 - dice.mean())


def deep_supervision_loss(outputs: list[torch.Tensor], target: torch.Tensor,
                          weight: torch.Tensor | None = None) -> torch.Tensor:
    """nnU-Net style: weights 1/2^i over the heads (the lowest-resolution one dropped), normalised.
    ``weight``: per-voxel cross-entropy weights at full resolution (area-averaged for lower heads)."""
    n = len(outputs)
    w = np.array([1 / (2**i) for i in range(n)])
    if n > 1:
        w[-1] = 0
    w = w / w.sum()
    loss = 0.0
    t = target.float()[:, None]
    for wi, out in zip(w, outputs):
        if wi == 0:
            continue
        same = out.shape[2:] == target.shape[1:]
        tt = target if same else (F.interpolate(t, size=out.shape[2:], mode="nearest")[:, 0])
        ww = weight if weight is None or same else F.interpolate(weight[:, None], size=out.shape[2:], mode="area")[:, 0]
        loss = loss + float(wi) * dice_ce_loss(out, tt, ww)
    return loss


class BoundaryHead(torch.nn.Module):
    """Training-only auxiliary head: a 1x1x1 convolution on the input of the network's last
    (full-resolution) segmentation head, predicting ``batch["boundary"]``
    (:func:`nnint.train.dataset.label_boundaries`). Never exported: the model folder keeps the
    official layout. The features are taken by a forward hook, so the network code is untouched."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        last = _unwrap(net).decoder.seg_layers[-1]
        self.conv = torch.nn.Conv3d(last.in_channels, 1, 1)
        self._features: torch.Tensor | None = None
        self._hook = last.register_forward_hook(self._keep)

    def _keep(self, _module, inputs, _output) -> None:
        self._features = inputs[0]  # the last forward wins: the training pass comes after the rounds

    def loss(self, boundary: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy + soft Dice of the last forward's boundary logits against
        ``boundary`` (B, z, y, x), over the samples where ``valid`` (B,) is true (0 if none)."""
        if self._features is None or not bool(valid.any()):
            return torch.zeros((), device=boundary.device)
        logits = self.conv(self._features)[:, 0].float()[valid]
        t = boundary[valid].float()
        ce = F.binary_cross_entropy_with_logits(logits, t)
        prob = torch.sigmoid(logits).flatten(1)
        tf = t.flatten(1)
        dice = (2 * (prob * tf).sum(1) + 1e-5) / (prob.sum(1) + tf.sum(1) + 1e-5)
        return ce + (1 - dice.mean())


# --- the model --------------------------------------------------------------------------------


@attrs.define
class ModelSetup:
    plans: dict
    configuration: str
    decay: float
    point_radius: float
    mapping: dict
    num_channels: int
    dataset_json: dict
    inference_info: dict
    init_weights: dict | None = None
    #: the LICENSE text of the ``--init`` folder: fine-tuned weights inherit its terms
    init_license: str | None = None


def _model_setup(cfg: TrainConfig) -> ModelSetup:
    from nnint.backends.torch.architectures import default_dataset_json
    from nnint.backends.torch.checkpoint import default_inference_info

    if cfg.init:
        from nnint.backends.torch.checkpoint import load_model_folder

        mf = load_model_folder(cfg.init)
        if mf.num_image_channels != 1:
            raise NnintError(f"--init {cfg.init}: only single-image-channel models can be fine-tuned")
        plans = json.loads(json.dumps(mf.plans))
        mapping = {k: (tuple(v) if isinstance(v, (list, tuple)) else int(v)) for k, v in mf.channel_mapping.items()}
        info = default_inference_info(
            point_radius=mf.point_radius, interaction_decay=mf.interaction_decay,
            preferred_scribble_thickness=list(mf.preferred_scribble_thickness),
            supported_interactions={**mf.supported_interactions, "bbox3d": True},
            interaction_channels=mf.num_interaction_channels - 1,
            channel_mapping={k: (list(v) if isinstance(v, tuple) else v) for k, v in mapping.items()},
        )
        setup = ModelSetup(plans, mf.configuration_name, mf.interaction_decay, mf.point_radius, mapping,
                           mf.num_interaction_channels, dict(mf.dataset_json), info,
                           {k: v.clone() for k, v in mf.network_weights.items()},
                           _read_text(Path(cfg.init) / "LICENSE"))
    else:
        plans, conf = architecture_plans(cfg.arch, cfg.infer_patch or max(cfg.patches))
        info = default_inference_info(supported_interactions={"scribble": True, "lasso": True, "points": True,
                                                              "bbox2d": True, "bbox3d": True})
        setup = ModelSetup(plans, conf, simulate.DEFAULT_DECAY, simulate.DEFAULT_POINT_RADIUS,
                           dict(simulate.LEGACY_MAPPING), 7, default_dataset_json(1), info)
    from nnint.backends.torch.network import PROMPT_LIKENESS_KEY, WINDOW_RANK_KEY

    if cfg.window_rank:
        add_input_channels(setup, WINDOW_RANK_KEY)
    if cfg.prompt_likeness:
        add_input_channels(setup, PROMPT_LIKENESS_KEY)
    return setup


def add_input_channels(setup: ModelSetup, key: str) -> None:
    """Switch one of the architecture's parameter-free input extensions on (arch_kwargs ``key``, in
    place); initial weights that lack it get zero slices for its extra input channels, appended
    last as the network appends them, so the network computes what it computed before."""
    from nnint.backends.torch.network import build_network

    arch = _resolved_arch(setup.plans, setup.configuration)
    if arch["arch_kwargs"].get(key):
        return
    arch["arch_kwargs"][key] = True
    confs = setup.plans["configurations"]
    confs[setup.configuration] = {**confs[setup.configuration], "architecture": arch}
    if setup.init_weights is None:
        return
    with torch.device("meta"):
        wanted = build_network(arch, 1 + setup.num_channels, 2).state_dict()
    setup.init_weights = widened_weights(setup.init_weights, wanted)


def widened_weights(weights: dict, wanted: dict) -> dict:
    """``weights`` with every tensor that has fewer input channels than its ``wanted`` counterpart
    (a state dict, or one built on the meta device) given zero slices for the missing ones,
    appended last: a network that appends input channels then computes what it computed without."""
    out = dict(weights)
    for name, w in weights.items():
        shape = tuple(wanted[name].shape)
        extra = shape[1] - w.shape[1] if w.ndim >= 2 and len(shape) == w.ndim else 0
        if extra > 0 and shape == (w.shape[0], w.shape[1] + extra, *w.shape[2:]):
            out[name] = torch.cat([w, w.new_zeros((w.shape[0], extra, *w.shape[2:]))], 1)
    return out


def _read_text(path: Path) -> str | None:
    return path.read_text() if path.is_file() else None


def _resolved_configuration(plans: dict, configuration: str) -> dict:
    """The configuration with what it inherits (a shallow merge; nested values are the plans' own)."""
    confs = plans["configurations"]
    c = dict(confs[configuration])
    while "inherits_from" in c:
        parent = dict(confs[c.pop("inherits_from")])
        parent.update(c)
        c = parent
    return c


def _resolved_arch(plans: dict, configuration: str) -> dict:
    return _resolved_configuration(plans, configuration)["architecture"]


def build_model(setup: ModelSetup, seed: int) -> torch.nn.Module:
    from nnint.backends.torch.network import build_network, initialize_weights

    torch.manual_seed(seed)
    net = build_network(_resolved_arch(setup.plans, setup.configuration), 1 + setup.num_channels, 2)
    initialize_weights(net)
    if setup.init_weights is not None:
        net.load_state_dict(setup.init_weights, strict=True)
    return net


def export_model(weights: dict, setup: ModelSetup, folder: str | os.PathLike, *, iteration: int,
                 extra: dict | None = None, license_text: str | None = None) -> Path:
    """Write a network state dict as an nnInteractive model folder at ``folder`` (replacing it
    atomically)."""
    from nnint.backends.torch.checkpoint import write_model_folder

    folder = Path(folder)
    tmp = folder.with_name(folder.name + f".new{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    weights = {k: v.detach().float() for k, v in weights.items()}  # (the writer makes them CPU, contiguous)
    lic = ("Apache-2.0\nWeights trained with nnint train; training data: see the model card." if setup.init_weights is None
           else "See the LICENSE of the initial model: fine-tuned weights inherit its terms.")
    if setup.init_weights is not None and setup.plans.get("dataset_name") == "Dataset225_nnInteractiveV2":
        lic = "CC BY-NC-SA 4.0\nFine-tuned from nnInteractive v1.0 (non-commercial licence)."
    if setup.init_license:
        lic = setup.init_license
    if license_text:
        lic = license_text
    write_model_folder(tmp, plans=setup.plans, configuration=setup.configuration, network_weights=weights,
                       dataset_json=setup.dataset_json, inference_info=setup.inference_info, license_text=lic,
                       trainer_name="nnInteractiveTrainer_stub",
                       extra_checkpoint={"current_epoch": int(iteration), "logging": extra or {}})
    old = folder.with_name(folder.name + f".old{os.getpid()}")
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    if old.exists():
        shutil.rmtree(old)
    return folder


def _net_input(image: torch.Tensor, channels: torch.Tensor, device: torch.device) -> torch.Tensor:
    return torch.cat([image, channels.to(device)], 1).contiguous(memory_format=torch.channels_last_3d)


def _unwrap(net: torch.nn.Module) -> torch.nn.Module:
    return net.module if hasattr(net, "module") else net


class WeightAverage:
    """Exponential moving average of a network's floating-point weights.

    The decay ramps up as ``min(decay, (1 + n) / (10 + n))`` over the ``n`` updates seen, so an
    average started from random or resumed weights is not dominated by them for thousands of steps.
    ``decay == 0`` makes the average the current weights.
    """

    def __init__(self, net: torch.nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.updates = 0
        self.shadow = {k: v.detach().float().clone() for k, v in _unwrap(net).state_dict().items()
                       if v.is_floating_point()}

    @torch.no_grad()
    def update(self, net: torch.nn.Module) -> None:
        self.updates += 1
        keep = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in _unwrap(net).state_dict().items():
            if k in self.shadow:
                self.shadow[k].lerp_(v.detach().float(), 1.0 - keep)

    def weights(self, net: torch.nn.Module) -> dict:
        """``net``'s state dict with the averaged tensors in place of its floating-point ones."""
        return {k: self.shadow.get(k, v) for k, v in _unwrap(net).state_dict().items()}

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
        self.shadow = {k: v.float().clone() for k, v in state["shadow"].items()}


# --- sampling helpers -------------------------------------------------------------------------


class _FromIndexSampler(torch.utils.data.Sampler):
    def __init__(self, start: int, stop: int) -> None:
        self.start, self.stop = int(start), int(stop)

    def __iter__(self):
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start


def _worker_init(_):
    torch.set_num_threads(1)
    # Ctrl-C / SIGTERM go to the main process, which checkpoints and stops the workers itself
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _rounds(rng: np.random.Generator, max_rounds: int) -> int:
    if max_rounds <= 0:
        return 0
    # evaluation and real use run 5+ corrections, so later rounds must not be rare (session 3: the
    # old 0.35/0.3/0.2/0.15 gave ~1.15 rounds per sample and box corrections barely helped)
    p = np.array([0.2, 0.3, 0.3, 0.2][: max_rounds + 1], float)
    if max_rounds + 1 > len(p):
        p = np.concatenate([p, np.full(max_rounds + 1 - len(p), 0.05)])
    return int(rng.choice(len(p), p=p / p.sum()))


# --- checkpoints ------------------------------------------------------------------------------


def _rng_state() -> dict:
    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _amp_settings(wanted: bool, device: torch.device) -> tuple[bool, torch.dtype]:
    """``(enabled, dtype)`` of autocast: the inference engine's ``precision="fast"`` choice (bf16 on
    GPUs and CPUs that run it natively: 1.4x faster training steps on this project's 2-core
    machine; fp16 with a gradient scaler on older GPUs; off elsewhere, where emulated bf16 is
    slower than fp32)."""
    from nnint.backends.torch.engine import resolve_precision

    if not wanted:
        return False, torch.float32
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(resolve_precision("fast", device))
    return (True, dtype) if dtype is not None else (False, torch.float32)


def _save_checkpoint(path: Path, net, average: WeightAverage, opt, sched, scaler, iteration: int, cfg: TrainConfig,
                     history: list, boundary_head: torch.nn.Module | None = None) -> None:
    state = {
        "network_weights": _unwrap(net).state_dict(),
        "boundary_head": boundary_head.state_dict() if boundary_head is not None else None,
        "weight_average": average.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "iteration": int(iteration),
        "rng": _rng_state(),
        "config": attrs.asdict(cfg),
        "history": history,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


# --- validation -------------------------------------------------------------------------------


def _engine_for(folder: Path, device: str, autozoom: bool = True):
    """The real torch backend engine for the exported model folder (or a zoom-1 stand-in if the
    backend is not available in this installation)."""
    try:
        from nnint.backends.torch.engine import TorchEngine  # noqa: F401
        from nnint.plugins import load_engine

        opts = {} if autozoom else {"autozoom": False}
        return load_engine(str(folder), backend="torch", device=device, **opts), "torch"
    except ImportError:
        return _WindowEngine(folder, device), "window"


class _WindowEngine:
    """Minimal zoom-1 stand-in for the torch backend: one window of the plans patch size centred on
    the newest prompt (used only until nnint.backends.torch.engine exists)."""

    def __init__(self, folder: Path, device: str) -> None:
        from nnint.backends.torch.checkpoint import load_model_folder
        from nnint.engine import Capabilities

        self.mf = load_model_folder(folder)
        self.net = self.mf.build_network(device)
        self.device = device
        self.patch = int(self.mf.patch_size[0])
        self.capabilities = Capabilities(frozenset({"point", "box2d", "box3d", "scribble", "lasso", "initial_mask"}))

    def set_image(self, image) -> None:
        from nnint.train.augment import normalise

        self.image = normalise(image.array)

    def predict(self, prompts, mask):
        from nnint.engine import MaskUpdate

        P = self.patch
        last = prompts[-1]
        lo, hi = last.bbox
        centre = np.floor((np.asarray(lo) + np.asarray(hi) - 1) / 2 + 0.5).astype(int)
        wlo = centre - P // 2
        img = ds._crop(self.image, wlo, (P,) * 3)
        prev = ds._crop(np.asarray(mask, np.uint8), wlo, (P,) * 3)
        shifted = [ds._shift_prompt(p, -wlo) if not isinstance(p, simulate.InitialMask) else p for p in prompts]
        keep = []
        for p in shifted:
            if isinstance(p, simulate.InitialMask):
                continue
            try:
                from nnint.prompts import clip_to_image

                keep.append(clip_to_image(p, (P,) * 3))
            except Exception:  # noqa: BLE001 - prompts outside the window do not contribute
                continue
        ch = simulate.prompt_channels(keep, prev, decay=self.mf.interaction_decay,
                                      point_radius=self.mf.point_radius)
        x = torch.from_numpy(np.concatenate([img[None], ch]))[None].to(self.device)
        with torch.inference_mode():
            pred = self.net(x).argmax(1)[0].cpu().numpy().astype(np.uint8)
        return MaskUpdate(tuple(int(v) for v in wlo), pred)


def validate(folder: Path, dev_cases: list, cfg: TrainConfig, log=print) -> dict:
    """Dice of the exported model on dev targets with two fixed protocols through the real engine:
    box then 5 clicks (CVPR-style), and a point then 2 clicks. ``val_cases`` cases evenly spread over
    the dev list, ``val_targets`` random (fixed) targets of each. Returns mean Dice per step."""
    from nnint.engine import clip_update
    from nnint.evaluate.metrics import dice
    from nnint.evaluate.protocols import box_clicks, points
    from nnint.image import Geometry, Image

    engine, kind = _engine_for(folder, cfg.device, cfg.val_autozoom)
    rows = {"box": [], "box+2": [], "box+5": [], "point": [], "point+2": []}
    n = len(dev_cases)
    chosen = sorted({int(i) for i in np.linspace(0, n - 1, min(cfg.val_cases, n)).round()}) if n else []
    for ci in chosen:  # spread over the dev list (so over the datasets), the same cases every time
        case = dev_cases[ci]
        raw = case.raw()
        labels = np.asarray(case.labels())
        image = Image(raw, Geometry(spacing=tuple(float(s) for s in case.spacing[::-1])))
        engine.set_image(image)
        targets = sorted(case.targets, key=lambda t: t[0])
        order = np.random.default_rng([cfg.seed, ci, 555]).permutation(len(targets))
        pick = [targets[int(i)] for i in order[: cfg.val_targets]]  # a fixed random subset
        for value, _n, _bb in pick:
            gt = labels == value
            for proto, n_clicks, factory in (("box", 5, box_clicks), ("point", 2, points)):
                rng = np.random.default_rng([cfg.seed, int(value), len(rows[proto]), 17])
                user = factory(gt, rng=rng, capabilities=engine.capabilities)
                mask = np.zeros(gt.shape, np.uint8)
                prompts = []
                prompt = user.first()
                for step in range(n_clicks + 1):
                    if prompt is None:
                        break
                    prompts.append(prompt)
                    upd = engine.predict(list(prompts), mask)
                    if upd is not None:
                        upd = clip_update(upd, gt.shape)
                        if upd is not None:
                            mask = mask.copy()
                            mask[upd.slices] = upd.values
                    d = dice(mask, gt)
                    key = proto if step == 0 else f"{proto}+{step}"
                    if key in rows:
                        rows[key].append(d)
                    if step < n_clicks:
                        prompt = user.next(mask)
                # a converged user stops early: carry the last Dice forward
                for key in (f"{proto}+2", f"{proto}+5"):
                    if key in rows and len(rows[key]) < len(rows[proto]):
                        rows[key].append(d)
    out = {f"val_{k}": float(np.mean(v)) if v else float("nan") for k, v in rows.items()}
    out["val_targets"] = len(rows["box"])
    out["val_engine"] = kind
    return out


# --- logging ---------------------------------------------------------------------------------


def _write_curves(out: Path, history: list) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    its = [h["iteration"] for h in history if "loss" in h]
    loss = [h["loss"] for h in history if "loss" in h]
    val = [h for h in history if "val_box+5" in h]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    if its:
        axes[0].plot(its, loss, lw=0.8, alpha=0.5, label="loss")
        if len(loss) >= 5:
            k = max(1, len(loss) // 20)
            sm = np.convolve(loss, np.ones(k) / k, mode="valid")
            axes[0].plot(its[k - 1:], sm, lw=1.5, label=f"loss (mean of {k})")
    axes[0].set_xlabel("iteration")
    axes[0].set_title("training loss (Dice + CE)")
    axes[0].legend()
    for key in ("val_box", "val_box+5", "val_point", "val_point+2"):
        if val:
            axes[1].plot([h["iteration"] for h in val], [h[key] for h in val], marker="o", label=key)
    axes[1].set_ylim(0, 1)
    axes[1].set_xlabel("iteration")
    axes[1].set_title("validation Dice (dev split, torch engine)")
    if val:
        axes[1].legend()
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=90)
    plt.close(fig)


def _write_log(out: Path, history: list) -> None:
    keys: list[str] = []
    for h in history:
        for k in h:
            if k not in keys:
                keys.append(k)
    tmp = out / "log.csv.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for h in history:
            w.writerow(h)
    os.replace(tmp, out / "log.csv")


# --- the loop --------------------------------------------------------------------------------


class _Stop:
    def __init__(self) -> None:
        self.requested = False
        self.signal = None

    def __call__(self, signum, _frame) -> None:
        self.requested = True
        self.signal = signum


def _prev_feedback(pred: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The network's prediction as next prev_seg; sometimes corrupted (blocky/shifted) so the model
    learns not to trust prev_seg blindly."""
    if rng.random() < 0.1 and pred.any():
        return simulate.corrupt_mask(pred.astype(bool), rng, str(rng.choice(["blocky", "shift", "noisy"]))).astype(np.uint8)
    return pred.astype(np.uint8)


def shown_mask(pred: np.ndarray, shown: np.ndarray, prompts: list) -> np.ndarray:
    """What a person sees after the network answered ``prompts`` with ``pred`` (a whole patch) while
    ``shown`` was on screen: the answer passed through the two rules nnint's model cards turn on in
    the engine (``one_way_corrections``, ``confine_to_box``; :mod:`nnint.engine`). The simulated
    user corrects this mask and it is fed back as ``prev_seg``, so training sees the masks that
    inference will show it (session 14; before, every round fed back the raw answer)."""
    update = MaskUpdate((0, 0, 0), np.asarray(pred, np.uint8))
    return answer_rules(update, shown, prompts, one_way=True, confine=True).values


def _correction_step(target: np.ndarray, pred: np.ndarray, shown: np.ndarray, prompts: list, agent,
                     rng: np.random.Generator, setup: ModelSetup, want_region: bool):
    """One simulated correction of one sample: ``(prompt, corrected region or None, prompt channels,
    mask on screen)``, or None when the prediction has no error left to correct.
    ``pred``: the network's answer to ``prompts``; ``shown``: the mask on screen before it. Touches
    only its own arguments (``rng`` is the sample's own), so samples can run in parallel threads."""
    pred = shown_mask(pred, shown, prompts)
    kind = agent.next_kind(rng)
    try:
        corr = simulate.correction_prompt(target, pred, rng, kind)
    except ValueError:  # a degenerate 2-D region; a click always works
        corr = None
    if corr is None and kind != "point":
        corr = simulate.correction_prompt(target, pred, rng, "point")
    if corr is None:
        return None
    region = simulate.corrected_region(target, pred, corr) if want_region else None
    prev = _prev_feedback(pred, rng)
    chans = simulate.prompt_channels(prompts + [corr], prev, decay=setup.decay, point_radius=setup.point_radius,
                                     mapping=setup.mapping, num_channels=setup.num_channels)
    return corr, region, chans, pred


def train(cfg: TrainConfig, log=None) -> dict:
    """Run (or resume) a training; returns a summary dict (iteration, last loss, last validation)."""
    import warnings

    # rasterising read-only prompt crops through torch.from_numpy is safe (never written to)
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    rank, world, device = _dist_setup(cfg.device)
    is_main = rank == 0
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    say = log if is_main else (lambda s: None)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    if device.type == "cuda":  # fixed patch sizes: let cuDNN pick its fastest convolution per shape once
        torch.backends.cudnn.benchmark = True
    out = Path(cfg.out)
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CHECKPOINT
    resume_state = None
    if cfg.resume:
        if not ckpt_path.exists():
            raise NnintError(f"--resume: no {ckpt_path}")
        resume_state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        saved = resume_state["config"]
        new_data = list(cfg.data)
        locked = ("data", "arch", "patch", "batch", "seed", "init", "infer_patch", "max_rounds", "optimizer",
                  "supervoxels", "deep_supervision", "cache", "redistributable_only",
                  "boundary_weight")  # the boundary head's parameters are in the optimizer state
        for key, value in saved.items():
            # what defines the run comes from the checkpoint; other settings (iterations, validation,
            # checkpoint cadence, threads) too, unless given explicitly now
            if key in ("resume", "explicit", "stop_at") or not hasattr(cfg, key):
                continue
            if key in locked or key not in cfg.explicit:
                setattr(cfg, key, value)
        if new_data and new_data != list(saved["data"]):
            # continuing on other data is allowed (e.g. once real data is prepared); the sample
            # sequence then differs from an uninterrupted run
            say(f"--resume with new --data {new_data} (was {saved['data']})")
            cfg.data = new_data
        say(f"resuming from iteration {resume_state['iteration']} ({ckpt_path})")
    elif ckpt_path.exists():
        raise NnintError(f"{ckpt_path} exists: pass --resume to continue it, or choose another --out")
    if not cfg.data:
        raise NnintError("no --data given")

    cache = Path(cfg.cache) if cfg.cache else out / "cache"
    if is_main:
        train_cases = ds.prepare_cases(cfg.data, cache, "train", supervoxels=cfg.supervoxels,
                                       redistributable_only=cfg.redistributable_only, log=say)
        dev_cases = ds.prepare_cases(cfg.data, cache, "dev", log=say)
    _barrier(world)
    if not is_main:
        train_cases = ds.prepare_cases(cfg.data, cache, "train", supervoxels=cfg.supervoxels,
                                       redistributable_only=cfg.redistributable_only, log=None)
        dev_cases = []
    say(f"{len(train_cases)} training cases ({sum(len(c.targets) + len(c.sv_targets) for c in train_cases)} targets), "
        f"{len(dev_cases)} dev cases")

    setup = _model_setup(cfg)
    # channels-last 3-D tensors: a training step of the small network (batch 2, 64^3) on one CPU core takes 0.62 s
    # instead of 0.82 s (oneDNN convolutions without layout reorders; inference gained <10 %)
    net = build_model(setup, cfg.seed).to(device, memory_format=torch.channels_last_3d)
    n_params = sum(p.numel() for p in net.parameters())
    say(f"network: {n_params / 1e6:.2f} M parameters, {1 + setup.num_channels} inputs, patch {' / '.join(f'{p}^3' for p in cfg.patches)} "
        f"(inference patch {'x'.join(str(p) for p in _resolved_configuration(setup.plans, setup.configuration)['patch_size'])}), "
        f"{'window-rank channel, ' if getattr(net, 'window_rank', None) is not None else ''}device {device}, world size {world}")
    head = BoundaryHead(net).to(device, memory_format=torch.channels_last_3d) if cfg.boundary_weight > 0 else None
    params = list(net.parameters()) + (list(head.parameters()) if head is not None else [])
    lr = cfg.learning_rate
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=0.99, nesterov=True, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    else:
        raise NnintError(f"unknown optimizer {cfg.optimizer!r}; use adamw or sgd")
    total, warm = [max(1, cfg.iterations)], max(0, cfg.warmup)  # total: re-fitted under --minutes

    def lr_lambda(it: int) -> float:
        if it < warm:
            return (it + 1) / warm
        return max(0.0, 1 - it / total[0]) ** 0.9

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    use_amp, amp_dtype = _amp_settings(cfg.amp, device)
    if use_amp:
        say(f"mixed precision: {str(amp_dtype).removeprefix('torch.')} autocast on {device.type}")
    scaler = torch.amp.GradScaler("cuda") if use_amp and amp_dtype == torch.float16 else None

    start_it, history = 0, []
    if resume_state is not None:
        _unwrap(net).load_state_dict(resume_state["network_weights"])
        if head is not None:
            head.load_state_dict(resume_state["boundary_head"])
        opt.load_state_dict(resume_state["optimizer"])
        sched.load_state_dict(resume_state["scheduler"])
        if scaler is not None and resume_state.get("scaler"):
            scaler.load_state_dict(resume_state["scaler"])
        _set_rng_state(resume_state["rng"])
        start_it = int(resume_state["iteration"])
        history = list(resume_state.get("history", []))
    average = WeightAverage(net, cfg.ema_decay)
    if resume_state is not None:
        if "weight_average" in resume_state:  # older checkpoints start the average now
            average.load_state_dict(resume_state["weight_average"])
        del resume_state
    model = net
    if world > 1:
        # data parallel: identical initial weights on every rank, gradients averaged after backward
        # (done by hand rather than through the DDP wrapper so the deep-supervision forward works)
        import torch.distributed as dist

        for p in net.state_dict().values():
            dist.broadcast(p, 0)
        for p in head.state_dict().values() if head is not None else ():
            dist.broadcast(p, 0)

    if is_main:
        (out / "config.json").write_text(json.dumps({**attrs.asdict(cfg), "world_size": world,
                                                     "parameters": n_params}, indent=1, default=str))
    scfg = ds.SampleConfig(patch=cfg.patches[0], decay=setup.decay, point_radius=setup.point_radius,
                           mapping=setup.mapping, num_channels=setup.num_channels, min_cnr=cfg.min_cnr,
                           boundary=head is not None, p_magnify=cfg.magnify_samples)
    if cfg.first_prompts:
        scfg = ds.restrict_first_kinds(scfg, cfg.first_prompts)
    B = cfg.batch
    trainset = ds.TrainSet(train_cases, scfg, seed=cfg.seed, rank=rank, patches=cfg.patches, batch=B)
    loader = torch.utils.data.DataLoader(
        trainset, batch_size=B, sampler=_FromIndexSampler(start_it * B, cfg.iterations * B),
        num_workers=max(0, cfg.workers), collate_fn=ds.collate, worker_init_fn=_worker_init,
        persistent_workers=False, prefetch_factor=2 if cfg.workers > 0 else None,
    )
    stop = _Stop()
    old_handlers = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            old_handlers[sig] = signal.signal(sig, stop)
        except ValueError:  # not in the main thread
            pass

    saved_at = [start_it if cfg.resume else -1]

    def checkpoint(it: int, reason: str) -> None:
        if not is_main or saved_at[0] == it:
            return
        saved_at[0] = it
        _save_checkpoint(ckpt_path, net, average, opt, sched, scaler, it, cfg, history, head)
        export_model(average.weights(net), setup, out / MODEL_DIR, iteration=it, extra={"iteration": it},
                     license_text=cfg.license)
        _write_log(out, history)
        _write_curves(out, history)
        say(f"checkpoint at iteration {it} ({reason}): {ckpt_path}, model folder {out / MODEL_DIR}")

    def run_validation(it: int) -> dict:
        res = {}
        if is_main and dev_cases:
            t = time.perf_counter()
            export_model(average.weights(net), setup, out / MODEL_DIR, iteration=it, extra={"iteration": it},
                         license_text=cfg.license)
            try:
                res = validate(out / MODEL_DIR, dev_cases, cfg, log=say)
            except Exception as exc:  # noqa: BLE001 - a broken validation must not kill a long run
                say(f"validation failed at iteration {it}: {type(exc).__name__}: {exc}")
                _barrier(world)
                return {}
            res["val_seconds"] = round(time.perf_counter() - t, 1)
            row = {"iteration": it, **res}
            history.append(row)
            with open(out / "val.csv", "a", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(row))
                if f.tell() == 0:
                    w.writeheader()
                w.writerow(row)
            say(f"validation @{it}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                                     for k, v in res.items()))
        _barrier(world)
        return res

    it = start_it
    t_start, t_save = time.perf_counter(), time.perf_counter()
    t_fit = t_start
    window: list[float] = []
    last_loss, last_val = float("nan"), {}
    bad_steps = skipped_steps = 0
    say(f"training iterations {start_it}..{cfg.iterations}, batch {B} per rank, lr {lr:g} ({cfg.optimizer}, poly)")
    net.train()
    round_pool = ThreadPoolExecutor(max_workers=max(1, min(B, os.cpu_count() or 1)), thread_name_prefix="nnint-round")
    try:
        for batch in loader:
            t0 = time.perf_counter()
            rng_it = np.random.default_rng([cfg.seed, rank, it, 99])
            image = batch["image"].to(device)
            target = batch["target"].to(device)
            chans = batch["channels"].clone()
            prompts = [list(p) if p is not None else None for p in batch["prompts"]]
            shown = [p.copy() for p in batch["prev_seg"]]  # the mask on screen (prev_seg may be corrupted)
            agents = batch["agent"]
            srngs = [np.random.default_rng([int(s), it]) for s in batch["rng_seed"]]
            n_rounds = _rounds(rng_it, cfg.max_rounds)
            active = [p is not None for p in prompts]
            focus = [None] * B  # per sample: the error regions its corrections point at
            for _r in range(n_rounds):
                if not any(active):
                    break
                with torch.no_grad(), torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                    pred = _unwrap(model)(_net_input(image, chans, device)).argmax(1).cpu().numpy()
                tnp = batch["target"].numpy()
                todo = [b for b in range(B) if active[b]]
                # one sample per thread: the simulation is numpy/scipy work that mostly releases the
                # GIL, and it is the serial part of an iteration once the network runs on a GPU
                results = list(round_pool.map(
                    lambda b: _correction_step(tnp[b], pred[b], shown[b], prompts[b], agents[b], srngs[b], setup,
                                               cfg.correction_weight > 0), todo))
                for b, res in zip(todo, results):
                    if res is None:
                        active[b] = False
                        continue
                    corr, region, ch, shown[b] = res
                    if region is not None:
                        focus[b] = region if focus[b] is None else (focus[b] | region)
                    prompts[b].append(corr)
                    chans[b] = torch.from_numpy(ch)
            x = _net_input(image, chans, device)
            aux = None
            weight = None
            if any(f is not None for f in focus):
                w = np.ones(tuple(target.shape), np.float32)
                for b, f in enumerate(focus):
                    if f is not None:
                        w[b] += float(cfg.correction_weight) * f
                weight = torch.from_numpy(w).to(device)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                if cfg.deep_supervision:
                    loss = deep_supervision_loss(net.forward_deep_supervision(x), target, weight)
                else:
                    loss = dice_ce_loss(net(x), target, weight)
                if head is not None:
                    aux = head.loss(batch["boundary"].to(device), torch.tensor(batch["has_boundary"], device=device))
                    loss = loss + float(cfg.boundary_weight) * aux
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
            else:
                loss.backward()
            if world > 1:
                import torch.distributed as dist

                for p in params:
                    if p.grad is not None:
                        dist.all_reduce(p.grad)
                        p.grad /= world
            if scaler is not None:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(params, 12.0)
                scaler.step(opt)
                scaler.update()
            else:
                grad_norm = torch.nn.utils.clip_grad_norm_(params, 12.0)
                if torch.isfinite(grad_norm):  # identical on every rank: the gradients were all-reduced
                    opt.step()
                    bad_steps = 0
                else:
                    # one non-finite step (bf16 autocast on a CPU overflowed at 32^3 patches, session 7)
                    # would turn every weight into NaN for the rest of the run: skip it instead
                    bad_steps += 1
                    skipped_steps += 1
                    if bad_steps >= MAX_BAD_STEPS:
                        raise NnintError(
                            f"{bad_steps} training steps in a row had a non-finite loss or gradient (last at iteration "
                            f"{it + 1}); the weights are unchanged since. Resume with a lower --lr, or with --no-amp "
                            "if mixed precision is on")
            sched.step()
            average.update(net)
            it += 1
            if cfg.minutes and (it - start_it) % 25 == 0:
                now = time.perf_counter()
                left = 60 * float(cfg.minutes) - (now - t_start)
                total[0] = min(cfg.iterations, it + 1 + int(25 / max(now - t_fit, 1e-9) * max(left, 0.0)))
                t_fit = now
                if world > 1:  # every rank must stop at the same iteration: the slowest rank's estimate
                    import torch.distributed as dist

                    agreed = torch.tensor([total[0]], device=device)
                    dist.all_reduce(agreed, op=dist.ReduceOp.MIN)
                    total[0] = int(agreed.item())
            last_loss = float(loss.detach())
            window.append(time.perf_counter() - t0)
            history.append({"iteration": it, "loss": round(last_loss, 5), "lr": opt.param_groups[0]["lr"],
                            "rounds": n_rounds, "seconds": round(window[-1], 3),
                            **({"boundary_loss": round(float(aux.detach()), 5)} if aux is not None else {})})
            if it % cfg.log_every == 0 or it == total[0]:
                recent = window[-cfg.log_every:]
                elapsed = time.perf_counter() - t_start
                its = (it - start_it) / max(elapsed, 1e-9)
                eta = (total[0] - it) / max(its, 1e-9)
                if cfg.minutes:  # the schedule is fitted to end on time
                    eta = max(0.0, 60 * float(cfg.minutes) - elapsed)
                losses = [h["loss"] for h in history[-cfg.log_every:] if "loss" in h]
                lmean = np.mean([v for v in losses if math.isfinite(v)] or [float("nan")])
                blosses = [h["boundary_loss"] for h in history[-cfg.log_every:] if "boundary_loss" in h]
                btext = f"  (boundary {np.mean(blosses):.4f})" if blosses else ""
                say(f"{time.strftime('%H:%M:%S')} it {it}/{total[0]}  loss {lmean:.4f}{btext}  lr {opt.param_groups[0]['lr']:.2e}  "
                    f"{its:.3f} it/s ({np.mean(recent):.2f} s/it compute)  ETA {_fmt(eta)}"
                    + (f"  ({skipped_steps} non-finite steps skipped so far)" if skipped_steps else ""))
            if cfg.val_every and it % cfg.val_every == 0 and it < cfg.iterations:
                last_val = run_validation(it) or last_val
            due = (cfg.save_every and it % cfg.save_every == 0) or (time.perf_counter() - t_save) > 60 * cfg.save_minutes
            if world > 1:
                # every rank must checkpoint and stop at the same iteration, or the next all_reduce hangs
                import torch.distributed as dist

                flags = torch.tensor([int(bool(due)), int(stop.requested)], device=device)
                dist.all_reduce(flags)
                due = bool(flags[0].item())
                if flags[1].item() and not stop.requested:
                    stop.requested, stop.signal = True, "of another rank"
            if cfg.stop_at is not None and it >= cfg.stop_at and not stop.requested:
                stop.requested, stop.signal = True, "stop_at"
            if due or stop.requested:
                checkpoint(it, "signal" if stop.requested else "periodic")
                t_save = time.perf_counter()
            if stop.requested:
                say(f"stopped by signal {stop.signal} at iteration {it}; resume with --resume")
                break
            if it >= total[0]:  # a schedule fitted to --minutes ended before --iterations
                break
        if world > 1:
            _check_ranks_in_sync(net, say)
        if not stop.requested:
            checkpoint(it, "final")
            if cfg.val_every:
                last_val = run_validation(it) or last_val
                if is_main:
                    _write_log(out, history)
                    _write_curves(out, history)
        # no rank may tear down gloo while another still uses it ("terminate called without an
        # active exception" at exit, seen in about one run in three without this barrier)
        _barrier(world)
    finally:
        round_pool.shutdown(wait=True)
        for sig, h in old_handlers.items():
            signal.signal(sig, h)
        if world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
                # free gloo's finished work objects (tensors) while the interpreter is fully alive:
                # left to interpreter shutdown they abort the process ("terminate called without an
                # active exception", 3 of 12 two-rank runs with the barrier alone, 0 of 28 with this)
                gc.collect()
    return {"iteration": it, "loss": last_loss, **last_val, "out": str(out), "stopped": stop.requested}


def _check_ranks_in_sync(net: torch.nn.Module, say) -> None:
    """Data parallelism is only correct if every rank holds the same weights; compare a per-tensor
    checksum across ranks (min == max) and fail loudly instead of exporting one rank's drift."""
    import torch.distributed as dist

    sums = torch.stack([p.detach().double().sum() for p in net.state_dict().values() if p.is_floating_point()])
    lo, hi = sums.clone(), sums.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    if not torch.equal(lo, hi):
        bad = int((lo != hi).sum())
        raise NnintError(f"data-parallel ranks diverged: {bad} weight tensors differ between ranks "
                         "(a rank skipped or altered a gradient all-reduce); do not use this run")
    say(f"ranks in sync: {sums.numel()} weight tensors identical on all {dist.get_world_size()} ranks")


def _fmt(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(seconds)
    return f"{s // 3600}h{(s % 3600) // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def export_only(out: str | os.PathLike, folder: str | os.PathLike | None = None) -> Path:
    """Export ``OUT/checkpoint_latest.pth`` as a model folder (default ``OUT/model``)."""
    out = Path(out)
    state = torch.load(out / CHECKPOINT, map_location="cpu", weights_only=False)
    cfg = TrainConfig(**{k: v for k, v in state["config"].items() if k in attrs.fields_dict(TrainConfig)})
    setup = _model_setup(cfg)
    net = build_model(setup, cfg.seed)
    net.load_state_dict(state["network_weights"])
    average = WeightAverage(net, cfg.ema_decay)
    if "weight_average" in state:
        average.load_state_dict(state["weight_average"])
    return export_model(average.weights(net), setup, Path(folder) if folder else out / MODEL_DIR, iteration=state["iteration"],
                        license_text=cfg.license)
