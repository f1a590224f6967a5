"""Tests of the data preparation (nnint.train.prepare); no network unless asked for.

Set NNINT_TEST_REGISTRY=1 to also install the registry packages and prepare them (minutes).
"""

import json
import os

import numpy as np
import pytest
import SimpleITK as sitk

from nnint.train import prepare as P


@pytest.fixture
def small_shapes(monkeypatch):
    monkeypatch.setattr(P, "SYNTH_SHAPES", {"ct": [(16, 40, 40)], "mr": [(16, 40, 40)], "microscopy": [(12, 40, 40)]})


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the synthetic-only path must not install packages")

    monkeypatch.setattr(P, "ensure_packages", refuse)
    monkeypatch.setattr(P.subprocess, "run", refuse)


def _prepare(tmp_path, lines=None):
    return P.prepare_data(
        tmp_path,
        sources=("synthetic",),
        n_synthetic=3,
        n_synthetic_dev=3,
        seed=5,
        progress=(lines.append if lines is not None else lambda s: None),
    )


def test_synthetic_layout(tmp_path, small_shapes, no_network):
    lines = []
    splits = _prepare(tmp_path, lines)
    assert len(splits["train"]) == 3 and len(splits["dev"]) == 3
    assert sum("Dataset91" in s for s in lines) == 6  # one progress line per case
    for family, (name, channel) in [
        ("ct", P.DATASETS["synth_ct"]),
        ("mr", P.DATASETS["synth_mr"]),
        ("microscopy", P.DATASETS["synth_microscopy"]),
    ]:
        ds = tmp_path / name
        dj = json.loads((ds / "dataset.json").read_text())
        assert dj["channel_names"] == {"0": channel}
        assert dj["file_ending"] == ".nii.gz" and dj["numTraining"] == 1
        assert dj["labels"]["background"] == 0
        assert sorted(dj["labels"].values()) == list(range(len(dj["labels"])))
        tr, ts = sorted((ds / "imagesTr").iterdir()), sorted((ds / "imagesTs").iterdir())
        assert [p.name for p in tr] == [f"syn{family}_000_0000.nii.gz"]
        assert [p.name for p in ts] == [f"syn{family}_dev_000_0000.nii.gz"]
        assert (ds / "labelsTr" / f"syn{family}_000.nii.gz").exists()
        assert (ds / "labelsTs" / f"syn{family}_dev_000.nii.gz").exists()
        assert dj["dev_split"]["cases"] == [f"syn{family}_dev_000"]
        prov = json.loads((ds / "provenance.json").read_text())
        assert set(prov) == {f"syn{family}_000", f"syn{family}_dev_000"}
        for rec in prov.values():
            assert {"source", "licence", "redistributable", "label_source", "files"} <= set(rec)
        assert not (ds / ".tmp").exists()


def test_images_labels_and_records_agree(tmp_path, small_shapes, no_network):
    splits = _prepare(tmp_path)
    for entry in splits["train"] + splits["dev"]:
        img = sitk.ReadImage(str(tmp_path / entry["image"]))
        lab = sitk.ReadImage(str(tmp_path / entry["label"]))
        assert img.GetSize() == lab.GetSize()
        assert np.allclose(img.GetSpacing(), lab.GetSpacing()) and np.allclose(img.GetOrigin(), lab.GetOrigin())
        assert list(img.GetSpacing()[::-1]) == pytest.approx(entry["spacing_zyx"])
        arr = sitk.GetArrayFromImage(lab)
        counts = np.bincount(arr.ravel())[1:]
        assert list(counts) == entry["label_voxels"] and entry["n_labels"] == arr.max()
        rec = json.loads((tmp_path / entry["dataset"] / "cases" / f"{entry['case']}.json").read_text())
        assert [v["voxels"] for v in rec["labels"].values()] == list(counts)


