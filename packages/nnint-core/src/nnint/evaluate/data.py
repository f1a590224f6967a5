"""Evaluation datasets: cases of (image, label map) and the targets in them.

Three layouts are read:

* **nnU-Net raw** (``DatasetXXX_Name``): ``dataset.json`` with a ``labels`` map (v2: name -> value,
  v1: "value" -> name), ``file_ending`` (default ``.nii.gz``), ``imagesTr/CASE_0000<ending>`` with
  ``labelsTr/CASE<ending>``, and/or ``imagesTs`` with ``labelsTs``. Only channel ``0000`` is used.
  Cases without a label file are skipped.
* **A folder of nnU-Net datasets** (e.g. ``data/raw``): every sub-folder with a ``dataset.json``;
  case names become ``DatasetXXX_Name/CASE``. A ``splits.json`` in the folder itself covers all of
  them (entries ``"Dataset/CASE"`` or ``{"dataset": ..., "case": ...}``).

Structure names come from the ``labels`` map, or per case from ``cases/CASE.json``
(``{"labels": {"1": {"name": "hippocampus"}}}``, written by :mod:`nnint.train.prepare` for
class-agnostic datasets whose label values are renumbered per case).
* **A manifest**: a folder with ``manifest.json``::

      {"labels": {"liver": 1, "tumour": 2},
       "cases": [{"name": "a", "image": "a_img.nii.gz", "label": "a_lab.nii.gz"}, ...]}

  (paths relative to the folder; ``name`` defaults to the image file name without extension; the
  ``labels`` map is optional and may be written either way round).

Splits: ``splits.json`` next to ``dataset.json`` (or the manifest) selects cases. Accepted forms:
``{"train": [...], "dev": [...]}`` (split name -> case names), and nnU-Net's ``splits_final.json``
form ``[{"train": [...], "val": [...]}, ...]`` (fold 0 is used; ``dev`` means ``val``). Without a
splits file (the same rule ``nnint train`` uses): of the training cases (``imagesTr``, or every
case of a manifest) in name order, every 10th (the 10th, 20th, ...) is ``dev`` and the others are
``train``; ``test`` is ``imagesTs``. In a folder of datasets the rule applies per dataset.

Targets: every label value > 0 present in a case is one target, unless ``labels`` selects a subset.
A label map on a different grid than its image is resampled onto the image grid through physical
space with nearest-neighbour interpolation (SimpleITK).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import attrs
import numpy as np

from nnint.errors import ImageIOError, NnintError

__all__ = ["Case", "Dataset", "open_dataset", "load_case", "targets_of", "DataError"]


class DataError(NnintError, ValueError):
    """An evaluation dataset is missing, malformed or has no usable case."""


@attrs.frozen
class Case:
    name: str
    image: Path
    label: Path
    #: label value -> structure name (from dataset.json or the manifest)
    label_names: dict = attrs.field(factory=dict, eq=False)
    #: "train" (imagesTr), "test" (imagesTs) or "" (manifest)
    part: str = ""

    def structure(self, value: int) -> str:
        """The structure's name (``labelN`` if unnamed; ``name (N)`` if several values share a name)."""
        value = int(value)
        name = str(self.label_names.get(value, f"label{value}"))
        if value in self.label_names and sum(1 for v in self.label_names.values() if str(v) == name) > 1:
            name = f"{name} ({value})"
        return name


@attrs.frozen
class Dataset:
    root: Path
    cases: tuple[Case, ...]
    layout: str  # "nnunet", "nnunet-collection" or "manifest"


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from None


def _label_names(raw) -> dict[int, str]:
    """value -> name from a labels map written either way round; region labels (lists) are skipped."""
    out: dict[int, str] = {}
    if not isinstance(raw, dict):
        return out
    for key, value in raw.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            name, val = str(key), int(value)
        elif isinstance(key, str) and key.strip().lstrip("-").isdigit():
            name, val = str(value), int(key)
        else:
            continue
        if val > 0:
            out[val] = name
    return out


def _strip(name: str, ending: str) -> str:
    return name[: -len(ending)] if ending and name.endswith(ending) else name


def _nnunet_cases(root: Path, prefix: str = "") -> list[Case]:
    meta = _read_json(root / "dataset.json")
    ending = meta.get("file_ending", ".nii.gz") if isinstance(meta, dict) else ".nii.gz"
    names = _label_names(meta.get("labels") if isinstance(meta, dict) else None)
    cases: list[Case] = []
    for images, labels, part in (("imagesTr", "labelsTr", "train"), ("imagesTs", "labelsTs", "test")):
        idir, ldir = root / images, root / labels
        if not idir.is_dir() or not ldir.is_dir():
            continue
        for img in sorted(idir.iterdir()):
            stem = _strip(img.name, ending)
            if stem == img.name or not stem.endswith("_0000"):
                continue
            case = stem[: -len("_0000")]
            lab = ldir / f"{case}{ending}"
            if lab.exists():
                cases.append(Case(prefix + case, img, lab, _case_names(root, case) or names, part))
    return cases


