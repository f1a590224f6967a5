"""Training data: cases, cached preprocessing, target sampling and patch + first-prompt samples.

Sources (``--data``, repeatable):

* an nnU-Net raw dataset, a folder of them (e.g. ``data/raw``) or a manifest folder -- read by
  :mod:`nnint.evaluate.data` (splits from ``splits.json`` / ``splits_final.json``: ``train`` for
  training, ``dev``/``val`` for validation; without a splits file every 10th case is held out);
* ``synthetic:N`` (optionally ``synthetic:N:SEED`` or ``synthetic:N:SEED:EDGE``) -- N procedural
  volumes from :mod:`nnint.train.synthetic` (CT/MR/microscopy-like, about 64-144 voxels per axis,
  or scaled to a largest edge of about EDGE), generated once into the cache; every 10th is dev;
* ``pack:DIR`` -- a case pack written by :func:`write_pack`: already preprocessed training cases as
  compressed ``.npz`` files (normalised image in float16, label map, targets, licence flag), so a
  machine without the raw data or its readers (a rented GPU) can train on them; all are training
  cases.

Each case is preprocessed once into ``CACHE/<case>/``: the image normalised exactly as at
inference (:func:`nnint.train.augment.normalise`) as float32 ``.npy``, the label map as ``.npy``
(optionally a supervoxel pseudo-label map), and ``meta.json`` with every target (label value, voxel
count, bounding box). Samples read patches through memory maps, so datasets larger than memory work.

A sample (:meth:`TrainSet.sample`) is a pure function of ``(seed, rank, index)``:

1. a case (uniform) and a target in it; every label value is a target (class-agnostic), chosen
   with probability proportional to ``voxels ** -0.25`` so small structures are not drowned out;
   sometimes one connected component of it, sometimes a supervoxel pseudo-label instead;
2. a window: the engine's zoom rule ``z = max(1, (extent + P/3) / P)`` for a box around the target
   (the view the network gets for a box/initial-mask prompt on a large object), or ``z = 1`` with
   a window around a point inside the target (the view for a click; large targets are cut by the
   window, as at inference); a share ``p_big_click`` of samples is always a click (or scribble /
   lasso) on a target larger than the window, whose answer fills the window to its borders. A
   first click is always at the window's centre, as in the engine (session 12);
3. zoom 1: spatial + intensity augmentation, then the first prompt simulated on the patch;
   zoom > 1: the first prompt is simulated at full resolution and rasterised, then the window is
   brought down to ``P`` exactly like the engine does (image trilinear; point/scribble channels
   max-dilated by ``round_to_nearest_odd(2z - 1)``; all prompt channels and prev_seg area-averaged),
   then flips / 90-degree rotations and intensity augmentation.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import attrs
import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from nnint.errors import NnintError
from nnint.train import augment, simulate

__all__ = ["CaseRef", "prepare_cases", "write_pack", "TrainSet", "SampleConfig", "sample_config_for", "collate", "contrast_to_noise", "label_boundaries", "round_to_nearest_odd", "area_matrix", "zoom_channels"]


@attrs.frozen
class CaseRef:
    """A cached, preprocessed case."""

    name: str
    folder: Path
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    #: list of [value, voxels, [z0, y0, x0, z1, y1, x1]]
    targets: list = attrs.field(eq=False)
    sv_targets: list = attrs.field(eq=False, factory=list)

    def image(self) -> np.ndarray:
        return np.load(self.folder / "image.npy", mmap_mode="r")

    def labels(self) -> np.ndarray:
        return np.load(self.folder / "labels.npy", mmap_mode="r")

    def raw(self) -> np.ndarray:
        return np.load(self.folder / "raw.npy")

    def sv_labels(self) -> np.ndarray:
        return np.load(self.folder / "sv.npy", mmap_mode="r")


def _safe(name: str) -> str:
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[-60:]
    return f"{keep}-{digest}"


def _targets(labels: np.ndarray, min_voxels: int = 8) -> list:
    out = []
    objs = ndi.find_objects(labels.astype(np.int32, copy=False))
    counts = np.bincount(labels.ravel().astype(np.int64))
    for v, sl in enumerate(objs, start=1):
        if sl is None or counts[v] < min_voxels:
            continue
        out.append([int(v), int(counts[v]), [s.start for s in sl] + [s.stop for s in sl]])
    return out


def _signature(how) -> str:
    """What a cached case was made from: the files' size and mtime (so a regenerated dataset is
    re-prepared), or the synthetic generator's parameters."""
    if how[0] == "synthetic":
        from nnint.train.synthetic import VERSION

        return f"synthetic-v{VERSION}:{how[1]}:{how[2]}:{how[3]}"
    if how[0] == "pack":
        st = Path(how[1]).stat()
        return f"{how[1]}:{st.st_size}:{int(st.st_mtime)}"
    case = how[1]
    parts = []
    for p in (case.image, case.label):
        st = Path(p).stat()
        parts.append(f"{p}:{st.st_size}:{int(st.st_mtime)}")
    return "|".join(parts)