def test_dev_seeds_disjoint_from_training(tmp_path, small_shapes, no_network):
    splits = _prepare(tmp_path)
    assert not {e["group"] for e in splits["train"]} & {e["group"] for e in splits["dev"]}
    prov = json.loads((tmp_path / "provenance.json").read_text())
    entropy = {k: tuple(v["seed_entropy"]) for k, v in prov.items()}
    assert len(set(entropy.values())) == len(entropy)
    train_streams = {e[:3] for k, e in entropy.items() if "_dev_" not in k}
    dev_streams = {e[:3] for k, e in entropy.items() if "_dev_" in k}
    assert not train_streams & dev_streams


def test_resumable(tmp_path, small_shapes, no_network):
    _prepare(tmp_path)
    first = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.nii.gz")}
    lines = []
    again = _prepare(tmp_path, lines)
    assert sum("skipped" in s for s in lines) == 6
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.nii.gz")} == first
    assert len(again["train"]) == 3


def test_write_case_renumbers_drops_debris_and_keeps_geometry(tmp_path):
    img = sitk.GetImageFromArray(np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6))
    img.SetSpacing((0.5, 0.7, 3.0))
    img.SetOrigin((10.0, -4.0, 2.0))
    lab = np.zeros((4, 5, 6), np.int32)
    lab[0, :2] = 7
    lab[3, 4, 3:] = 300
    lab[2, 2, 2] = 5  # a single voxel: resampling debris, not a target
    names = {7: "seven", 300: "big", 5: "speck"}
    spec = P.CaseSpec("Dataset999_Test", "one", "train", "MR", "g", lambda: (img, lab, names),
                      {"source": "test", "licence": "x", "redistributable": True, "files": []})  # fmt: skip
    rec = P._write_case(tmp_path, spec)
    out = sitk.ReadImage(str(tmp_path / rec["label"]))
    assert np.allclose(out.GetSpacing(), img.GetSpacing()) and np.allclose(out.GetOrigin(), img.GetOrigin())
    arr = sitk.GetArrayFromImage(out)
    assert set(np.unique(arr)) == {0, 1, 2} and arr[3, 4, 5] == 2 and arr[2, 2, 2] == 0
    assert rec["labels"] == {
        "1": {"name": "seven", "source_value": 7, "voxels": 12},
        "2": {"name": "big", "source_value": 300, "voxels": 3},
    }
    assert rec["dropped_labels"] == {5: "speck"}
    assert rec["spacing_zyx"] == pytest.approx([3.0, 0.7, 0.5])
    assert json.loads((tmp_path / "Dataset999_Test" / "cases" / "one.json").read_text())["dropped_labels"] == {
        "5": "speck"
    }


def test_read_names_both_csv_styles(tmp_path):
    (tmp_path / "a.csv").write_text(";ROIid;ROIabbr;ROIname\n0;1;lX;Left X\n1;2;rX;Right X\n")
    (tmp_path / "b.csv").write_text("index,name\n0,Background\n4,3rd_Ventricle\n")
    assert P._read_names(tmp_path / "a.csv") == {1: "Left X", 2: "Right X"}
    assert P._read_names(tmp_path / "b.csv") == {0: "Background", 4: "3rd_Ventricle"}


def test_unknown_source(tmp_path):
    with pytest.raises(ValueError):
        P.prepare_data(tmp_path, sources=("synthetic", "tcia"))


def test_cli_synthetic_only(tmp_path, small_shapes, no_network, capsys):
    assert P.main([str(tmp_path), "--sources", "synthetic", "--n-synthetic", "3", "--n-synthetic-dev", "0"]) == 0
    splits = json.loads((tmp_path / "splits.json").read_text())
    assert len(splits["train"]) == 3 and splits["dev"] == []
    assert "done in" in capsys.readouterr().out


@pytest.mark.skipif(not os.environ.get("NNINT_TEST_REGISTRY"), reason="set NNINT_TEST_REGISTRY=1 (network)")
def test_registry_sources(tmp_path):
    splits = P.prepare_data(tmp_path, sources=("registry",), progress=lambda s: None)
    dev = {e["case"] for e in splits["dev"]}
    assert {"nl_icbm09a_tissue", "ar_icbm09c_hammers", "stardist_nuclei"} <= dev
    assert not any("hammers" in e["case"] for e in splits["train"])
