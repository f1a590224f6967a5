"""Simulated users for ``nnint evaluate``: who prompts, where, and how they correct.

A *protocol* is registered through the ``nnint_register_protocols`` hook as
``register(name, factory)``. For one target (one label of one case) the harness calls::

    user = factory(gt, rng=rng, spacing=spacing_zyx, capabilities=engine.capabilities)
    prompt = user.first()            # the initial prompt
    prompt = user.next(pred)         # one correction from the current prediction, or None

``gt`` is the target's binary mask (z, y, x), ``rng`` a seeded :class:`numpy.random.Generator`
(one per case and target, so every model sees the same initial prompt), ``spacing`` the voxel size
in mm (z, y, x). The factory raises :class:`~nnint.errors.UnsupportedPromptError` if the engine
cannot take the prompts the protocol needs. ``user.variant`` names what was chosen (for example
``"box3d"`` or ``"box2d"``); the harness records it.

Built-in protocols (registered by :mod:`nnint.default_plugins.protocols`):

``box+clicks``
    The CVPR 2025 SegFM3D protocol. The initial prompt is the challenge box: the tight 2D box on the
    middle occupied z slice, enlarged by ``int(s * dim / 256)`` pixels on every side, ``s`` uniform
    in 0..5. It is given as a **3D box** (that 2D box extruded over the first..last occupied z slice)
    when the engine takes ``box3d``, else as the **2D box** on the middle slice (``variant`` says
    which). Corrections are CVPR clicks: at the deepest voxel (EDT in voxel units) of the largest
    26-connected error component, positive where the ground truth is set.
``points``
    An initial positive click at the deepest voxel of the target, then CVPR clicks.
``scribble``, ``lasso``, ``box2d``
    nnInteractive-paper style 2D prompts. The initial prompt is drawn on the slice (any of the three
    axes) where the target's largest component has its largest cross-section. Each correction is
    drawn on the slice where the *largest* error component (false negatives and false positives
    labelled separately) has its largest cross-section: positive over missed foreground, negative
    over false positives. Scribbles use the engine's preferred thickness (in-plane mean); lassos are
    closed, dilated and slightly warped outlines; boxes are the region's box with each side moved
    by up to 10 % of its extent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol as _Protocol
from typing import runtime_checkable

import attrs
import numpy as np

from nnint.engine import Capabilities
from nnint.errors import PluginError, UnsupportedPromptError
from nnint.evaluate import clicks as _clicks
from nnint.prompts import Box, InitialMask, Lasso, Point, Prompt, Scribble, prompt_kind

__all__ = [
    "SimulatedUser",
    "ProtocolSpec",
    "registered_protocols",
    "get_protocol",
    "describe_prompt",
    "BoxClicksUser",
    "PointsUser",
    "SliceUser",
    "box_clicks",
    "points",
    "scribble",
    "lasso",
    "box2d",
]


@runtime_checkable
class SimulatedUser(_Protocol):
    """One simulated user segmenting one target."""

    #: what the user does, as recorded in results.csv (e.g. "box3d", "box2d", "scribble")
    variant: str

    def first(self) -> Prompt:
        """The initial prompt."""

    def next(self, pred: np.ndarray) -> Prompt | None:
        """One correction given the current prediction (z, y, x, 0/1), or None if nothing is wrong."""


#: ``factory(gt, *, rng, spacing, capabilities) -> SimulatedUser``
ProtocolFactory = Callable[..., SimulatedUser]


@attrs.frozen
class ProtocolSpec:
    name: str
    factory: ProtocolFactory
    description: str = ""


def registered_protocols() -> dict[str, ProtocolSpec]:
    """Every protocol registered through the ``nnint_register_protocols`` hook, by name."""
    from nnint.plugins import get_plugin_manager

    found: dict[str, ProtocolSpec] = {}

    def register(name, factory, description: str | None = None) -> None:
        if not isinstance(name, str) or not name or not callable(factory):
            raise PluginError(f"nnint_register_protocols: register(name, factory) got {name!r}, {factory!r}")
        doc = description if description is not None else (factory.__doc__ or "").strip().split("\n")[0]
        found[name] = ProtocolSpec(name, factory, doc)

    get_plugin_manager().hook.nnint_register_protocols(register=register)
    return found


def get_protocol(name: str) -> ProtocolSpec:
    found = registered_protocols()
    if name not in found:
        raise PluginError(f"unknown protocol {name!r}; available: {', '.join(sorted(found)) or 'none'}")
    return found[name]


def describe_prompt(prompt: Prompt | None) -> str:
    """A short label for results: ``box3d+``, ``point+``, ``point-``, ``scribble-``, ``initial_mask``, ``none``."""
    if prompt is None:
        return "none"
    kind = prompt_kind(prompt)
    if isinstance(prompt, InitialMask):
        return kind
    return f"{kind}{'+' if prompt.positive else '-'}"


def _require(capabilities: Capabilities, kinds: Sequence[str], protocol: str) -> None:
    missing = [k for k in kinds if k not in capabilities.prompt_kinds]
    if missing:
        raise UnsupportedPromptError(
            f"protocol {protocol!r} needs {', '.join(missing)} prompts but the model supports "
            f"{sorted(capabilities.prompt_kinds)}; pick another --protocol"
        )


def _binary(gt) -> np.ndarray:
    gt = np.asarray(gt)
    if gt.ndim != 3:
        raise ValueError(f"gt must be a 3D (z, y, x) mask, got shape {gt.shape}")
    return gt.astype(bool)


def _click_prompt(pred, gt, rng) -> Point | None:
    click = _clicks.next_click(np.asarray(pred) != 0, gt, rng=rng)
    return None if click is None else Point(click.zyx, click.positive)


# --- CVPR box + clicks, and points ---------------------------------------------------------------


class BoxClicksUser:
    """CVPR 2025: the challenge box (3D if the engine takes it, else 2D on the middle slice), then clicks."""

    def __init__(self, gt, *, rng: np.random.Generator, spacing=None, capabilities: Capabilities, box3d: bool | None = None):
        self.gt = _binary(gt)
        self.rng = rng
        kinds = capabilities.prompt_kinds
        if box3d is None:
            box3d = "box3d" in kinds
        need = ["box3d" if box3d else "box2d", "point"]
        _require(capabilities, need, "box+clicks")
        self.variant = "box3d" if box3d else "box2d"

    def first(self) -> Prompt:
        box = _clicks.initial_box2d(self.gt, self.rng, axis=0)
        if self.variant == "box3d":
            lo, hi = box.box3d
            return Box(lo, hi)
        return Box(box.lo, box.hi)

    def next(self, pred) -> Prompt | None:
        return _click_prompt(pred, self.gt, self.rng)


class PointsUser:
    """A click at the deepest voxel of the target, then CVPR clicks."""

    variant = "points"

    def __init__(self, gt, *, rng: np.random.Generator, spacing=None, capabilities: Capabilities):
        self.gt = _binary(gt)
        self.rng = rng
        _require(capabilities, ["point"], "points")

    def first(self) -> Prompt:
        click = _clicks.initial_point(self.gt, self.rng)
        return Point(click.zyx, True)

    def next(self, pred) -> Prompt | None:
        return _click_prompt(pred, self.gt, self.rng)


# --- paper-style 2D prompts --------------------------------------------------------------------


class SliceUser:
    """nnInteractive-paper style: one 2D prompt kind (scribble, lasso or box2d) on axis-aligned slices.

    ``axis``: None (default) lets the user pick any of the three slice orientations (the one with
    the largest cross-section); 0 restricts prompts to axial (z) slices. ``component``: which error
    component a correction targets, "largest" (default) or "weighted" (random, proportional to
    size, the paper's training rule).
    """

    def __init__(
        self,
        gt,
        *,
        rng: np.random.Generator,
        spacing=None,
        capabilities: Capabilities,
        kind: str,
        axis: int | None = None,
        component: str = "largest",
    ):
        if kind not in ("scribble", "lasso", "box2d"):
            raise ValueError(f"kind must be scribble, lasso or box2d, got {kind!r}")
        _require(capabilities, [kind], kind)
        self.gt = _binary(gt)
        self.rng = rng
        self.kind = kind
        self.variant = kind
        self.axis = axis
        self.component = component
        thick = capabilities.preferred_scribble_thickness
        # the stroke is drawn in a plane: use the mean of the preferred in-plane thicknesses
        self.thickness = float(np.mean(thick)) if thick else 2.0

    def _prompt(self, where: _clicks.ErrorSlice) -> Prompt:
        axis, index, region, positive = where.axis, where.index, where.region, where.positive
        if self.kind == "box2d":
            (r0, c0), (r1, c1) = _clicks.simulate_box2d(region, self.rng)
            lo2, hi2 = [r0, c0], [r1, c1]
            lo, hi = _clicks.slice_box(lo2, hi2, axis, index)
            return Box(lo, hi, positive)
        if self.kind == "scribble":
            mask2d = _clicks.simulate_scribble(region, self.rng, thickness=self.thickness)
            cls = Scribble
        else:
            mask2d = _clicks.simulate_lasso(region, self.rng)
            if not positive:
                # a person does not lasso the object to remove a false-positive rim around it:
                # a negative lasso leaves out the ground truth (the simulator's closing and hole
                # filling would otherwise swallow the object inside a ring of false positives)
                truth = np.take(self.gt, index, axis=axis)
                mask2d = (mask2d.astype(bool) & ~truth) | region
            cls = Lasso
        crop, (lo, _hi) = _clicks.slice_crop(mask2d, axis, index)
        return cls(crop, lo, positive)

    def first(self) -> Prompt:
        where = _clicks.pick_error_slice(np.zeros_like(self.gt), self.gt, self.rng, self.axis, component="largest")
        if where is None:
            raise ValueError("the target is empty; there is nothing to prompt")
        return self._prompt(where)

    def next(self, pred) -> Prompt | None:
        where = _clicks.pick_error_slice(
            np.asarray(pred) != 0, self.gt, self.rng, self.axis, component=self.component  # type: ignore[arg-type]
        )
        return None if where is None else self._prompt(where)


# --- factories (what the default plugin registers) ------------------------------------------------


def box_clicks(gt, *, rng, spacing=None, capabilities, **options) -> BoxClicksUser:
    """CVPR 2025: challenge box (3D, or 2D on the middle slice without box3d support), then clicks at the largest error."""
    return BoxClicksUser(gt, rng=rng, spacing=spacing, capabilities=capabilities, **options)


def points(gt, *, rng, spacing=None, capabilities, **options) -> PointsUser:
    """A click at the deepest voxel of the target, then clicks at the largest error (CVPR rule)."""
    return PointsUser(gt, rng=rng, spacing=spacing, capabilities=capabilities, **options)


def scribble(gt, *, rng, spacing=None, capabilities, **options) -> SliceUser:
    """Scribbles on the slice of largest cross-section, then on the slice of the largest error (+/-)."""
    return SliceUser(gt, rng=rng, spacing=spacing, capabilities=capabilities, kind="scribble", **options)


def lasso(gt, *, rng, spacing=None, capabilities, **options) -> SliceUser:
    """Lassos on the slice of largest cross-section, then on the slice of the largest error (+/-)."""
    return SliceUser(gt, rng=rng, spacing=spacing, capabilities=capabilities, kind="lasso", **options)


def box2d(gt, *, rng, spacing=None, capabilities, **options) -> SliceUser:
    """2D boxes on the slice of largest cross-section, then on the slice of the largest error (+/-)."""
    return SliceUser(gt, rng=rng, spacing=spacing, capabilities=capabilities, kind="box2d", **options)


BUILTIN = {"box+clicks": box_clicks, "points": points, "scribble": scribble, "lasso": lasso, "box2d": box2d}