def _write_case(folder: Path, name: str, image: np.ndarray, labels: np.ndarray, spacing, sv: bool,
                keep_raw: bool = False, signature: str = "") -> CaseRef:
    tmp = folder.with_name(folder.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    np.save(tmp / "image.npy", augment.normalise(image))
    if keep_raw:  # validation runs the real engine, which normalises the original image itself
        np.save(tmp / "raw.npy", np.asarray(image))
    labels = np.asarray(labels)
    ltype = np.uint8 if labels.max() < 256 else np.uint16 if labels.max() < 65536 else np.int32
    np.save(tmp / "labels.npy", labels.astype(ltype))
    meta = {"name": name, "shape": list(labels.shape), "spacing": [float(s) for s in spacing],
            "targets": _targets(labels), "signature": signature}
    if sv:
        from nnint.train.supervoxels import supervoxels

        svl = supervoxels(np.asarray(image), spacing)
        np.save(tmp / "sv.npy", svl.astype(np.uint16))
        meta["sv_targets"] = _targets(svl)
    return _commit_case(tmp, folder, meta)


def _commit_case(tmp: Path, folder: Path, meta: dict) -> CaseRef:
    """Write ``meta.json`` into the finished ``tmp`` case folder and move it to ``folder`` (a case is
    never half-written in the cache)."""
    (tmp / "meta.json").write_text(json.dumps(meta))
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    tmp.rename(folder)
    return _ref(folder)


def _ref(folder: Path) -> CaseRef:
    meta = json.loads((folder / "meta.json").read_text())
    return CaseRef(meta["name"], folder, tuple(meta["shape"]), tuple(meta["spacing"]), meta["targets"],
                   meta.get("sv_targets", []))


def _provenance(src: str) -> dict | None:
    """The ``provenance.json`` written by ``nnint.train.prepare`` for ``src`` (a folder of datasets or
    one dataset inside such a folder), or None."""
    for folder in (Path(src), Path(src).parent):
        f = folder / "provenance.json"
        if f.is_file():
            return json.loads(f.read_text())
    return None


def _redistributable(name: str, provenance: dict | None, src: str) -> bool:
    if provenance is None:
        raise NnintError(f"--redistributable-only: {src} has no provenance.json (written by "
                         "`python -m nnint.train.prepare`), so the licence of its cases is unknown")
    # keys are "DatasetXXX_Name/case"; a single dataset folder names its cases without the prefix
    entry = provenance.get(name, provenance.get(f"{Path(src).name}/{name}"))
    if entry is None:
        raise NnintError(f"--redistributable-only: case {name!r} of {src} is not in its provenance.json")
    return bool(entry.get("redistributable", False))


def _list_sources(data: list[str], split: str, redistributable_only: bool = False) -> list[tuple[str, object]]:
    """(case name, loader) pairs for the given split ('train' or 'dev').

    ``redistributable_only`` keeps only cases whose provenance marks them redistributable (synthetic
    cases always are): what a model that will be shipped may be trained on."""
    from nnint.evaluate.data import DataError, load_case, open_dataset

    out: list[tuple[str, object]] = []
    for src in data:
        if src.startswith("synthetic:"):
            parts = src.split(":")
            n = int(parts[1])
            seed = int(parts[2]) if len(parts) > 2 else 0
            edge = int(parts[3]) if len(parts) > 3 else 0
            for i in range(n):
                is_dev = i % 10 == 9
                if (split == "dev") != is_dev:
                    continue
                tag = f"synthetic{seed}" + (f"e{edge}" if edge else "")
                out.append((f"{tag}/case{i:04d}", ("synthetic", seed, i, edge)))
            continue
        if src.startswith("pack:"):
            if split == "train":
                out.extend(_pack_sources(Path(src[len("pack:"):]), redistributable_only))
            continue
        try:
            ds = open_dataset(src, split="train" if split == "train" else "dev")
            cases = list(ds.cases)
            if split == "train":
                # a "train" split that equals everything (no splits file): hold out every 10th case
                try:
                    dev = {c.name for c in open_dataset(src, split="dev").cases}
                except DataError:
                    dev = None
                if dev is None:
                    cases = [c for i, c in enumerate(cases) if i % 10 != 9]
        except DataError:
            if split == "dev":
                all_cases = list(open_dataset(src).cases)
                cases = [c for i, c in enumerate(all_cases) if i % 10 == 9]
            else:
                raise
        if redistributable_only:
            prov = _provenance(src)
            cases = [c for c in cases if _redistributable(c.name, prov, src)]
        for c in cases:
            out.append((c.name, ("file", c, load_case)))
    return out


# --- case packs: preprocessed cases that travel without the raw data ----------------------------


def write_pack(refs: list[CaseRef], out: str | os.PathLike, redistributable: dict[str, bool]) -> list[Path]:
    """Write cached cases as a case pack (``--data pack:OUT``): one compressed ``.npz`` per case
    with the normalised image in float16 (its 11-bit mantissa is far finer than the intensity
    augmentation; 4x smaller than the float32 cache after compression), the label map, and the
    case's meta (targets, spacing, and ``redistributable`` from the source's provenance, so
    ``--redistributable-only`` keeps working on a machine that has no provenance files)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for ref in refs:
        meta = json.loads((ref.folder / "meta.json").read_text())
        meta = {k: v for k, v in meta.items() if k != "signature"}
        meta["redistributable"] = bool(redistributable[ref.name])
        f = out / f"{ref.folder.name}.npz"
        np.savez_compressed(f, image=np.asarray(ref.image(), np.float16), labels=np.asarray(ref.labels()),
                            meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
        written.append(f)
    return written


def _pack_meta(f: Path) -> dict:
    with np.load(f) as z:
        return json.loads(z["meta"].tobytes().decode())


def _pack_sources(folder: Path, redistributable_only: bool) -> list[tuple[str, object]]:
    files = sorted(folder.glob("*.npz"))
    if not files:
        raise NnintError(f"pack:{folder}: no .npz case files there (write them with nnint.train.dataset.write_pack)")
    out = []
    for f in files:
        meta = _pack_meta(f)
        if redistributable_only and not meta.get("redistributable", False):
            continue
        out.append((meta["name"], ("pack", f)))
    return out


def _unpack_case(f: Path, folder: Path, signature: str) -> CaseRef:
    with np.load(f) as z:
        meta = json.loads(z["meta"].tobytes().decode())
        tmp = folder.with_name(folder.name + ".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        np.save(tmp / "image.npy", z["image"].astype(np.float32))
        np.save(tmp / "labels.npy", z["labels"])
    meta["signature"] = signature
    return _commit_case(tmp, folder, meta)


def _synthetic_case(seed: int, i: int, edge: int = 0):
    from nnint.train.synthetic import GENERATORS

    rng = np.random.default_rng([seed, i, 7919])
    kind = ["ct", "mr", "microscopy"][i % 3]
    shape = (int(rng.integers(64, 113)), int(rng.integers(96, 145)), int(rng.integers(96, 145)))
    if kind == "microscopy":
        shape = (int(rng.integers(40, 81)), shape[1], shape[2])
    if edge:  # a smaller variant (tests, quick experiments)
        shape = tuple(max(16, int(s * edge / 144)) for s in shape)
    image, labels, spacing = GENERATORS[kind](rng, shape)
    return image, labels, spacing


def prepare_cases(data: list[str], cache: str | os.PathLike, split: str = "train", *, supervoxels: bool = False,
                  redistributable_only: bool = False, keep=None, log=print) -> list[CaseRef]:
    """Preprocess (once) and list the cases of ``split`` from every source in ``data``; ``keep(name)``
    (optional) chooses cases before any is read."""
    cache = Path(cache)
    refs = []
    sources = [(n, how) for n, how in _list_sources(list(data), split, redistributable_only) if keep is None or keep(n)]
    for k, (name, how) in enumerate(sources):
        folder = cache / _safe(name)
        signature = _signature(how)
        meta_file = folder / "meta.json"
        fresh = meta_file.exists() and json.loads(meta_file.read_text()).get("signature", signature) == signature
        if fresh:
            ref = _ref(folder)
            if (not (supervoxels and split == "train") or (folder / "sv.npy").exists()) and (split != "dev" or (folder / "raw.npy").exists()):
                refs.append(ref)
                continue
        if how[0] == "synthetic":
            image, labels, spacing = _synthetic_case(how[1], how[2], how[3])
        elif how[0] == "pack":
            refs.append(_unpack_case(how[1], folder, signature))
            continue
        else:
            img, labels = how[2](how[1])
            image, spacing = img.array, img.spacing_zyx
        refs.append(_write_case(folder, name, image, labels, spacing, supervoxels and split == "train",
                                keep_raw=split == "dev", signature=signature))
        if log and (k + 1) % 10 == 0:
            log(f"prepared {k + 1}/{len(sources)} {split} cases")
    return [r for r in refs if r.targets or r.sv_targets]


# --- engine-identical zoom-out ----------------------------------------------------------------


def round_to_nearest_odd(x: float) -> int:
    """The reference rule: ceil(x) if odd, else floor(x) if odd, else x + 1."""
    c, f = math.ceil(x), math.floor(x)
    if c % 2 == 1:
        return int(c)
    if f % 2 == 1:
        return int(f)
    return int(x) + 1


def area_matrix(length: int, out: int) -> np.ndarray:
    """Adaptive average pooling along one axis as a (out, length) matrix: output i averages input
    indices ``[floor(i L / out), ceil((i + 1) L / out))``."""
    m = np.zeros((out, length), np.float64)
    for i in range(out):
        a = (i * length) // out
        b = -((-(i + 1) * length) // out)
        m[i, a:b] = 1.0 / (b - a)
    return m


def _area_block(block: np.ndarray, lo, mats) -> np.ndarray:
    """Area-downsample a sub-block of a larger (zero elsewhere) array placed at ``lo``."""
    out = block.astype(np.float64)
    for ax in range(3):
        m = mats[ax][:, lo[ax]:lo[ax] + block.shape[ax]]
        out = np.moveaxis(np.tensordot(m, np.moveaxis(out, ax, 0), axes=(1, 0)), 0, ax)
    return out


def zoom_channels(channels_fullres_fn, window: int, patch: int, zoom: float, dilate: set[int],
                  num_channels: int) -> np.ndarray:
    """Bring full-resolution prompt channels of a ``window``^3 crop down to ``patch``^3 like the engine.

    ``channels_fullres_fn() -> list[(channel, block, lo)]`` yields the non-zero content of every
    channel as a block placed at ``lo`` in the window (zero elsewhere). Channels in ``dilate``
    (points, scribbles) are max-filtered with ``k = round_to_nearest_odd(2 z - 1)`` (edge
    replicating) first; every channel is then area-averaged.
    """
    k = round_to_nearest_odd(2 * zoom - 1)
    mats = [area_matrix(window, patch)] * 3
    out = np.zeros((num_channels, patch, patch, patch), np.float32)
    for ch, block, lo in channels_fullres_fn():
        lo = np.asarray(lo)
        if ch in dilate and k > 1:
            m = k // 2
            plo = np.maximum(lo - m, 0)
            phi = np.minimum(lo + np.asarray(block.shape) + m, window)
            big = np.zeros(tuple(phi - plo), np.float32)
            big[tuple(slice(a, a + s) for a, s in zip(lo - plo, block.shape))] = block
            big = ndi.maximum_filter(big, size=k, mode="nearest")
            block, lo = big, plo
        out[ch] += _area_block(block, lo, mats).astype(np.float32)
    return out


# --- samples ------------------------------------------------------------------------------------


def _crop(arr: np.ndarray, lo, size) -> np.ndarray:
    """``arr[lo:lo+size]`` per axis with zero padding outside (copy)."""
    lo = np.asarray(lo)
    hi = lo + np.asarray(size)
    shape = np.asarray(arr.shape)
    clo, chi = np.maximum(lo, 0), np.minimum(hi, shape)
    out = np.zeros(tuple(size), arr.dtype)
    if np.all(chi > clo):
        out[tuple(slice(a - o, b - o) for a, b, o in zip(clo, chi, lo))] = arr[tuple(slice(a, b) for a, b in zip(clo, chi))]
    return out


@attrs.define
class SampleConfig:
    patch: int = 64
    p_zoom: float = 0.1
    max_zoom: float = 3.5
    p_component: float = 0.25
    p_supervoxel: float = 0.25
    size_power: float = -0.25
    decay: float = simulate.DEFAULT_DECAY
    point_radius: float = simulate.DEFAULT_POINT_RADIUS
    mapping: dict = attrs.field(factory=lambda: dict(simulate.LEGACY_MAPPING))
    num_channels: int = 7
    first_kinds: dict = attrs.field(factory=lambda: dict(simulate.FIRST_KINDS))
    correction_kinds: dict = attrs.field(factory=lambda: dict(simulate.CORRECTION_KINDS))
    #: probability that the first prompt is followed by pre-simulated corrections of a corrupted mask
    p_corrupt_prev: float = 0.1
    #: probability that a window which cuts its target becomes a refinement sample: prev_seg is the
    #: target seen at a coarser zoom (what the engine's full-resolution refinement patches get
    #: after AutoZoom), so the model learns to sharpen a coarse mask instead of erasing it
    p_refine: float = 0.45
    #: probability of drawing the target among the case's objects larger than the window
    p_big: float = 0.3
    #: probability of a "first click on an object bigger than the window" sample: zoom 1, a window
    #: around a voxel of the object, a point (or a scribble / lasso) and no previous mask. The
    #: answer fills the window up to its borders, which is what makes the engine's AutoZoom zoom
    #: out. Session 5 measured 0.7 % such samples under the other rules, and the model answered a
    #: click on a large region with a small ball (Dice 0.02 on a 66k-voxel dev target)
    p_big_click: float = 0.12
    big_click_kinds: dict = attrs.field(factory=lambda: {"point": 0.7, "scribble": 0.15, "lasso": 0.15})
    #: keep only samples whose target stands out of its surround by at least this contrast-to-noise
    #: ratio (:func:`contrast_to_noise`; 0: all). A curriculum: session 7 found the CPU-trained
    #: models answering mostly from the prompts' shape (a spatially shuffled image costs them only
    #: a fifth of their Dice); trained on visible targets only they rely on the image a little more
    min_cnr: float = 0.0
    #: also return ``boundary``: where the window's whole label map changes value
    #: (:func:`label_boundaries`), the target of the training loop's auxiliary boundary head
    #: (``TrainConfig.boundary_weight``). Zoom-1 samples only; the random draws are unchanged
    boundary: bool = False
    #: probability that a target under ``patch / 6`` voxels across is shown *magnified*, as the
    #: engine's ``magnify`` option shows it (session 18): a window of ``(extent + patch // 3)``
    #: voxels (at most ``max_magnify`` times smaller than the patch, jittered by +-10 %) trilinearly
    #: upsampled to the patch, then an ordinary zoom-1 sample with correction rounds. Its first
    #: prompt is never a point (the engine does not magnify a first click on an empty mask). 0: off
    #: (no random draw, so older configurations keep their sample streams)
    p_magnify: float = 0.0
    max_magnify: float = 3.0


def sample_config_for(model_folder, patch: int, **overrides) -> SampleConfig:
    """The :class:`SampleConfig` whose prompt channels match ``model_folder`` (a loaded
    :class:`~nnint.backends.torch.checkpoint.ModelFolder`: its decay, point radius, channel mapping
    and channel count), for diagnosing a model on the training distribution."""
    mf = model_folder
    mapping = {k: (tuple(v) if isinstance(v, (list, tuple)) else int(v)) for k, v in mf.channel_mapping.items()}
    return SampleConfig(patch=int(patch), decay=float(mf.interaction_decay), point_radius=float(mf.point_radius),
                        mapping=mapping, num_channels=int(mf.num_interaction_channels), **overrides)


def restrict_first_kinds(cfg: SampleConfig, kinds: dict[str, float]) -> SampleConfig:
    """``cfg`` opening every episode with one of ``kinds`` (kind -> probability), for a network
    that specialises in one way of starting an object, such as a 3D box. Corrections keep their
    mix. The "first click on an object larger than the window" samples keep only the kinds given,
    and stop when none of them is a click, scribble or lasso."""
    unknown = sorted(set(kinds) - set(simulate.FIRST_KINDS))
    if unknown or not kinds:
        what = f"unknown first prompt kinds {unknown}" if unknown else "no first prompt kind given"
        raise ValueError(f"{what}; choose from {sorted(simulate.FIRST_KINDS)}")
    if any(not w > 0 for w in kinds.values()):
        raise ValueError(f"first prompt kinds need positive weights, got {kinds}")
    big = {k: w for k, w in cfg.big_click_kinds.items() if k in kinds}
    return attrs.evolve(cfg, first_kinds=dict(kinds), big_click_kinds=big or dict(cfg.big_click_kinds),
                        p_big_click=cfg.p_big_click if big else 0.0)


class TrainSet(torch.utils.data.Dataset):
    """Infinite-style dataset: item ``i`` is sample ``i`` of the run (deterministic in (seed, rank, i)).

    ``patches`` (several window edges) alternates the window size between batches of ``batch``
    samples (a batch must have one size): small windows keep small and medium targets large in
    view, large ones show organ-sized targets whole, as the inference window does.
    """

    def __init__(self, cases: list[CaseRef], cfg: SampleConfig, seed: int = 0, rank: int = 0,
                 length: int = 10**12, patches: tuple[int, ...] = (), batch: int = 1) -> None:
        if not cases:
            raise ValueError("no training case with a usable target")
        self.cases, self.cfg, self.seed, self.rank, self.length = cases, cfg, int(seed), int(rank), int(length)
        self._cfgs = [attrs.evolve(cfg, patch=int(p)) for p in patches] or [cfg]
        self.batch = max(1, int(batch))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        # one dataset copy per loader worker, which samples one item at a time: switching the
        # configuration here is safe
        self.cfg = self._cfgs[(int(index) // self.batch) % len(self._cfgs)]
        rng = np.random.default_rng([self.seed, self.rank, int(index), 31337])
        last_error = None
        tries = 100  # min_cnr rejects about 60 % of the draws at 3; 20 tries would fail once in ~10^4 samples
        for _ in range(tries):
            try:
                out = self.sample(rng)
            except (ValueError, RuntimeError, IndexError) as exc:  # a degenerate draw: draw again
                last_error = exc
                continue
            if out is not None and (self.cfg.min_cnr <= 0
                                    or contrast_to_noise(out["image"][0].numpy(), out["target"].numpy()) >= self.cfg.min_cnr):
                return out
        raise RuntimeError(f"could not draw a usable training sample in {tries} tries (last error: {last_error!r})")

    # -- the sample ----------------------------------------------------------------------------

    def _pick_target(self, rng, need_big: bool = False):
        """``(case, use_sv, target)``; ``need_big``: only a target larger than the window (None if
        the drawn case has none)."""
        case = self.cases[int(rng.integers(len(self.cases)))]
        use_sv = bool(case.sv_targets) and (not case.targets or rng.random() < self.cfg.p_supervoxel)
        targets = case.sv_targets if use_sv else case.targets
        if not targets:
            return None
        if need_big or rng.random() < self.cfg.p_big:
            # objects larger than the window: their zoomed-out views and refinement patches
            # are rare under the size weighting but common in use (organs, brain, body)
            big = [t for t in targets if max(b - a for a, b in zip(t[2][:3], t[2][3:])) > self.cfg.patch - 8]
            if big:
                return case, use_sv, big[int(rng.integers(len(big)))]
            if need_big:
                return None
        sizes = np.asarray([t[1] for t in targets], float)
        w = sizes ** self.cfg.size_power
        t = targets[int(rng.choice(len(targets), p=w / w.sum()))]
        return case, use_sv, t

    def sample(self, rng: np.random.Generator) -> dict | None:
        cfg = self.cfg
        # (no draw when disabled: configurations without it keep their sample streams)
        big_click = cfg.p_big_click > 0 and rng.random() < cfg.p_big_click
        picked = self._pick_target(rng, need_big=big_click)
        if picked is None:
            return None
        case, use_sv, (value, _size, bb) = picked
        P = cfg.patch
        lo_t, hi_t = np.asarray(bb[:3]), np.asarray(bb[3:])
        extent = hi_t - lo_t
        z_box = float((extent.max() + P // 3) / P)  # the engine's box window, before its floor of 1
        z0 = max(1.0, z_box)
        zoom = 1.0  # always for a big click: the engine's first forward pass on a click
        if not big_click:
            if z0 > 1.0 and rng.random() < 0.5:  # the view of a box / mask prompt on a large object
                zoom = float(np.clip(z0 * rng.uniform(0.95, 1.25), 1.0, cfg.max_zoom))
            elif z0 == 1.0 and rng.random() < cfg.p_zoom:  # a mildly zoomed-out view of a small object
                zoom = float(rng.uniform(1.05, 1.6))
        labels_all = case.sv_labels() if use_sv else case.labels()
        image_all = case.image()
        if (cfg.p_magnify > 0 and not big_click and extent.max() < P / 6 and rng.random() < cfg.p_magnify):
            return self._sample_magnified(image_all, labels_all, value, lo_t, hi_t, z_box, rng)
        W = int(round(P * zoom)) if zoom > 1.0 else P
        # The engine centres a click's window on the click, so a first click is always at the
        # window's centre. Session 12: when only big-click samples had that (the others centred
        # the window on the target's box), the networks learnt "a click at the centre means an
        # object larger than the window" and answered dev clicks on medium targets with blobs
        # 20-40x too large (0.4 Dice with a box-centred window around the same click, 0.15 without)
        first_kind = simulate.choose_kind(rng, cfg.first_kinds) if zoom == 1.0 and not big_click else None
        if zoom > 1.0:
            centre = (lo_t + hi_t) / 2.0 + rng.uniform(-0.08, 0.08, 3) * W
        else:
            fits = np.all(extent <= P - 8)

            def in_box() -> np.ndarray:  # the target inside its bounding box
                return np.asarray(labels_all[tuple(slice(a, b) for a, b in zip(lo_t, hi_t))]) == value

            if first_kind == "point" and fits:  # deep voxels more often, as simulate.first_prompt
                centre = lo_t + np.asarray(simulate.edt_point(in_box(), rng, float(rng.uniform(1.0, 8.0))))
            elif fits and not big_click and first_kind != "point" and rng.random() < 0.8:
                slack = (P - extent) / 2.0
                centre = (lo_t + hi_t) / 2.0 + rng.uniform(-1, 1, 3) * np.maximum(slack - 4, 0)
            else:  # a window around a voxel of the target (how a click sees a big object)
                pts = np.argwhere(in_box())
                click_centred = big_click or first_kind == "point"
                jitter = 0.0 if click_centred else rng.uniform(-0.25, 0.25, 3) * P
                centre = lo_t + pts[int(rng.integers(len(pts)))] + jitter
        centre = np.floor(centre + 0.5).astype(int)
        wlo = centre - W // 2
        labels = _crop(np.asarray(labels_all), wlo, (W,) * 3)
        target = labels == value
        if not target.any():
            return None
        if rng.random() < cfg.p_component:
            lab, n = ndi.label(target, np.ones((3, 3, 3), bool))
            if n > 1:
                target = lab == int(rng.integers(1, n + 1))
        image = _crop(np.asarray(image_all, dtype=np.float32), wlo, (W,) * 3)
        if zoom == 1.0:
            boundary = label_boundaries(labels) if cfg.boundary else None
            return self._sample_zoom1(image, target, rng, big_click, boundary, first_kind)
        return self._sample_zoomed(image, target, zoom, W, rng)

    def _sample_magnified(self, image_all, labels_all, value, lo_t, hi_t, z_box, rng) -> dict | None:
        """A small target in a window ``P * z`` voxels across (``z`` = ``z_box`` jittered, below 1)
        upsampled to the patch (see ``SampleConfig.p_magnify``)."""
        cfg = self.cfg
        P = cfg.patch
        z = z_box * float(rng.uniform(0.9, 1.1))
        W = int(round(P * float(np.clip(z, 1.0 / cfg.max_magnify, 1.0))))
        centre = np.floor((lo_t + hi_t) / 2.0 + rng.uniform(-0.1, 0.1, 3) * W + 0.5).astype(int)
        wlo = centre - W // 2
        target = _crop(np.asarray(labels_all), wlo, (W,) * 3) == value
        if not target.any():
            return None
        image = _crop(np.asarray(image_all, dtype=np.float32), wlo, (W,) * 3)

        def up(a: np.ndarray) -> np.ndarray:
            t = torch.from_numpy(np.ascontiguousarray(a, np.float32))[None, None]
            return F.interpolate(t, size=(P,) * 3, mode="trilinear", align_corners=False)[0, 0].numpy()

        kinds = {k: v for k, v in cfg.first_kinds.items() if k != "point"}
        first_kind = simulate.choose_kind(rng, kinds) if kinds else None
        return self._sample_zoom1(up(image), up(target) >= 0.5, rng, False, None, first_kind)

    def _finish(self, image, target, channels, prompts, prev_seg, rng, zoom, boundary=None) -> dict:
        agent = simulate.sample_agent(rng, self.cfg.correction_kinds)
        extra = {}
        if self.cfg.boundary:  # every sample has the key (collate stacks it); zoomed ones mark it unusable
            b = np.zeros(target.shape, np.uint8) if boundary is None else boundary
            extra = {"boundary": torch.from_numpy(np.ascontiguousarray(b, np.uint8)), "has_boundary": boundary is not None}
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image[None], np.float32)),
            "target": torch.from_numpy(np.ascontiguousarray(target, np.uint8)),
            "channels": torch.from_numpy(np.ascontiguousarray(channels, np.float32)),
            "prompts": prompts,
            "prev_seg": np.ascontiguousarray(prev_seg, np.uint8),
            "agent": agent,
            "zoom": float(zoom),
            "rng_seed": int(rng.integers(2**62)),
            **extra,
        }

    def _sample_zoom1(self, image, target, rng, big_click: bool = False, boundary=None,
                      first_kind: str | None = None) -> dict | None:
        """``first_kind``: the first prompt's kind when drawn already (a point: the window is
        centred on it); ``None``: drawn here."""
        cfg = self.cfg
        if boundary is None:
            image, target = augment.spatial(image, target, rng)
        else:
            image, both = augment.spatial(image, np.stack([target, boundary]), rng)
            target, boundary = both[0], both[1].astype(np.uint8)
        target = target.astype(bool)
        if target.sum() < 3:
            return None
        image = augment.intensity(image, rng)
        def centre_click() -> simulate.Point:  # the click the window was centred on (moved by flips / affine)
            pts = np.argwhere(target)
            return simulate.Point(tuple(pts[int(np.argmin(((pts - cfg.patch / 2) ** 2).sum(1)))]), True)

        if big_click:
            kind = simulate.choose_kind(rng, cfg.big_click_kinds)
            if kind == "point":
                prompt, prev_seg = centre_click(), np.zeros(target.shape, np.uint8)
            else:
                prompt, prev_seg = simulate.first_prompt(target, rng, kind)
            prompts = [prompt]
        elif _touches_border(target) and rng.random() < cfg.p_refine:
            kinds = {k: v for k, v in cfg.first_kinds.items() if k != "initial_mask"}
            if first_kind == "point":
                prompts = [centre_click()]
            else:
                kind = first_kind if first_kind != "initial_mask" else None
                prompts = [simulate.first_prompt(target, rng, kind, kinds=kinds)[0]]
            prev_seg = coarse_view(target, float(rng.uniform(1.3, 3.0)), rng)
            if rng.random() < 0.5:  # a coarse prediction is rarely the coarse truth
                mode = str(rng.choice(["dilate", "erode", "noisy", "shift", "partial"]))
                prev_seg = simulate.corrupt_mask(prev_seg.astype(bool), rng, mode).astype(np.uint8)
        else:
            if first_kind == "point":
                prompt, prev_seg = centre_click(), np.zeros(target.shape, np.uint8)
            else:
                prompt, prev_seg = simulate.first_prompt(target, rng, first_kind, kinds=cfg.first_kinds)
            prompts = [prompt]
            if rng.random() < cfg.p_corrupt_prev and not isinstance(prompt, simulate.InitialMask):
                # a mid-episode state: a corrupted mask as previous segmentation plus one correction
                bad = simulate.corrupt_mask(target, rng)
                corr = simulate.correction_prompt(target, bad, rng, "point")
                if corr is not None:
                    prompts.append(corr)
                    prev_seg = bad.astype(np.uint8)
        channels = simulate.prompt_channels(prompts, prev_seg, decay=cfg.decay, point_radius=cfg.point_radius,
                                            mapping=cfg.mapping, num_channels=cfg.num_channels)
        return self._finish(image, target, channels, prompts, prev_seg, rng, 1.0, boundary)

    def _sample_zoomed(self, image, target, zoom, W, rng) -> dict | None:
        cfg = self.cfg
        P = cfg.patch
        # every first prompt, clicks included: a click on an object larger than the window makes
        # AutoZoom zoom out (the session-2 model, never shown this, scored Dice ~0 on large objects)
        prompt, prev_seg = simulate.first_prompt(target, rng, kinds=cfg.first_kinds)
        mapping = cfg.mapping
        dilate = {mapping["points"][0], mapping["points"][1], mapping["scribble"][0], mapping["scribble"][1]}

        def blocks():
            if isinstance(prompt, simulate.InitialMask):
                ys = [(mapping["prev_seg"], prompt.mask.astype(np.float32), prompt.lo)]
                return ys
            lo, hi = prompt.bbox
            if isinstance(prompt, simulate.Point):
                r = int(cfg.point_radius)
                lo = np.asarray(prompt.index) - r
                hi = np.asarray(prompt.index) + r + 1
            lo = np.maximum(np.asarray(lo), 0)
            hi = np.minimum(np.asarray(hi), W)
            # rasterise through the same function, on the prompt's block only
            shifted = _shift_prompt(prompt, -lo)
            ch = simulate.prompt_channels([shifted], np.zeros(tuple(hi - lo), np.uint8), decay=cfg.decay,
                                          point_radius=cfg.point_radius, mapping=mapping,
                                          num_channels=cfg.num_channels)
            return [(c, ch[c], lo) for c in range(ch.shape[0]) if ch[c].any()]

        engine_input = _engine_zoomed_input(image, prompt, prev_seg, zoom, W, P, cfg)
        if engine_input is not None:
            # the torch backend's own builder: x = [image, prompt channels] exactly as at inference
            image_p, channels = engine_input
        else:
            channels = zoom_channels(blocks, W, P, zoom, dilate, cfg.num_channels)
            t = torch.from_numpy(image)[None, None]
            image_p = F.interpolate(t, size=(P, P, P), mode="trilinear", align_corners=False)[0, 0].numpy()
        tgt = torch.from_numpy(target.astype(np.float32))[None, None]
        target_p = F.adaptive_avg_pool3d(tgt, (P, P, P))[0, 0].numpy() >= 0.5
        if target_p.sum() < 3:
            return None
        arrs = augment.flip_rot([image_p, target_p, channels], rng)
        image_p, target_p, channels = arrs
        image_p = augment.intensity(image_p, rng)
        prev_p = (channels[mapping["prev_seg"]] >= 0.5).astype(np.uint8)
        # corrections are not simulated in zoomed-out samples (prompts=None), their input is final
        return self._finish(image_p, target_p, channels, None, prev_p, rng, zoom)


def label_boundaries(labels: np.ndarray) -> np.ndarray:
    """uint8 map of the voxels of a (z, y, x) label map with a 6-neighbour of another value (both
    sides of every boundary, so a boundary is two voxels thick and survives resampling). The
    patch's own faces are no boundary. This target does not depend on any prompt: the only way to
    predict it is to read the image, which is what the CPU-trained models barely do (session 7)."""
    lab = np.asarray(labels)
    out = np.zeros(lab.shape, bool)
    for ax in range(lab.ndim):
        a = [slice(None)] * lab.ndim
        b = [slice(None)] * lab.ndim
        a[ax], b[ax] = slice(1, None), slice(None, -1)
        diff = lab[tuple(a)] != lab[tuple(b)]
        out[tuple(a)] |= diff
        out[tuple(b)] |= diff
    return out.astype(np.uint8)


def contrast_to_noise(image: np.ndarray, target: np.ndarray, ring: int = 2) -> float:
    """How visible ``target`` is in ``image`` (both (z, y, x)): the difference between the mean inside
    the target and the mean of a ``ring``-voxel shell around it, over the standard deviation inside
    the target (its interior when that has more than 5 voxels). ``inf`` when there is no shell (the
    target fills the patch) or the target has fewer than 2 voxels: nothing to compare, keep it."""
    t = np.asarray(target).astype(bool)
    img = np.asarray(image, np.float32)
    shell = ndi.binary_dilation(t, iterations=ring) & ~t
    if shell.sum() < 5 or t.sum() < 2:
        return math.inf
    interior = ndi.binary_erosion(t)
    inner = interior if interior.sum() > 5 else t
    return float(abs(img[t].mean() - img[shell].mean()) / (img[inner].std() + 1e-3))


def _touches_border(mask: np.ndarray) -> bool:
    return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()
                or mask[:, :, 0].any() or mask[:, :, -1].any())


def coarse_view(target: np.ndarray, zoom: float, rng: np.random.Generator) -> np.ndarray:
    """``target`` as a network at ``zoom`` sees and predicts it, upsampled back: area-averaged down
    to ``1/zoom``, thresholded, trilinearly up and thresholded again, with a random sub-voxel shift
    of the coarse grid (uint8 0/1)."""
    t = torch.from_numpy(np.ascontiguousarray(target, np.float32))[None, None]
    shape = t.shape[2:]
    pad = [int(v) for v in rng.integers(0, max(1, int(zoom)), 6)]
    t = F.pad(t, pad, mode="replicate")
    down = F.interpolate(t, size=tuple(max(2, int(round(n / zoom))) for n in t.shape[2:]), mode="area")
    up = F.interpolate((down >= 0.5).float(), size=t.shape[2:], mode="trilinear", align_corners=False)
    up = up[..., pad[4]: pad[4] + shape[0], pad[2]: pad[2] + shape[1], pad[0]: pad[0] + shape[2]]
    return (up[0, 0] >= 0.5).numpy().astype(np.uint8)


def _engine_zoomed_input(image, prompt, prev_seg, zoom, W, P, cfg):
    """``(image_P, channels_P)`` built by ``nnint.backends.torch.zoom.build_network_input`` for the
    window ``[0, W)^3`` of the (already normalised) crop at ``zoom``; None if unavailable."""
    try:
        from nnint.backends.torch import rasterise as ras
        from nnint.backends.torch import zoom as zm
    except ImportError:
        return None
    if zm.scaled_size((P, P, P), zoom) != (W, W, W):
        return None
    config = ras.RasterConfig(shape=(W, W, W), channel_mapping=dict(cfg.mapping),
                              num_interaction_channels=int(cfg.num_channels), supported=dict(simulate._ALL_SUPPORTED),
                              decay=float(cfg.decay), point_radius=float(cfg.point_radius))
    plan = ras.build_plan([prompt], config)
    mapping = cfg.mapping
    dilate = sorted({*mapping["points"], *mapping["scribble"]})
    source = zm.ImageSource(image, 0.0, 1.0)  # the crop is normalised already: (x - 0) / 1 == x
    mask = np.asarray(prev_seg, np.uint8)
    centre = (W // 2, W // 2, W // 2)  # window(c, W) = [c - W//2, c + W//2 + W%2) = [0, W)
    inp = zm.build_network_input(source, plan, mask, centre, zoom, (P, P, P), int(mapping["prev_seg"]), dilate)
    if tuple(inp.win_lo) != (0, 0, 0):
        return None
    x = inp.x.numpy()[0]
    return np.ascontiguousarray(x[0]), np.ascontiguousarray(x[1:], np.float32)


def _shift_prompt(prompt, offset):
    """The same prompt moved by ``offset`` voxels (z, y, x)."""
    off = np.asarray(offset)
    if isinstance(prompt, simulate.Point):
        return simulate.Point(np.asarray(prompt.zyx) + off, prompt.positive)
    if isinstance(prompt, simulate.Box):
        return simulate.Box(np.asarray(prompt.lo) + off, np.asarray(prompt.hi) + off, prompt.positive)
    return type(prompt)(prompt.mask, np.asarray(prompt.lo) + off, prompt.positive)


def collate(items: list[dict]) -> dict:
    """Stack tensors, keep Python objects (prompts, agents, masks) as lists."""
    out = {}
    for key in items[0]:
        vals = [it[key] for it in items]
        out[key] = torch.stack(vals) if isinstance(vals[0], torch.Tensor) else vals
    return out
