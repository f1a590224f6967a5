"""The PyTorch engine: nnInteractive-format models, the official inference behaviour.

:class:`TorchEngine` implements :class:`nnint.engine.Engine` for model folders in the official
checkpoint format (docs/reference-behaviour.md, docs/torch-backend.md). It is stateless with
respect to history: every :meth:`TorchEngine.predict` receives the object's active prompts and its
current mask and returns the region it rewrote. The result is a deterministic function of
``(image, prompts, mask)``.

One prediction (§4): rasterise the prompts into the window around the newest prompt (no
full-volume prompt tensor), run one forward pass at the newest prompt's initial zoom, zoom out by
1.5x (up to 4x) while the prediction changes on the window border (AutoZoom), and, if zoomed out,
refine the coarse result at full resolution with a greedy cover of patch-sized boxes. With the
``magnify`` option (nnint's own models) the ladder may start below zoom 1, in a magnified window
(:mod:`nnint.backends.torch.magnify`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch

from nnint.backends.torch import ensemble as _ensemble
from nnint.backends.torch import evidence as _evidence
from nnint.backends.torch import magnify as _magnify
from nnint.backends.torch import refine as _refine
from nnint.backends.torch import zoom as _zoom
from nnint.backends.torch.rasterise import RasterConfig, RasterPlan, build_plan, feed, rasterise_written
from nnint.engine import PROMPT_KINDS, Capabilities, MaskUpdate, ModelSpec, answer_rules
from nnint.errors import (
    DeviceError,
    IncompatibleModelError,
    InvalidImageError,
    InvalidMaskError,
    SessionError,
    UnsupportedPromptError,
)
from nnint.prompts import Box, InitialMask, Point, Prompt, prompt_kind

__all__ = ["TorchEngine", "ZoomConstants", "prediction_center"]

log = logging.getLogger(__name__)

#: the patch size the official constants were chosen for
OFFICIAL_PATCH = 192


@attrs.frozen
class ZoomConstants:
    """Patch-derived constants of AutoZoom and refinement.

    ``official`` gives nnInteractive's values whatever the patch size (margin 24, face thresholds
    1500 / 100 voxels); ``scaled`` (nnint's default) scales them with the patch: the margin by
    ``patch / 192`` per axis and the face thresholds by ``face area / 192^2``. For a 192^3 patch
    both are identical.
    """

    margin: tuple[int, int, int] = (24, 24, 24)
    #: per axis (the faces orthogonal to that axis): changed voxels that always trigger a zoom-out
    abs_threshold: tuple[float, float, float] = (1500.0, 1500.0, 1500.0)
    #: per axis: changed voxels needed together with a relative change > ``rel_threshold``
    min_threshold: tuple[float, float, float] = (100.0, 100.0, 100.0)
    rel_threshold: float = 0.2
    opening_size: int = 5
    max_depth: int = 3

    @classmethod
    def official(cls) -> ZoomConstants:
        return cls()

    @classmethod
    def scaled(cls, patch: Sequence[int]) -> ZoomConstants:
        p = [int(v) for v in patch]
        margin = tuple(int(round(24 * v / OFFICIAL_PATCH)) for v in p)
        area = [p[1] * p[2], p[0] * p[2], p[0] * p[1]]
        ref = OFFICIAL_PATCH * OFFICIAL_PATCH
        return cls(
            margin=margin,  # type: ignore[arg-type]
            abs_threshold=tuple(1500.0 * a / ref for a in area),  # type: ignore[arg-type]
            min_threshold=tuple(100.0 * a / ref for a in area),  # type: ignore[arg-type]
        )


def _py_round_center(lo: Sequence[int], hi: Sequence[int]) -> tuple[int, int, int]:
    return tuple(int(round((a + b) / 2)) for a, b in zip(lo, hi))  # type: ignore[return-value]


def _zoom_for_extent(extent: Sequence[int], patch: Sequence[int]) -> float:
    return max(1.0, max((e + p // 3) / p for e, p in zip(extent, patch)))


def prediction_center(prompt: Prompt, patch: Sequence[int]) -> tuple[tuple[int, int, int], float] | None:
    """The centre and initial zoom factor the official session queues for a prompt (§4.3).

    Points: the (rounded) point, zoom 1. Boxes: ``round((lo + hi) / 2)`` (Python rounding), zoom
    ``max(1, max_axis((extent + patch // 3) / patch))``. Scribbles, lassos and initial masks: the
    same on the half-open bbox of the mask's voxels. None when the prompt covers no voxel.
    """
    if isinstance(prompt, Point):
        return prompt.index, 1.0
    bounds = _prompt_bounds(prompt)
    if bounds is None:
        return None
    lo, hi = bounds
    extent = [b - a for a, b in zip(lo, hi)]
    return _py_round_center(lo, hi), _zoom_for_extent(extent, patch)


def _prompt_bounds(prompt: Prompt) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """``[lo, hi)`` of a box, or of the voxels of a scribble, lasso or initial mask (None if empty)."""
    if isinstance(prompt, Box):
        return prompt.lo, prompt.hi
    nz = np.argwhere(prompt.mask)
    if nz.size == 0:
        return None
    lo = tuple(int(v + o) for v, o in zip(nz.min(0), prompt.lo))
    hi = tuple(int(v + 1 + o) for v, o in zip(nz.max(0), prompt.lo))
    return lo, hi


def _union_bounds(bounds, other):
    """The half-open box holding ``bounds`` and ``other`` (each ``(lo, hi)``; ``other`` may be None)."""
    if other is None:
        return bounds
    return ([min(a, b) for a, b in zip(bounds[0], other[0])], [max(a, b) for a, b in zip(bounds[1], other[1])])


def start_zoom(
    prompt: Prompt,
    official_zoom: float,
    patch: Sequence[int],
    magnify: float,
    mask_bounds: tuple[Sequence[int], Sequence[int]] | None = None,
) -> float:
    """The zoom AutoZoom starts at when magnification up to ``magnify`` is allowed.

    An object less than ``patch / 6`` voxels across (its largest extent, spanning the prompt's own
    voxels and ``mask_bounds``, the object's current mask ``[lo, hi)``, None when empty) gets the
    window the official rule gives a box of that extent, ``(extent + patch // 3) / patch``, without
    its floor of 1, but at most ``magnify`` times magnified. Larger objects and ``magnify == 1``
    keep the official zoom. Why the ``patch / 6`` limit: magnifying objects 16-30 voxels across
    (96^3 patch) cost the session-14 weights 0.03 Dice after a box on the dev split, while specks
    gained 0.15 (session 18).

    A point on an empty mask says nothing about size. It starts fully magnified (``1 / magnify``),
    and AutoZoom steps out from there while the answer reaches the window border. Why: the
    network answers a first click with a blob of the size it learnt in patch voxels; at zoom 1
    that is thousands of image voxels, which a speck never recovers from in five corrections
    (session 21: point + 5 on the dev split 0.656 -> 0.733, targets under 50 voxels 0.43 -> 0.74;
    the price is a small first answer on large objects, which the next clicks grow).
    """
    if magnify <= 1.0:
        return official_zoom
    if isinstance(prompt, Point):
        if mask_bounds is None:
            return 1.0 / magnify
        bounds = (prompt.index, tuple(i + 1 for i in prompt.index))
    else:
        bounds = _prompt_bounds(prompt)
        if bounds is None:
            return official_zoom
    lo, hi = _union_bounds(bounds, mask_bounds)
    if any(b - a >= p / 6 for a, b, p in zip(lo, hi, patch)):
        return official_zoom
    return max(1.0 / magnify, max((b - a + p // 3) / p for a, b, p in zip(lo, hi, patch)))


def object_window(
    prompt: Prompt,
    center: tuple[int, int, int],
    zoom: float,
    patch: Sequence[int],
    mask_bounds: tuple[Sequence[int], Sequence[int]] | None,
) -> tuple[tuple[int, int, int], float]:
    """Where AutoZoom starts for a positive correction click with ``zoom_to_object`` on.

    The official session answers every click in a 1x window centred on it and zooms out only when
    the answer changes on the window's border. On an object larger than the window (a brain, a
    liver) the network then sees a piece of it and adds a blob of its usual size per click: the
    dev split's MNI brain needed four clicks to pass Dice 0.1. Here a positive click on an object
    whose extent together with the click is over ``patch - patch // 3`` (so that the official box
    rule would zoom out) starts in the window that rule gives a box around both: centred on them,
    zoom ``(extent + patch // 3) / patch`` up to ``MAX_ZOOM``. Full-resolution refinement follows
    as after any zoomed-out pass. Anything else keeps ``(center, zoom)``.
    """
    if not (isinstance(prompt, Point) and prompt.positive and mask_bounds is not None):
        return center, zoom
    lo, hi = _union_bounds((prompt.index, tuple(i + 1 for i in prompt.index)), mask_bounds)
    z = _zoom_for_extent([b - a for a, b in zip(lo, hi)], patch)
    if z <= 1.0:
        return center, zoom
    return _py_round_center(lo, hi), min(z, _zoom.MAX_ZOOM)


def next_zoom(zoom: float) -> float:
    """One AutoZoom step out: ``1.5 x``, up to ``MAX_ZOOM``, landing on 1 when the step crosses it
    (so a ladder that starts magnified continues with the official zooms)."""
    new = min(_zoom.MAX_ZOOM, zoom * _zoom.ZOOM_STEP)
    return 1.0 if zoom < 1.0 < new else new


def _device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise DeviceError(f"unknown device {device!r} ({e}); use 'cpu' or 'cuda[:N]'") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {device!r} was requested but CUDA is not available in this PyTorch installation "
                f"(torch {torch.__version__}); use device='cpu' or install a CUDA build of PyTorch"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {device!r} was requested but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    elif dev.type != "cpu":
        raise DeviceError(f"device {device!r} is not supported by the torch backend; use 'cpu' or 'cuda[:N]'")
    return dev


_PRECISIONS = ("fp32", "bf16", "fp16", "fast")


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"fast"`` -> the fastest precision this device runs natively: bf16 on CUDA GPUs with bf16 and
    on CPUs with AVX512-BF16/AMX (2.1x faster than fp32 for the v1.0 network here, see
    docs/performance.md), fp16 on older GPUs, fp32 elsewhere. Other values are returned unchanged."""
    if precision != "fast":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu":
        probe = getattr(getattr(torch.ops, "mkldnn", None), "_is_mkldnn_bf16_supported", None)
        try:
            return "bf16" if probe is not None and probe() else "fp32"
        except RuntimeError:
            return "fp32"
    return "fp32"


class TorchEngine:
    """An nnInteractive-format model on one image.

    ``model_folder``: a :class:`~nnint.backends.torch.checkpoint.ModelFolder`.
    ``device``: ``"cpu"`` or ``"cuda[:N]"``. ``precision``: ``"fp32"`` (reference), ``"bf16"``
    (autocast, CPU or CUDA), ``"fp16"`` (CUDA autocast, as the official package runs on GPUs) or
    ``"fast"`` (the fastest of these the device runs natively, see :func:`resolve_precision`).
    ``compile``: wrap the network in ``torch.compile``. ``threads``: ``torch.set_num_threads``
    (process-wide). ``autozoom``: zoom out while the prediction touches the window border.
    ``channels_last``: run the network in ``channels_last_3d`` memory format.
    ``constants``: ``"scaled"`` or ``"official"`` (see :class:`ZoomConstants`) or an instance.
    ``gap_fill``: inside the refinement union box but outside every refinement box, keep the old
    mask (``"old"``, nnInteractive 2.6.0) or write the coarse mask (``"coarse"``, 2.5.0).
    ``official_fallback_rng``: a NumPy ``RandomState``-like object; when given, the refinement
    planner's fallback draws from it like the official package (which uses ``np.random``);
    default: nnint's deterministic fallback. ``network``: use this module instead of building the
    model folder's network (tests, compatibility harnesses). ``confine_to_box``: clear every
    predicted voxel outside the object's positive 3D boxes (:func:`nnint.engine.box_limit`; off
    by default, as in the official package; nnint's own models turn it on in their model card).
    ``one_way_corrections``: a correction point, scribble or lasso only adds (positive) or only
    removes (negative) voxels (:func:`nnint.engine.one_way_correction`; off by default, on in
    nnint's model cards).
    ``magnify``: the largest magnification AutoZoom may start at (1: never, as in the official
    package; nnint's own models set it in their model card), see :func:`start_zoom` and
    :mod:`nnint.backends.torch.magnify`.
    ``intensity_veto``: the weight of :func:`nnint.backends.torch.evidence.intensity_veto`, which
    drops predicted voxels whose intensity the predicted object does not have (0: off, as in the
    official package; nnint's own models set it in their model card).
    ``zoom_to_object``: a positive correction click on an object larger than the window starts
    AutoZoom at a window holding the object and the click (:func:`object_window`; off by default,
    as in the official package).
    ``specialists``: prompt kind -> network that answers every object whose *first* prompt is of
    that kind (for example a network trained only on sessions that open with a 3D box); other
    objects get ``network``. It must take the same input channels (model cards load it with
    ``specialist_folds``, see :meth:`from_model`).
    """

    def __init__(
        self,
        model_folder,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        compile: bool = False,
        threads: int | None = None,
        autozoom: bool = True,
        *,
        channels_last: bool = False,
        constants: str | ZoomConstants = "scaled",
        gap_fill: str = "old",
        official_fallback_rng: Any = None,
        network: torch.nn.Module | None = None,
        confine_to_box: bool = False,
        one_way_corrections: bool = False,
        magnify: float = 1.0,
        intensity_veto: float = 0.0,
        zoom_to_object: bool = False,
        specialists: dict[str, torch.nn.Module] | None = None,
    ) -> None:
        self.device = _device(device)
        if precision not in _PRECISIONS:
            raise DeviceError(f"unknown precision {precision!r}; use one of {', '.join(_PRECISIONS)}")
        precision = resolve_precision(precision, self.device)
        if precision == "fp16" and self.device.type != "cuda":
            raise DeviceError("precision 'fp16' needs a CUDA device; on the CPU use 'fp32' or 'bf16'")
        if not float(magnify) >= 1.0:
            raise ValueError(f"magnify must be a number >= 1 (1 = no magnification), got {magnify!r}")
        if not float(intensity_veto) >= 0.0:
            raise ValueError(f"intensity_veto must be a number >= 0 (0 = off), got {intensity_veto!r}")
        if gap_fill not in ("old", "coarse"):
            raise ValueError(f"gap_fill must be 'old' or 'coarse', got {gap_fill!r}")
        mf = model_folder
        if str(getattr(mf, "pad_mode_image", "constant")) != "constant":
            raise IncompatibleModelError(
                f"pad_mode_image {mf.pad_mode_image!r} is not supported (only 'constant', like the official session)"
            )
        patch = tuple(int(p) for p in mf.patch_size)
        if len(patch) != 3:
            raise IncompatibleModelError(f"the torch backend needs a 3-D patch size, the model has {patch}")
        self.model_folder = mf
        self.patch_size: tuple[int, int, int] = patch  # type: ignore[assignment]
        self.precision = precision
        self.autozoom = bool(autozoom)
        self.channels_last = bool(channels_last)
        self.gap_fill = gap_fill
        self.official_fallback_rng = official_fallback_rng
        self.confine_to_box = bool(confine_to_box)
        self.one_way_corrections = bool(one_way_corrections)
        self.magnify = float(magnify)
        self.intensity_veto = float(intensity_veto)
        self.zoom_to_object = bool(zoom_to_object)
        if isinstance(constants, ZoomConstants):
            self.constants = constants
        elif constants == "scaled":
            self.constants = ZoomConstants.scaled(patch)
        elif constants == "official":
            self.constants = ZoomConstants.official()
        else:
            raise ValueError(f"constants must be 'scaled', 'official' or a ZoomConstants, got {constants!r}")
        if threads is not None:
            torch.set_num_threads(int(threads))
        self.license: str = str(getattr(mf, "license", "unknown"))
        log.info("model %s: licence %s", getattr(mf, "path", "?"), self.license.splitlines()[0] if self.license else "")

        self.num_image_channels = int(mf.num_image_channels)
        self.num_interaction_channels = int(mf.num_interaction_channels)
        self.channel_mapping = dict(mf.channel_mapping)
        self.supported = dict(mf.supported_interactions)
        self.prev_channel = int(self.channel_mapping["prev_seg"])
        dil: set[int] = set()
        for key in ("points", "scribble"):
            if self.supported.get(key, False) and key in self.channel_mapping:
                dil.update(int(c) for c in self.channel_mapping[key])
        self.dilate_channels = sorted(dil)
        self.capabilities = self._capabilities(mf)

        net = network if network is not None else mf.build_network(self.device, torch.float32)
        net = net.to(self.device).eval()
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last_3d)
        if compile:
            net = torch.compile(net)
        self.network = net
        self.specialists: dict[str, torch.nn.Module] = {}
        for kind, module in (specialists or {}).items():
            if kind not in PROMPT_KINDS:
                raise ValueError(f"specialists: {kind!r} is not a prompt kind; use one of {', '.join(sorted(PROMPT_KINDS))}")
            module = module.to(self.device).eval()
            if self.channels_last:
                module = module.to(memory_format=torch.channels_last_3d)
            self.specialists[kind] = torch.compile(module) if compile else module
        self._active: torch.nn.Module = net

        self._source: _zoom.ImageSource | None = None
        self._config: RasterConfig | None = None
        self._plan_cache: tuple[tuple[Prompt, ...], RasterPlan] | None = None
        #: what the last predict did (for inspection and compatibility harnesses)
        self.last_run: dict = {}

    # --- construction ----------------------------------------------------------------------

    @classmethod
    def from_model(cls, spec: ModelSpec | str | Path, device: str | torch.device = "cpu", **options) -> TorchEngine:
        """Load ``spec.path`` (a model folder) with ``load_model_folder`` and build the engine.

        Options ``use_fold`` and ``checkpoint_name`` go to the loader, the rest to the constructor.
        ``use_fold`` may be a list of folds: their networks answer together, the mean of their
        softmax probabilities, as nnU-Net ensembles folds (:mod:`nnint.backends.torch.ensemble`).
        ``specialist_folds`` (prompt kind -> fold, e.g. ``{"box3d": 1}``) loads those folds as the
        constructor's ``specialists``: the fold answers objects whose first prompt is of that kind;
        a fold list (``{"box3d": [0, 1]}``) answers as a fold ensemble.
        A registered model may carry defaults in ``spec.details["engine_options"]`` (the bundled
        model runs ``precision="fast"``); options given here override them."""
        from nnint.backends.torch.checkpoint import load_model_folder

        if isinstance(spec, ModelSpec):
            options = {**dict(spec.details.get("engine_options") or {}), **options}
        path = spec.path if isinstance(spec, ModelSpec) else Path(spec)
        if path is None:
            raise IncompatibleModelError("the torch backend needs a model folder; this model has no path")
        load_kw = {k: options.pop(k) for k in ("use_fold", "checkpoint_name") if k in options}
        folds = load_kw.pop("use_fold", None)
        special = options.pop("specialist_folds", None) or {}
        if not isinstance(special, dict):
            raise ValueError(f"specialist_folds must map prompt kinds to folds, e.g. {{'box3d': 1}}, got {special!r}")
        if not isinstance(folds, (list, tuple)):
            members = [load_model_folder(path, folds, **load_kw)]
        elif not folds:
            raise ValueError("use_fold is an empty list; name at least one fold, e.g. [0, 1]")
        else:
            members = [load_model_folder(path, f, **load_kw) for f in folds]
        # a specialist may itself be a fold list: its folds answer together, like ``use_fold``
        experts = {
            kind: [load_model_folder(path, f, **load_kw) for f in (fs if isinstance(fs, (list, tuple)) else [fs])]
            for kind, fs in special.items()
        }
        if any(not ms for ms in experts.values()):
            raise ValueError(f"specialist_folds names an empty fold list: {special!r}; name at least one fold")
        for m in [*members[1:], *(m for ms in experts.values() for m in ms)]:
            if m.configuration_name != members[0].configuration_name:
                raise IncompatibleModelError(
                    f"{m.checkpoint_file} was trained with configuration {m.configuration_name!r}, "
                    f"{members[0].checkpoint_file} with {members[0].configuration_name!r}; "
                    "the folds of one model must share one configuration"
                )
        dev = _device(device)

        def network(ms):
            nets = [m.build_network(dev, torch.float32) for m in ms]
            return nets[0] if len(nets) == 1 else _ensemble.FoldEnsemble(nets)

        if len(members) > 1 and "network" not in options:
            options["network"] = network(members)
        if experts and "specialists" not in options:
            options["specialists"] = {kind: network(ms) for kind, ms in experts.items()}
        return cls(members[0], device=device, **options)

    def _capabilities(self, mf) -> Capabilities:
        kinds = set()
        sup = self.supported
        if sup.get("points"):
            kinds.add("point")
        if sup.get("bbox2d") or sup.get("bbox3d"):
            kinds.add("box2d")  # a 2-D box is taken as a bbox3d when bbox2d is not supported
        if sup.get("bbox3d"):
            kinds.add("box3d")
        if sup.get("scribble"):
            kinds.add("scribble")
        if sup.get("lasso"):
            kinds.add("lasso")
        if getattr(mf, "supports_initial_label", True):
            kinds.add("initial_mask")
        return Capabilities(
            frozenset(kinds),
            tuple(float(v) for v in mf.preferred_scribble_thickness),  # type: ignore[arg-type]
            float(mf.interaction_decay),
        )

    # --- image -------------------------------------------------------------------------------

    def set_image(self, image) -> None:
        """Prepare an :class:`~nnint.image.Image` (or a ``(z, y, x)`` / ``(c, z, y, x)`` array):
        normalisation statistics only; no copy of the volume is kept besides the caller's array.
        Raises InvalidImageError (and keeps the previous image) for NaN/inf, all-zero or constant
        images and for a channel count the model does not take."""
        array = image.array if hasattr(image, "array") else np.asarray(image)
        if array.ndim == 3:
            n_ch = 1
        elif array.ndim == 4:
            n_ch = array.shape[0]
        else:
            raise InvalidImageError(f"image must be (z, y, x) or (c, z, y, x), got shape {array.shape}")
        if n_ch != self.num_image_channels:
            raise InvalidImageError(f"the model takes {self.num_image_channels} image channel(s), the image has {n_ch}")
        mean, std, _bbox = _zoom.image_statistics(array)
        source = _zoom.ImageSource(array, mean, std)
        config = RasterConfig(
            shape=source.shape,
            channel_mapping=self.channel_mapping,
            num_interaction_channels=self.num_interaction_channels,
            supported=self.supported,
            decay=float(self.model_folder.interaction_decay),
            point_radius=float(self.model_folder.point_radius),
        )
        self._source, self._config, self._plan_cache = source, config, None

    # --- prediction --------------------------------------------------------------------------

    def _plan(self, prompts: Sequence[Prompt]) -> RasterPlan:
        assert self._config is not None
        key = tuple(prompts)
        cached = self._plan_cache
        if cached is not None:
            old, plan = cached
            if len(old) == len(key) and all(a is b for a, b in zip(old, key)):
                return plan
            if len(old) == len(key) - 1 and all(a is b for a, b in zip(old, key)):
                plan = build_plan(key[-1:], self._config, start=plan)
                self._plan_cache = (key, plan)
                return plan
        plan = build_plan(key, self._config)
        self._plan_cache = (key, plan)
        return plan

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
        return torch.autocast(self.device.type, dtype=dtype)

    def _forward(self, x: torch.Tensor | np.ndarray, win_lo: Sequence[int], size: Sequence[int]) -> np.ndarray:
        """One forward pass; returns the argmax as uint8 (patch shape), ties -> background.

        ``win_lo``, ``size``: the window in image coordinates that ``x`` shows (the intensity veto
        leaves the padding outside the image out of its statistics)."""
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
        x = x.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with self._autocast():
            logits = self._active(x)
        if self.intensity_veto > 0:
            diff = logits[0, 1].float() - logits[0, 0].float()
            assert self._source is not None
            valid = _evidence.valid_region(win_lo, size, self._source.shape, self.patch_size)
            pred = _evidence.intensity_veto(x[0, 0], diff, self.intensity_veto, valid=valid) > 0
        else:
            # argmax over two classes with ties -> background (class 0), without a strided reduction
            pred = logits[0, 1] > logits[0, 0]
        self.last_run["forwards"] = self.last_run.get("forwards", 0) + 1
        return pred.cpu().numpy().astype(np.uint8)

    def _input(self, plan: RasterPlan, mask: np.ndarray, center, zoom: float) -> _zoom.NetworkInput:
        assert self._source is not None
        if zoom < 1.0:
            return _magnify.build_magnified_input(
                self._source, plan, mask, center, zoom, self.patch_size, self.prev_channel,
                float(self.model_folder.point_radius),
            )
        return _zoom.build_network_input(
            self._source, plan, mask, center, zoom, self.patch_size, self.prev_channel, self.dilate_channels
        )

    def _border_changed(self, pred: np.ndarray, prev: np.ndarray) -> bool:
        c = self.constants
        return _zoom.border_changed(pred, prev, c.abs_threshold, c.min_threshold, c.rel_threshold)

    def predict(self, prompts: Sequence[Prompt], mask: np.ndarray) -> MaskUpdate | None:
        """Predict the object after its newest prompt (see :class:`nnint.engine.Engine`).

        Returns the rewritten region (the clipped window at zoom 1, else the clipped union box of
        the refinement boxes), or None when the newest prompt queues no prediction (an initial
        mask without ``predict``)."""
        prompts = list(prompts)
        mask = np.asarray(mask)
        update = self._predict(prompts, mask)
        if update is None:
            return None
        return answer_rules(update, mask, prompts, one_way=self.one_way_corrections, confine=self.confine_to_box)

    def _predict(self, prompts: list[Prompt], mask: np.ndarray) -> MaskUpdate | None:
        if self._source is None or self._config is None:
            raise SessionError("no image: call set_image before predict")
        if not prompts:
            raise SessionError("predict needs at least one prompt")
        if mask.shape != self._source.shape:
            raise InvalidMaskError(f"mask has shape {mask.shape}, the image {self._source.shape}")
        if mask.dtype != np.uint8:
            mask = (mask != 0).astype(np.uint8)
        for p in prompts:
            if isinstance(p, Box) and not p.is_2d and not self.supported.get("bbox3d", False):
                raise UnsupportedPromptError(
                    f"3D box {p.lo}-{p.hi} is not supported by this model (bbox3d: false); draw a 2D box on one slice"
                )
        plan = self._plan(prompts)  # raises UnsupportedPromptError before anything runs
        self._active = self.specialists.get(prompt_kind(prompts[0]), self.network)
        newest = prompts[-1]
        force_full_refine = False
        if isinstance(newest, InitialMask):
            if not newest.predict:
                return None
            force_full_refine = True
        queued = prediction_center(newest, self.patch_size)
        if queued is None:
            return None
        center, zoom = queued
        mask_bounds = _zoom.nonzero_bbox(mask) if (self.zoom_to_object or self.magnify > 1.0) else None
        if self.zoom_to_object:
            center, zoom = object_window(newest, center, zoom, self.patch_size, mask_bounds)
        if self.magnify > 1.0:
            zoom = start_zoom(newest, zoom, self.patch_size, self.magnify, mask_bounds)
        zoom = min(_zoom.MAX_ZOOM, zoom)
        self.last_run = {"center": center, "zooms": [], "forwards": 0}

        with torch.inference_mode():
            inp = self._input(plan, mask, center, zoom)
            pred = self._forward(inp.x, inp.win_lo, inp.size)
            self.last_run["zooms"].append(zoom)
            changed = self._border_changed(pred, inp.prev)
            while changed and self.autozoom:
                if zoom >= _zoom.MAX_ZOOM:
                    break
                zoom = next_zoom(zoom)
                inp = self._input(plan, mask, center, zoom)
                pred = self._forward(inp.x, inp.win_lo, inp.size)
                self.last_run["zooms"].append(zoom)
                changed = self._border_changed(pred, inp.prev)
            if zoom <= 1:
                lo, hi = _zoom.clip_box(inp.win_lo, inp.win_hi, mask.shape)
                if any(b <= a for a, b in zip(lo, hi)):
                    return None
                if zoom < 1:
                    pred = _magnify.shrink(pred, inp.size)
                sl = tuple(slice(a - w, b - w) for a, b, w in zip(lo, hi, inp.win_lo))
                self.last_run["boxes"] = []
                return MaskUpdate(lo, np.ascontiguousarray(pred[sl]))
            return self._refine(plan, mask, center, inp, pred, force_full_refine)

    def _refine(
        self,
        plan: RasterPlan,
        mask: np.ndarray,
        center,
        inp: _zoom.NetworkInput,
        pred: np.ndarray,
        force_full_refine: bool,
    ) -> MaskUpdate | None:
        shape = mask.shape
        c = self.constants
        # coarse mask over the part of the window inside the image
        clo, chi = _zoom.clip_box(inp.win_lo, inp.win_hi, shape)
        empty_window = any(b <= a for a, b in zip(clo, chi))
        coarse = None
        boxes: list = []
        if not empty_window:
            wlo = [a - w for a, w in zip(clo, inp.win_lo)]
            whi = [b - w for b, w in zip(chi, inp.win_lo)]
            coarse = _refine.upsample_coarse(pred, inp.size, wlo, whi)
            old = mask[tuple(slice(a, b) for a, b in zip(clo, chi))]
            diff = _refine.opening((coarse != old).astype(np.uint8), c.opening_size)
            plo, phi = clo, chi
            if force_full_refine:
                seg = _zoom.nonzero_bbox(mask)
                if seg is not None:
                    plo = tuple(min(a, b) for a, b in zip(clo, seg[0]))
                    phi = tuple(max(a, b) for a, b in zip(chi, seg[1]))
            if (plo, phi) != (clo, chi):
                dmap = np.zeros(tuple(b - a for a, b in zip(plo, phi)), np.uint8)
                dmap[tuple(slice(a - p, b - p) for a, b, p in zip(clo, chi, plo))] = diff
                dmap |= mask[tuple(slice(a, b) for a, b in zip(plo, phi))] != 0
            else:
                dmap = diff
                if force_full_refine:
                    dmap = dmap | (old != 0)
            fallback = (
                _refine.OfficialRandomFallback(self.official_fallback_rng)
                if self.official_fallback_rng is not None
                else None
            )
            local = _refine.plan_boxes(dmap, self.patch_size, c.margin, c.max_depth, fallback)
            boxes = [(tuple(a + p for a, p in zip(lo, plo)), tuple(b + p for b, p in zip(hi, plo))) for lo, hi in local]
        if not boxes:
            boxes = [_refine.full_box(center, self.patch_size)]
        self.last_run["boxes"] = boxes
        ulo, uhi = _refine.union_box(boxes)
        # refinement cache: prev_seg over the union box = old mask, coarse injected inside the window
        cache = _zoom.mask_crop(mask, ulo, uhi)
        if coarse is not None:
            ilo = [max(a, b) for a, b in zip(clo, ulo)]
            ihi = [min(a, b) for a, b in zip(chi, uhi)]
            if all(b > a for a, b in zip(ilo, ihi)):
                cache[tuple(slice(a - u, b - u) for a, b, u in zip(ilo, ihi, ulo))] = coarse[
                    tuple(slice(a - w, b - w) for a, b, w in zip(ilo, ihi, clo))
                ]
        ilo, ihi = _zoom.clip_box(ulo, uhi, shape)
        result = _zoom.mask_crop(mask, ulo, uhi) if self.gap_fill == "old" else None
        assert self._source is not None
        for lo, hi in boxes:
            sl = tuple(slice(a - u, b - u) for a, b, u in zip(lo, hi, ulo))
            n_img = self.num_image_channels
            x = np.empty((1, n_img + self.num_interaction_channels, *self.patch_size), np.float32)
            x[0, :n_img] = self._source.crop(lo, hi)
            stored, written = rasterise_written(plan, lo, hi)
            for ch in range(self.num_interaction_channels):
                x[0, n_img + ch] = feed(stored[ch], plan.intensity) if ch in written else 0.0
            x[0, n_img + self.prev_channel] = cache[sl]
            out = self._forward(x, lo, self.patch_size)
            # the whole box is written into the cache, also where it reaches outside the image: later
            # boxes see those predictions as prev_seg there (as in the official package)
            cache[sl] = out
            if result is not None:
                result[sl] = out
        if result is None:
            result = cache
        if any(b <= a for a, b in zip(ilo, ihi)):
            return None
        sl = tuple(slice(a - u, b - u) for a, b, u in zip(ilo, ihi, ulo))
        return MaskUpdate(ilo, np.ascontiguousarray(result[sl]))
