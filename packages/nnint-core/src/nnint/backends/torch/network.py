"""nnU-Net v2 U-Nets (``ResidualEncoderUNet``, ``PlainConvUNet``) built from plans ``arch_kwargs``.

Written from the documented behaviour of nnU-Net's ``dynamic_network_architectures`` (see
``docs/reference-behaviour.md`` §2.5-2.6); no code is taken from it. What *is* reproduced on purpose
is the module tree, because official checkpoints are plain ``state_dict``s and must load with
``load_state_dict(strict=True)``. That tree has three quirks that show up as state-dict keys:

* every conv block keeps its conv/dropout/norm/nonlin both as named attributes (``conv``, ``norm``)
  *and* inside an ``all_modules`` ``nn.Sequential`` -> each tensor appears twice
  (``...conv.weight`` and ``...all_modules.0.weight``);
* the decoder holds a reference to the encoder -> every encoder tensor appears again under
  ``decoder.encoder.*``;
* the decoder owns one 1x1 segmentation head per decoder stage (``decoder.seg_layers.N``) for deep
  supervision; inference only uses the last one, but all must exist.

``state_dict()`` does not de-duplicate shared modules, so these aliases are saved and expected.

Shapes: input ``[B, input_channels, *spatial]`` (spatial = 3 dims for Conv3d, 2 for Conv2d); each
spatial size must be divisible by the product of the strides (32 for the official model). Output:
``[B, num_classes, *spatial]`` logits, same dtype as the input (or the autocast dtype).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from nnint.errors import CheckpointError

__all__ = ["build_network", "initialize_weights", "UNet", "WindowRank", "PromptLikeness", "WINDOW_RANK_KEY",
           "PROMPT_LIKENESS_KEY", "SUPPORTED_NETWORK_CLASSES"]

_PLANS = "plans.json"

# ---------------------------------------------------------------------------------------------
# Resolving the op names stored in plans (e.g. "torch.nn.modules.conv.Conv3d").
# Only a whitelist is accepted: plans are data, and we never import arbitrary dotted paths.
# ---------------------------------------------------------------------------------------------

_CONV_OPS: dict[str, tuple[type[nn.Module], int]] = {"Conv2d": (nn.Conv2d, 2), "Conv3d": (nn.Conv3d, 3)}
_NORM_OPS: dict[str, tuple[type[nn.Module], int | None]] = {
    "InstanceNorm2d": (nn.InstanceNorm2d, 2),
    "InstanceNorm3d": (nn.InstanceNorm3d, 3),
    "BatchNorm2d": (nn.BatchNorm2d, 2),
    "BatchNorm3d": (nn.BatchNorm3d, 3),
}
_DROPOUT_OPS: dict[str, tuple[type[nn.Module], int | None]] = {
    "Dropout": (nn.Dropout, None),
    "Dropout2d": (nn.Dropout2d, 2),
    "Dropout3d": (nn.Dropout3d, 3),
}
_NONLINS: dict[str, type[nn.Module]] = {
    "LeakyReLU": nn.LeakyReLU,
    "ReLU": nn.ReLU,
    "ELU": nn.ELU,
    "GELU": nn.GELU,
    "SiLU": nn.SiLU,
    "PReLU": nn.PReLU,
    "Tanh": nn.Tanh,
}
_TRANSPOSED = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_AVG_POOLS = {2: nn.AvgPool2d, 3: nn.AvgPool3d}

SUPPORTED_NETWORK_CLASSES = ("ResidualEncoderUNet", "PlainConvUNet")
_CLASS_PREFIX = "dynamic_network_architectures.architectures.unet."


def _resolve_op(value: Any, table: dict[str, Any], what: str, optional: bool) -> Any:
    """Map a plans op spelling (``torch.nn.X`` or ``torch.nn.modules.<file>.X``) to its table entry."""
    if value is None:
        if optional:
            return None
        raise CheckpointError(
            f"plans.json architecture has no {what}; this network needs one.",
            file=_PLANS,
            key=f"architecture.arch_kwargs.{what}",
        )
    if isinstance(value, type):  # already a class (plans built in Python, not read from JSON)
        value = f"torch.nn.{value.__name__}"
    if not isinstance(value, str):
        raise CheckpointError(
            f"{what} must be a string such as 'torch.nn.{next(iter(table))}', got {value!r}.",
            file=_PLANS,
            key=f"architecture.arch_kwargs.{what}",
        )
    parts = value.split(".")
    name = parts[-1]
    ok_prefix = parts[:2] == ["torch", "nn"] and (len(parts) == 3 or (len(parts) == 5 and parts[2] == "modules"))
    if not ok_prefix or name not in table:
        raise CheckpointError(
            f"Unsupported {what} {value!r} in plans.json; supported: "
            f"{', '.join('torch.nn.' + k for k in table)}. Use a model trained with one of these.",
            file=_PLANS,
            key=f"architecture.arch_kwargs.{what}",
        )
    return table[name]


def _per_stage(value: Any, n: int, key: str) -> list:
    """nnU-Net allows a scalar for 'same in every stage'; expand it and check the length."""
    if isinstance(value, int):  # a flat list is per-stage (e.g. strides [1, 2, 2]), never broadcast
        return [value] * n
    if not isinstance(value, (list, tuple)) or len(value) != n:
        raise CheckpointError(
            f"arch_kwargs.{key} must have one entry per stage ({n}), got {value!r}.",
            file=_PLANS,
            key=f"architecture.arch_kwargs.{key}",
        )
    return list(value)


def _as_tuple(value: Any, ndim: int, key: str) -> tuple[int, ...]:
    """A kernel size / stride: int -> broadcast to ``ndim``; sequence -> must have ``ndim`` ints."""
    if isinstance(value, int):
        return (value,) * ndim
    if isinstance(value, (list, tuple)) and len(value) == ndim and all(isinstance(v, int) for v in value):
        return tuple(value)
    raise CheckpointError(
        f"arch_kwargs.{key} entry {value!r} is not an int or a list of {ndim} ints.",
        file=_PLANS,
        key=f"architecture.arch_kwargs.{key}",
    )


# ---------------------------------------------------------------------------------------------
# Building blocks. Attribute names are the state-dict contract; do not rename them.
# ---------------------------------------------------------------------------------------------


class _Ops:
    """The per-network op choices (conv type, norm, dropout, nonlinearity) with their kwargs."""

    def __init__(
        self,
        ndim: int,
        conv: type[nn.Module],
        conv_bias: bool,
        norm,
        norm_kwargs,
        dropout,
        dropout_kwargs,
        nonlin,
        nonlin_kwargs,
        nonlin_first: bool,
    ) -> None:
        self.ndim, self.conv, self.conv_bias = ndim, conv, conv_bias
        self.norm, self.norm_kwargs = norm, dict(norm_kwargs or {})
        self.dropout, self.dropout_kwargs = dropout, dict(dropout_kwargs or {})
        self.nonlin, self.nonlin_kwargs = nonlin, dict(nonlin_kwargs or {})
        self.nonlin_first = nonlin_first


class ConvNormAct(nn.Module):
    """conv -> [dropout] -> [norm] -> [nonlin] (norm and nonlin swapped when ``nonlin_first``).

    Registered as ``conv``, ``dropout``, ``norm``, ``nonlin`` plus the alias ``all_modules`` holding
    the same modules in execution order (checkpoint key compatibility; see module docstring).
    Padding is ``(k - 1) // 2`` per axis ("same" for odd kernels and stride 1).
    """

    def __init__(
        self,
        ops: _Ops,
        c_in: int,
        c_out: int,
        kernel: Sequence[int],
        stride: Sequence[int],
        bias: bool,
        *,
        norm: bool = True,
        dropout: bool = True,
        nonlin: bool = True,
    ) -> None:
        super().__init__()
        self.conv = ops.conv(
            c_in, c_out, tuple(kernel), tuple(stride), padding=tuple((k - 1) // 2 for k in kernel), bias=bias
        )
        seq: list[nn.Module] = [self.conv]
        if dropout and ops.dropout is not None:
            self.dropout = ops.dropout(**ops.dropout_kwargs)
            seq.append(self.dropout)
        if norm and ops.norm is not None:
            self.norm = ops.norm(c_out, **ops.norm_kwargs)
            seq.append(self.norm)
        if nonlin and ops.nonlin is not None:
            self.nonlin = ops.nonlin(**ops.nonlin_kwargs)
            seq.append(self.nonlin)
        if ops.nonlin_first and len(seq) >= 2 and hasattr(self, "norm") and hasattr(self, "nonlin"):
            seq[-1], seq[-2] = seq[-2], seq[-1]
        self.all_modules = nn.Sequential(*seq)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.all_modules(x)


class ConvStack(nn.Module):
    """``n`` :class:`ConvNormAct` in a row; only the first one is strided (keys ``convs.<i>``)."""

    def __init__(self, ops: _Ops, n: int, c_in: int, c_out: int, kernel, stride) -> None:
        super().__init__()
        ones = (1,) * ops.ndim
        self.convs = nn.Sequential(
            *[
                ConvNormAct(ops, c_in if i == 0 else c_out, c_out, kernel, stride if i == 0 else ones, ops.conv_bias)
                for i in range(n)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x)


class ResidualBlock(nn.Module):
    """Pre-activation-free residual block ("BasicBlockD").

    main: conv(k, stride) -> [dropout] -> norm -> nonlin -> conv(k) -> norm (no dropout);
    skip: [avg-pool(stride) if strided] -> [1x1 conv without bias -> norm, if channels change];
    out = nonlin(main + skip). The skip submodule only exists when it is not the identity.
    """

    def __init__(self, ops: _Ops, c_in: int, c_out: int, kernel, stride) -> None:
        super().__init__()
        ones = (1,) * ops.ndim
        self.conv1 = ConvNormAct(ops, c_in, c_out, kernel, stride, ops.conv_bias)
        self.conv2 = ConvNormAct(ops, c_out, c_out, kernel, ones, ops.conv_bias, dropout=False, nonlin=False)
        self.nonlin2 = ops.nonlin(**ops.nonlin_kwargs)
        skip: list[nn.Module] = []
        if any(s != 1 for s in stride):
            skip.append(_AVG_POOLS[ops.ndim](tuple(stride), tuple(stride)))
        if c_in != c_out:
            skip.append(ConvNormAct(ops, c_in, c_out, ones, ones, False, dropout=False, nonlin=False))
        self.skip = nn.Sequential(*skip) if skip else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.skip is None else self.skip(x)
        out = self.conv2(self.conv1(x))
        # In-place add saves one full-size activation at inference; under autograd keep it
        # out-of-place so that no tensor saved for backward is modified.
        out = out + residual if out.requires_grad else out.add_(residual)
        return self.nonlin2(out)


class ResidualStage(nn.Module):
    """``n`` :class:`ResidualBlock`; the first carries the stride and channel change (``blocks.<i>``)."""

    def __init__(self, ops: _Ops, n: int, c_in: int, c_out: int, kernel, stride) -> None:
        super().__init__()
        ones = (1,) * ops.ndim
        self.blocks = nn.Sequential(
            *[
                ResidualBlock(ops, c_in if i == 0 else c_out, c_out, kernel, stride if i == 0 else ones)
                for i in range(n)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class _Encoder(nn.Module):
    """Common encoder interface used by :class:`Decoder`: returns the list of stage outputs.

    Plain attributes (not modules): ``output_channels``, ``strides``, ``kernel_sizes``, ``ops``.
    """

    output_channels: list[int]
    strides: list[tuple[int, ...]]
    kernel_sizes: list[tuple[int, ...]]
    ops: _Ops

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips = []
        if getattr(self, "stem", None) is not None:
            x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


class ResidualEncoder(_Encoder):
    """Stem (one conv block, in -> stem_channels) followed by one :class:`ResidualStage` per stage."""

    def __init__(self, ops: _Ops, c_in: int, features, kernels, strides, n_blocks, stem_channels: int) -> None:
        super().__init__()
        self.ops, self.output_channels, self.strides, self.kernel_sizes = ops, list(features), strides, kernels
        self.stem = ConvStack(ops, 1, c_in, stem_channels, kernels[0], (1,) * ops.ndim)
        c = stem_channels
        stages = []
        for f, k, s, n in zip(features, kernels, strides, n_blocks):
            stages.append(ResidualStage(ops, n, c, f, k, s))
            c = f
        self.stages = nn.Sequential(*stages)


class PlainEncoder(_Encoder):
    """One :class:`ConvStack` per stage (strided first conv, no pooling), each wrapped in an
    ``nn.Sequential`` of one element (keys ``stages.<s>.0.convs.<i>``); no stem."""

    def __init__(self, ops: _Ops, c_in: int, features, kernels, strides, n_convs) -> None:
        super().__init__()
        self.ops, self.output_channels, self.strides, self.kernel_sizes = ops, list(features), strides, kernels
        self.stem = None
        stages = []
        for f, k, s, n in zip(features, kernels, strides, n_convs):
            stages.append(nn.Sequential(ConvStack(ops, n, c_in, f, k, s)))
            c_in = f
        self.stages = nn.Sequential(*stages)


class Decoder(nn.Module):
    """U-Net decoder. Stage ``i`` (``i = 0`` just above the bottleneck): transposed conv
    (kernel = stride = encoder stride, bias = conv_bias) -> concat ``[upsampled, skip]`` on channels ->
    :class:`ConvStack` (2c -> c) -> optional 1x1 seg head ``seg_layers.i``.

    ``self.encoder`` is a *reference* to the encoder, kept registered so that the checkpoint's
    ``decoder.encoder.*`` alias keys exist.
    """

    def __init__(self, encoder: _Encoder, num_classes: int, n_conv: Sequence[int]) -> None:
        super().__init__()
        self.encoder = encoder
        ops, chans = encoder.ops, encoder.output_channels
        stages, ups, heads = [], [], []
        for i in range(1, len(chans)):
            below, skip, stride = chans[-i], chans[-(i + 1)], encoder.strides[-i]
            ups.append(_TRANSPOSED[ops.ndim](below, skip, stride, stride, bias=ops.conv_bias))
            stages.append(
                ConvStack(ops, n_conv[i - 1], 2 * skip, skip, encoder.kernel_sizes[-(i + 1)], (1,) * ops.ndim)
            )
            heads.append(ops.conv(skip, num_classes, 1, 1, 0, bias=True))
        self.stages = nn.ModuleList(stages)
        self.transpconvs = nn.ModuleList(ups)
        self.seg_layers = nn.ModuleList(heads)

    def forward(self, skips: list[torch.Tensor], deep_supervision: bool = False):
        """``skips``: encoder outputs, shallowest first; consumed (emptied) to free memory early.

        Returns the full-resolution logits, or with ``deep_supervision`` the list of all heads'
        logits, full resolution first.
        """
        x = skips.pop()
        outs = []
        last = len(self.stages) - 1
        for i, (up, stage) in enumerate(zip(self.transpconvs, self.stages)):
            x = stage(torch.cat((up(x), skips.pop()), dim=1))
            if deep_supervision:
                outs.append(self.seg_layers[i](x))
            elif i == last:
                return self.seg_layers[i](x)
        return outs[::-1]


class WindowRank(nn.Module):
    """Appends the *window rank* of the image channel to the input: every voxel's rank among the
    window's voxels (the window's empirical CDF, mid-rank, scaled to [-1, 1]), from a 1,024-bin
    histogram between the window's minimum and maximum.

    Why: the image channel is z-scored over the whole volume, so in CT (air and bone inside the
    bounding box) two soft tissues 50 HU apart differ by ~0.1 and a small network trained on
    little compute learns to ignore such edges (docs/training.md, session 12). The rank spreads
    the intensities the window is made of over the whole range whatever the modality and
    windowing. It depends on the network input alone, so training and every engine compute it
    identically; it has no parameters (no state-dict keys).
    """

    bins = 1024

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            img = x[:, 0].float().reshape(x.shape[0], -1)
            lo = img.amin(1, keepdim=True)
            span = img.amax(1, keepdim=True) - lo
            idx = ((img - lo) * ((self.bins - 1) / span.clamp_min(1e-12))).round_().long().clamp_(0, self.bins - 1)
            counts = torch.zeros(img.shape[0], self.bins, device=x.device, dtype=torch.float32)
            counts.scatter_add_(1, idx, torch.ones_like(img))
            mid = counts.cumsum(1) - 0.5 * counts  # mid-rank of each bin
            rank = mid.gather(1, idx) * (2.0 / img.shape[1]) - 1.0
            rank = torch.where(span > 0, rank, torch.zeros_like(rank))  # a constant window has no order
        return torch.cat([x, rank.reshape(x.shape[0], 1, *x.shape[2:]).to(x.dtype)], 1)


class PromptLikeness(nn.Module):
    """Appends four channels: how alike each voxel's intensity is to what each kind of prompt
    covers - the positive clicks and scribbles, the negative ones, the middle of the positive box
    or lasso, and the previous mask. For a seed set with weights ``w`` and intensity mean ``m`` and
    variance ``v`` over it, a voxel of intensity ``i`` gets ``exp(-(i - m)^2 / (2 (v + 0.05^2)))``;
    no seed, zeros. ``w`` is the prompt channel's value (decay included) to the power 32: a click
    weighs its centre voxel, not its 257-voxel stamp (which falls to 0.78 one voxel out, 0.0004
    after the power), because the stamp is larger than the small targets and would compare
    with their surround.

    Intensity is the window rank (:class:`WindowRank`'s channel, appended last) with ``ranked``,
    else the image channel. The prompt channels are read in the official layout (image, previous
    mask, +box/lasso, -box/lasso, +point, -point, +scribble, -scribble), the only one nnint trains.

    Why: region growing finds many clicked targets that the CPU-trained network answers with a
    blob of typical size (docs/training.md, session 16): "same stuff as the click" is one
    comparison per voxel for region growing, but a long way for a small network to learn from
    raw intensities. No parameters (no state-dict keys); depends on the network input alone.
    """

    channels = 4
    floor = 0.05
    power = 32

    def __init__(self, ranked: bool = False) -> None:
        super().__init__()
        self.intensity_channel = -1 if ranked else 0  # WindowRank appends its channel last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            b = x.shape[0]
            inten = x[:, self.intensity_channel].float().reshape(b, -1)
            box = x[:, 2].float()
            seeds = [x[:, 4] + x[:, 6], x[:, 5] + x[:, 7], box * self._middle(box > 0), x[:, 1]]
            out = []
            for w in seeds:
                w = w.float().reshape(b, -1).clamp_min(0) ** self.power
                total = w.sum(1, keepdim=True)
                mean = (w * inten).sum(1, keepdim=True) / total.clamp_min(1e-6)
                var = (w * (inten - mean) ** 2).sum(1, keepdim=True) / total.clamp_min(1e-6)
                like = torch.exp(-0.5 * (inten - mean) ** 2 / (var + self.floor ** 2))
                out.append(torch.where(total > 1e-3, like, torch.zeros_like(like)))
            feats = torch.stack(out, 1).reshape(b, self.channels, *x.shape[2:])
        return torch.cat([x, feats.to(x.dtype)], 1)

    @staticmethod
    def _middle(inside: torch.Tensor) -> torch.Tensor:
        """The middle third, along each axis, of each sample's bounding box of ``inside``."""
        keep = torch.ones_like(inside)
        for axis in range(1, inside.ndim):
            others = tuple(a for a in range(1, inside.ndim) if a != axis)
            occupied = inside.any(dim=others) if others else inside
            n = occupied.shape[1]
            idx = torch.arange(n, device=inside.device).expand_as(occupied)
            lo = torch.where(occupied, idx, n).amin(1, keepdim=True)
            hi = torch.where(occupied, idx, -1).amax(1, keepdim=True)
            third = (hi - lo) // 3
            sel = (idx >= lo + third) & (idx <= hi - third)
            shape = [inside.shape[0]] + [n if a == axis else 1 for a in range(1, inside.ndim)]
            keep = keep & sel.reshape(shape)
        return keep & inside


class UNet(nn.Module):
    """Encoder + decoder; top-level keys ``encoder.*`` and ``decoder.*`` as in nnU-Net.

    nnint's extensions, both parameter-free input channels appended before the encoder (so it
    takes more input channels than the network is fed): ``window_rank`` (arch_kwargs
    ``nnint_window_rank``, one channel, :class:`WindowRank`) and ``prompt_likeness`` (arch_kwargs
    ``nnint_prompt_likeness``, four channels, :class:`PromptLikeness`).
    """

    def __init__(self, encoder: _Encoder, decoder: Decoder, network_class_name: str, window_rank: bool = False,
                 prompt_likeness: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.network_class_name = network_class_name
        self.window_rank = WindowRank() if window_rank else None
        self.prompt_likeness = PromptLikeness(ranked=window_rank) if prompt_likeness else None

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        if self.window_rank is not None:
            x = self.window_rank(x)
        return x if self.prompt_likeness is None else self.prompt_likeness(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[B, C_in, *spatial]`` -> logits ``[B, num_classes, *spatial]``."""
        return self.decoder(self.encoder(self._input(x)))

    def forward_deep_supervision(self, x: torch.Tensor) -> list[torch.Tensor]:
        """All segmentation heads (for training), full resolution first, each halving in size."""
        return self.decoder(self.encoder(self._input(x)), deep_supervision=True)


def initialize_weights(net: nn.Module, neg_slope: float = 1e-2) -> nn.Module:
    """nnU-Net's training initialisation, in place: He-normal (``a = neg_slope``) for every
    (transposed) conv weight, zero conv biases, and for residual blocks a zero weight and bias in
    the norm before the addition (so each block starts as its skip path). Returns ``net``.

    Applied with ``nn.Module.apply`` (children before parents, the encoder a second time through
    ``decoder.encoder``), so the random stream is consumed exactly as in nnU-Net: with the same
    ``torch.manual_seed`` both produce identical weights.
    """
    convs = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)

    def init(m: nn.Module) -> None:
        if isinstance(m, convs):
            nn.init.kaiming_normal_(m.weight, a=neg_slope)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, ResidualBlock) and getattr(getattr(m.conv2, "norm", None), "weight", None) is not None:
            nn.init.zeros_(m.conv2.norm.weight)
            nn.init.zeros_(m.conv2.norm.bias)

    return net.apply(init)


# ---------------------------------------------------------------------------------------------
# Plans -> module
# ---------------------------------------------------------------------------------------------

# The constructor keywords of the two nnU-Net classes; anything else in arch_kwargs would make
# nnU-Net itself fail, so it is rejected rather than ignored.
_COMMON_KEYS = {
    "n_stages",
    "features_per_stage",
    "conv_op",
    "kernel_sizes",
    "strides",
    "n_conv_per_stage_decoder",
    "conv_bias",
    "norm_op",
    "norm_op_kwargs",
    "dropout_op",
    "dropout_op_kwargs",
    "nonlin",
    "nonlin_kwargs",
    "deep_supervision",
}
_KEYS = {
    "ResidualEncoderUNet": _COMMON_KEYS | {"n_blocks_per_stage", "block", "bottleneck_channels", "stem_channels"},
    "PlainConvUNet": _COMMON_KEYS | {"n_conv_per_stage", "nonlin_first"},
}
# nnint's own extension (nnU-Net rejects it, rightly: it cannot run such a model): see WindowRank
WINDOW_RANK_KEY = "nnint_window_rank"
PROMPT_LIKENESS_KEY = "nnint_prompt_likeness"


def build_network(arch: dict, input_channels: int, num_classes: int) -> UNet:
    """Build the network described by a plans configuration's ``architecture`` entry.

    ``arch`` = ``{"network_class_name": "dynamic_network_architectures.architectures.unet.
    ResidualEncoderUNet", "arch_kwargs": {...}, "_kw_requires_import": [...]}``. The result is in
    training mode with PyTorch's default initialisation (call :func:`initialize_weights` before
    training from scratch), float32, on the CPU; its
    ``state_dict()`` keys and shapes equal those of the corresponding nnU-Net module.

    Raises :class:`CheckpointError` (file ``plans.json``) for unsupported classes, ops or kwargs.
    """
    if not isinstance(arch, dict):
        raise CheckpointError(
            "plans.json configuration 'architecture' must be an object.", file=_PLANS, key="architecture"
        )
    cls = arch.get("network_class_name")
    # nnU-Net falls back to looking the class up by its last name component when the dotted path
    # does not import (old plans say "...architectures.residual_unet.ResidualEncoderUNet"), so do we.
    short = cls.rsplit(".", 1)[-1] if isinstance(cls, str) else cls
    if short not in SUPPORTED_NETWORK_CLASSES:
        raise CheckpointError(
            f"Unsupported network class {cls!r}; nnint implements "
            f"{', '.join(_CLASS_PREFIX + c for c in SUPPORTED_NETWORK_CLASSES)}.",
            file=_PLANS,
            key="architecture.network_class_name",
        )
    kw = arch.get("arch_kwargs")
    if not isinstance(kw, dict):
        raise CheckpointError(
            "plans.json architecture has no 'arch_kwargs' object.", file=_PLANS, key="architecture.arch_kwargs"
        )
    for k, v in kw.items():
        if k not in _KEYS[short] and k not in (WINDOW_RANK_KEY, PROMPT_LIKENESS_KEY):
            raise CheckpointError(
                f"Unsupported arch_kwargs entry {k}={v!r} for {short}.",
                file=_PLANS,
                key=f"architecture.arch_kwargs.{k}",
            )
    for req in ("n_stages", "features_per_stage", "conv_op", "kernel_sizes", "strides", "n_conv_per_stage_decoder"):
        if req not in kw:
            raise CheckpointError(
                f"arch_kwargs lacks {req!r}; the plans file is incomplete.",
                file=_PLANS,
                key=f"architecture.arch_kwargs.{req}",
            )
    if not isinstance(input_channels, int) or input_channels < 1 or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"input_channels and num_classes must be positive ints, got {input_channels}, {num_classes}")
    rank, likeness = kw.get(WINDOW_RANK_KEY, False), kw.get(PROMPT_LIKENESS_KEY, False)
    for key, value in ((WINDOW_RANK_KEY, rank), (PROMPT_LIKENESS_KEY, likeness)):
        if not isinstance(value, bool):
            raise CheckpointError(f"{key} must be true or false, got {value!r}.", file=_PLANS, key=f"architecture.arch_kwargs.{key}")
    c_in = input_channels + int(rank) + PromptLikeness.channels * int(likeness)

    conv, ndim = _resolve_op(kw["conv_op"], _CONV_OPS, "conv_op", optional=False)
    norm = _resolve_op(kw.get("norm_op"), _NORM_OPS, "norm_op", optional=True)
    dropout = _resolve_op(kw.get("dropout_op"), _DROPOUT_OPS, "dropout_op", optional=True)
    nonlin = _resolve_op(kw.get("nonlin"), _NONLINS, "nonlin", optional=True)
    for name, entry in (("norm_op", norm), ("dropout_op", dropout)):
        if entry is not None and entry[1] not in (None, ndim):
            raise CheckpointError(
                f"{name} is {entry[1]}-D but conv_op is {ndim}-D.", file=_PLANS, key=f"architecture.arch_kwargs.{name}"
            )
    if short == "ResidualEncoderUNet":
        if nonlin is None:  # the residual block applies a nonlinearity after the addition
            raise CheckpointError(
                "ResidualEncoderUNet needs a nonlin.", file=_PLANS, key="architecture.arch_kwargs.nonlin"
            )
        block = kw.get("block")
        if block is not None and str(getattr(block, "__name__", block)).rsplit(".", 1)[-1] != "BasicBlockD":
            raise CheckpointError(
                f"Only BasicBlockD residual blocks are supported, got {block!r}.",
                file=_PLANS,
                key="architecture.arch_kwargs.block",
            )
        if kw.get("bottleneck_channels") is not None:
            raise CheckpointError(
                "bottleneck_channels is only used by BottleneckD blocks, which are unsupported.",
                file=_PLANS,
                key="architecture.arch_kwargs.bottleneck_channels",
            )

    n = kw["n_stages"]
    if not isinstance(n, int) or isinstance(n, bool) or n < 2:  # a U-Net needs a skip and a decoder stage
        raise CheckpointError(
            f"n_stages must be an int >= 2, got {n!r}.", file=_PLANS, key="architecture.arch_kwargs.n_stages"
        )
    features = [int(f) for f in _per_stage(kw["features_per_stage"], n, "features_per_stage")]
    kernels = [_as_tuple(k, ndim, "kernel_sizes") for k in _per_stage(kw["kernel_sizes"], n, "kernel_sizes")]
    strides = [_as_tuple(s, ndim, "strides") for s in _per_stage(kw["strides"], n, "strides")]
    dec = _per_stage(kw["n_conv_per_stage_decoder"], n - 1, "n_conv_per_stage_decoder")
    ops = _Ops(
        ndim,
        conv,
        bool(kw.get("conv_bias", False)),
        norm and norm[0],
        kw.get("norm_op_kwargs"),
        dropout and dropout[0],
        kw.get("dropout_op_kwargs"),
        nonlin,
        kw.get("nonlin_kwargs"),
        bool(kw.get("nonlin_first", False)),
    )

    if short == "ResidualEncoderUNet":
        if "n_blocks_per_stage" not in kw:
            raise CheckpointError(
                "arch_kwargs lacks 'n_blocks_per_stage'.",
                file=_PLANS,
                key="architecture.arch_kwargs.n_blocks_per_stage",
            )
        blocks = _per_stage(kw["n_blocks_per_stage"], n, "n_blocks_per_stage")
        stem = kw.get("stem_channels") or features[0]
        encoder: _Encoder = ResidualEncoder(ops, c_in, features, kernels, strides, blocks, int(stem))
    else:
        if "n_conv_per_stage" not in kw:
            raise CheckpointError(
                "arch_kwargs lacks 'n_conv_per_stage'.", file=_PLANS, key="architecture.arch_kwargs.n_conv_per_stage"
            )
        convs = _per_stage(kw["n_conv_per_stage"], n, "n_conv_per_stage")
        encoder = PlainEncoder(ops, c_in, features, kernels, strides, convs)
    return UNet(encoder, Decoder(encoder, num_classes, dec), short, window_rank=rank, prompt_likeness=likeness)