def _case_names(root: Path, case: str) -> dict[int, str]:
    """Per-case structure names from ``cases/CASE.json`` (``{"labels": {"1": {"name": ...}}}``), as
    ``nnint.train.prepare`` writes them for class-agnostic datasets whose label values are
    renumbered per case."""
    path = root / "cases" / f"{case}.json"
    if not path.exists():
        return {}
    try:
        labels = json.loads(path.read_text()).get("labels", {})
        return {int(k): str(v["name"] if isinstance(v, dict) else v) for k, v in labels.items() if int(k) > 0}
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return {}


def _manifest_cases(root: Path) -> list[Case]:
    meta = _read_json(root / "manifest.json")
    if not isinstance(meta, dict) or not isinstance(meta.get("cases"), list):
        raise DataError(f"{root / 'manifest.json'} must hold {{'cases': [{{'image': ..., 'label': ...}}, ...]}}")
    names = _label_names(meta.get("labels"))
    cases = []
    for i, item in enumerate(meta["cases"]):
        if not isinstance(item, dict) or "image" not in item or "label" not in item:
            raise DataError(f"manifest case {i} needs 'image' and 'label' paths, got {item!r}")
        img, lab = root / item["image"], root / item["label"]
        for path in (img, lab):
            if not path.exists():
                raise DataError(f"manifest case {i}: {path} does not exist")
        default = img.name.split(".")[0]
        cases.append(Case(str(item.get("name", default)), img, lab, names, ""))
    return cases


def _read_splits(root: Path) -> dict[str, list[str]] | None:
    for name in ("splits.json", "splits_final.json"):
        path = root / name
        if path.exists():
            data = _read_json(path)
            if isinstance(data, list) and data and isinstance(data[0], dict):
                fold = data[0]
                out = {k: _entry_names(v) for k, v in fold.items() if isinstance(v, list)}
                if "val" in out and "dev" not in out:
                    out["dev"] = out["val"]
                return out
            if isinstance(data, dict):
                return {str(k): _entry_names(v) for k, v in data.items() if isinstance(v, list)}
            raise DataError(f"{path}: expected {{split: [case, ...]}} or nnU-Net's [{{'train': [...], 'val': [...]}}]")
    if (root / "dataset.json").exists():
        # one dataset of a prepared collection: the collection's splits.json (its entries for this
        # dataset), else the dev list that dataset.json may carry ({"dev_split": {"cases": [...]}})
        parent = root.parent / "splits.json"
        if parent.exists():
            data = _read_json(parent)
            if isinstance(data, dict):
                prefix = f"{root.name}/"
                out = {str(k): [n[len(prefix):] for n in _entry_names(v) if n.startswith(prefix)]
                       for k, v in data.items() if isinstance(v, list)}
                if any(out.values()):
                    return out
        meta = _read_json(root / "dataset.json")
        dev = meta.get("dev_split") if isinstance(meta, dict) else None
        if isinstance(dev, dict) and isinstance(dev.get("cases"), list):
            return {"dev": _entry_names(dev["cases"])}
    return None


def _entry_names(entries: list) -> list[str]:
    """Case names of a split: strings, or records ``{"dataset": ..., "case": ...}`` (-> ``dataset/case``)."""
    out = []
    for e in entries:
        if isinstance(e, dict) and "case" in e:
            out.append(f"{e['dataset']}/{e['case']}" if e.get("dataset") else str(e["case"]))
        elif isinstance(e, (str, int)):
            out.append(str(e))
    return out


def _select_split(root: Path, cases: list[Case], split: str | None, prefix: str = "") -> list[Case]:
    if split is None:
        return cases
    splits = _read_splits(root)
    if splits is not None and split in splits:
        wanted = set(splits[split])
        return [c for c in cases if c.name in wanted or c.name[len(prefix):] in wanted]
    if splits is None or (split == "test" and "test" not in splits):
        # no splits file: the training cases (imagesTr, or all of a manifest) in name order, every
        # 10th of them (the 10th, 20th, ...) is "dev", the rest "train"; imagesTs is "test"
        pool = sorted((c for c in cases if c.part != "test"), key=lambda c: c.name)
        if split == "dev":
            return [c for i, c in enumerate(pool) if i % 10 == 9]
        if split == "train":
            return [c for i, c in enumerate(pool) if i % 10 != 9]
        if split == "test":
            return [c for c in cases if c.part == "test"]
    available = sorted(splits) if splits else ["train", "dev", "test"]
    raise DataError(f"split {split!r} not found in {root}: available {', '.join(available)}")


def open_dataset(root: str | os.PathLike, *, split: str | None = None, max_cases: int | None = None) -> Dataset:
    """List the cases of an evaluation dataset (see the module docstring for the layouts)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"--data {root}: not a folder")
    if (root / "dataset.json").exists():
        layout = "nnunet"
        cases = _select_split(root, _nnunet_cases(root), split)
    elif (root / "manifest.json").exists():
        layout = "manifest"
        cases = _select_split(root, _manifest_cases(root), split)
    else:
        subs = sorted(d for d in root.iterdir() if d.is_dir() and (d / "dataset.json").exists())
        if not subs:
            raise DataError(
                f"{root} holds no dataset.json, no manifest.json and no sub-folder with a dataset.json; "
                "see docs/evaluation.md for the accepted layouts"
            )
        layout = "nnunet-collection"
        cases = []
        if split is not None and _read_splits(root) is not None:
            # a splits.json next to the datasets (as nnint.train.prepare writes it) covers them all
            every = [c for sub in subs for c in _nnunet_cases(sub, f"{sub.name}/")]
            subs = []
            cases = _select_split(root, every, split)
        for sub in subs:
            prefix = f"{sub.name}/"
            try:
                cases += _select_split(sub, _nnunet_cases(sub, prefix), split, prefix)
            except DataError:
                if split is None:
                    raise
                # a dataset without this split contributes nothing
    cases.sort(key=lambda c: c.name)
    if max_cases is not None:
        cases = cases[: max(int(max_cases), 0)]
    if not cases:
        what = f" in split {split!r}" if split else ""
        raise DataError(f"no labelled case found in {root}{what}")
    return Dataset(root, tuple(cases), layout)


def _same_grid(a, b, tol: float = 1e-4) -> bool:
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=tol, atol=tol)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), rtol=tol, atol=1e-3)
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=tol)
    )


def load_case(case: Case):
    """Read a case: ``(nnint.image.Image, labels)``, the label map as an int array on the image grid."""
    import SimpleITK as sitk

    from nnint.image import Image

    image = Image.read(case.image)
    try:
        lab = sitk.ReadImage(str(case.label))
    except RuntimeError as exc:
        raise ImageIOError(f"cannot read {case.label}: {str(exc).strip().splitlines()[-1]}") from exc
    if lab.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(f"{case.label}: a label map must have one component per voxel")
    if lab.GetDimension() == 2:
        lab = sitk.JoinSeries(lab)
    ref = image.to_sitk()
    if not _same_grid(lab, ref):
        lab = sitk.Resample(lab, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0, lab.GetPixelID())
    labels = sitk.GetArrayFromImage(lab)
    if labels.dtype.kind == "f":
        labels = np.rint(labels)
    return image, labels.astype(np.int32, copy=False)


def targets_of(labels: np.ndarray, wanted: Iterable[int] | None = None, most: int | None = None) -> list[int]:
    """The label values > 0 present in ``labels`` (restricted to ``wanted`` if given), ascending.

    ``most`` keeps at most that many, spread evenly over the size ranking (smallest and largest
    always included), so a capped evaluation still covers small and large structures."""
    values, counts = np.unique(labels, return_counts=True)
    present = [(int(v), int(n)) for v, n in zip(values, counts) if v > 0]
    if wanted is not None:
        keep = {int(v) for v in wanted}
        present = [(v, n) for v, n in present if v in keep]
    if most is not None and len(present) > most:
        by_size = sorted(present, key=lambda vn: (vn[1], vn[0]))
        picks = np.unique(np.round(np.linspace(0, len(by_size) - 1, max(1, most))).astype(int))
        present = sorted(by_size[i] for i in picks)
    return [v for v, _ in present]


def write_nnunet_dataset(
    root: str | os.PathLike,
    cases: Sequence[tuple[str, np.ndarray, np.ndarray, Sequence[float]]],
    label_names: dict[str, int],
    *,
    part: str = "Tr",
) -> Path:
    """Write ``(name, image, labels, spacing_zyx)`` cases in nnU-Net raw layout (for tests and examples)."""
    import SimpleITK as sitk

    root = Path(root)
    (root / f"images{part}").mkdir(parents=True, exist_ok=True)
    (root / f"labels{part}").mkdir(parents=True, exist_ok=True)
    for name, image, labels, spacing in cases:
        for array, path in ((image, root / f"images{part}" / f"{name}_0000.nii.gz"),
                            (labels, root / f"labels{part}" / f"{name}.nii.gz")):
            itk = sitk.GetImageFromArray(np.asarray(array))
            itk.SetSpacing(tuple(float(s) for s in spacing[::-1]))
            sitk.WriteImage(itk, str(path))
    meta = {
        "channel_names": {"0": "image"},
        "labels": {"background": 0, **{k: int(v) for k, v in label_names.items()}},
        "numTraining": len(cases),
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=1))
    return root
