"""`nnint evaluate` end to end, the dataset reader, resume, and the report."""

from __future__ import annotations

import csv
import json

import matplotlib.image
import numpy as np
import pytest
import SimpleITK as sitk

from nnint.backends.classical import ClassicalEngine
from nnint.cli import main
from nnint.engine import PROMPT_KINDS, Capabilities
from nnint.errors import NnintError
from nnint.evaluate.data import DataError, load_case, open_dataset, targets_of, write_nnunet_dataset
from nnint.evaluate.runner import COLUMNS, EvalConfig, read_results, run_evaluation, target_rng

CLICKS = 3


def _case(rng, i):
    shape = (32, 32, 32)
    z, y, x = np.ogrid[:32, :32, :32]
    lab = np.zeros(shape, np.int32)
    lab[(z - 16) ** 2 + (y - 11) ** 2 + (x - 12 - i) ** 2 <= 36] = 1
    lab[(z - 14) ** 2 + (y - 21) ** 2 + (x - 21) ** 2 <= 20 + 10 * i] = 2
    img = 40 + 70 * (lab == 1) + 140 * (lab == 2) + rng.normal(0, 10, shape)
    return f"case{i:02d}", img.astype(np.float32), lab, (1.5, 1.0, 1.0)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "Dataset001_Toy"
    rng = np.random.default_rng(0)
    return write_nnunet_dataset(root, [_case(rng, 0), _case(rng, 1)], {"liver": 1, "tumour": 2})


@pytest.fixture(scope="module")
def evaluated(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    code = main([
        "evaluate", "--data", str(dataset), "--backend", "classical", "--protocol", "box+clicks",
        "--protocol", "points,scribble", "--clicks", str(CLICKS), "--out", str(out), "--quiet",
    ])
    assert code == 0
    return out


class Counting:
    """Wraps an engine and counts predictions; optionally hides box3d (a 2D-only model)."""

    def __init__(self, no_box3d: bool = False) -> None:
        self.inner = ClassicalEngine()
        kinds = PROMPT_KINDS - {"box3d"} if no_box3d else PROMPT_KINDS
        self.capabilities = Capabilities(kinds)
        self.calls = 0

    def set_image(self, image) -> None:
        self.inner.set_image(image)

    def predict(self, prompts, mask):
        self.calls += 1
        return self.inner.predict(prompts, mask)


def _rows(out):
    with (out / "results.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_results_csv(evaluated):
    rows = _rows(evaluated)
    assert set(("case", "structure", "step", "prompt", "dice", "nsd", "seconds", "model", "protocol", "label",
                "voxels")) <= set(rows[0])
    assert list(rows[0]) == list(COLUMNS)
    # 2 cases x 2 labels x 3 protocols x (initial + CLICKS)
    assert len(rows) == 2 * 2 * 3 * (CLICKS + 1)
    assert {r["model"] for r in rows} == {"classical"}
    assert {r["structure"] for r in rows} == {"liver", "tumour"}
    assert {r["variant"] for r in rows if r["protocol"] == "box+clicks"} == {"box3d"}
    for r in rows:
        assert 0 <= float(r["dice"]) <= 1 and 0 <= float(r["nsd"]) <= 1 and float(r["seconds"]) >= 0
    firsts = [r for r in rows if r["step"] == "0"]
    assert {r["prompt"] for r in firsts if r["protocol"] == "box+clicks"} == {"box3d+"}
    assert {r["prompt"] for r in firsts if r["protocol"] == "points"} == {"point+"}
    assert {r["prompt"] for r in firsts if r["protocol"] == "scribble"} == {"scribble+"}
    # the classical floor does the easy toy targets well
    assert np.mean([float(r["dice"]) for r in rows if r["step"] == str(CLICKS)]) > 0.8


def test_summary_and_report(evaluated):
    summary = json.loads((evaluated / "summary.json").read_text())
    for key in ("metrics", "config", "size_groups", "overall", "per_model", "per_protocol", "results"):
        assert key in summary
    assert set(summary["per_protocol"]) == {"box+clicks", "points", "scribble"}
    block = summary["results"]["classical"]["box+clicks"]
    assert block["variant"] == "box3d"
    assert set(block["per_structure"]) == {"liver", "tumour"}
    assert set(block["per_size"]) <= {"small", "medium", "large"}
    for b in [summary["overall"], *summary["per_model"].values(), *summary["per_protocol"].values(),
              block["overall"], *block["per_structure"].values()]:
        for key in ("initial_dice", "final_dice", "final_nsd", "dice_auc_mean", "nsd_auc_mean", "reached80"):
            assert 0 <= b[key] <= 1, key
        assert all(0 <= v <= 1 for v in b["dice_per_step"]) and len(b["dice_per_step"]) == CLICKS + 1
        assert 0 <= b["dice_auc_cvpr"] <= CLICKS - 1  # trapezoid over the CLICKS correction steps
        assert 1 <= b["noc90"] <= CLICKS + 1
        assert b["median_seconds"] > 0
    assert "trapezoid" in summary["metrics"]["dice_auc_cvpr"] and "mean" in summary["metrics"]["dice_auc_mean"]
    png = matplotlib.image.imread(evaluated / "report.png")
    assert png.shape[0] > 400 and png.shape[1] > 800
    assert float(png[..., :3].var()) > 1e-3  # not blank


def test_resume_skips_finished_groups(dataset, evaluated, tmp_path):
    # a copy of a finished run: resume does nothing
    out = tmp_path / "out"
    out.mkdir()
    original = (evaluated / "results.csv").read_text()
    (out / "results.csv").write_text(original)
    config = EvalConfig(dataset, out, protocols=("box+clicks", "points", "scribble"), clicks=CLICKS, resume=True,
                        progress=False)
    engine = Counting()
    run_evaluation(config, engines={"classical": engine})
    assert engine.calls == 0
    assert len(read_results(out / "results.csv")) == len(original.strip().splitlines()) - 1

    # drop one group and the last step of another: only those two are redone
    lines = original.strip().splitlines()
    header, body = lines[0], lines[1:]
    kept = [ln for ln in body if not (",case01,tumour," in ln and ln.startswith("classical,points,"))]
    kept = [ln for ln in kept if not (",case00,liver," in ln and ln.startswith("classical,scribble,")
                                      and f",{CLICKS},scribble" in ln)]
    assert len(kept) == len(body) - 2 * (CLICKS + 1) + CLICKS
    (out / "results.csv").write_text("\n".join([header, *kept]) + "\n")
    engine = Counting()
    run_evaluation(config, engines={"classical": engine})
    assert 0 < engine.calls <= 2 * (CLICKS + 1)
    rows = read_results(out / "results.csv")
    assert len(rows) == len(body)
    keys = [(r["case"], r["structure"], r["model"], r["protocol"], r["step"]) for r in rows]
    assert len(set(keys)) == len(keys)  # no duplicates
    # a resumed run reproduces the same numbers (seeded users, deterministic engine)
    before = {(r["case"], r["structure"], r["protocol"], r["step"]): r["dice"] for r in read_results(evaluated / "results.csv")}
    for r in rows:
        assert before[(r["case"], r["structure"], r["protocol"], r["step"])] == pytest.approx(r["dice"])


def test_two_models_side_by_side_and_the_2d_box_variant(dataset, tmp_path):
    out = tmp_path / "two"
    config = EvalConfig(dataset, out, clicks=2, labels=(2,), max_cases=1, progress=False, nsd_rule="challenge")
    run_evaluation(config, engines={"full": Counting(), "no-box3d": Counting(no_box3d=True)})
    rows = read_results(out / "results.csv")
    assert len(rows) == 2 * 3
    variants = {r["model"]: r["variant"] for r in rows}
    assert variants == {"full": "box3d", "no-box3d": "box2d"}
    assert {r["prompt"] for r in rows if r["step"] == 0} == {"box3d+", "box2d+"}
    assert {r["label"] for r in rows} == {2} and {r["case"] for r in rows} == {"case00"}
    for r in rows:
        if r["dice"] <= 0.2:
            assert r["nsd"] == 0
    from nnint.evaluate.report import write_report

    summary = write_report(out)
    assert set(summary["per_model"]) == {"full", "no-box3d"}


def test_users_are_seeded_per_case_and_target():
    a = target_rng(0, "case00", 1, "points").integers(1 << 30, size=4)
    b = target_rng(0, "case00", 1, "points").integers(1 << 30, size=4)
    c = target_rng(0, "case00", 2, "points").integers(1 << 30, size=4)
    d = target_rng(1, "case00", 1, "points").integers(1 << 30, size=4)
    assert (a == b).all() and not (a == c).all() and not (a == d).all()


# --- datasets ------------------------------------------------------------------------------------


def test_nnunet_layout_splits_and_labels(dataset):
    ds = open_dataset(dataset)
    assert [c.name for c in ds.cases] == ["case00", "case01"] and ds.layout == "nnunet"
    assert ds.cases[0].structure(1) == "liver" and ds.cases[0].structure(7) == "label7"
    image, labels = load_case(ds.cases[0])
    assert image.shape == labels.shape == (32, 32, 32)
    assert image.spacing_zyx == (1.5, 1.0, 1.0)
    assert targets_of(labels) == [1, 2] and targets_of(labels, [2, 5]) == [2]
    assert [c.name for c in open_dataset(dataset, max_cases=1).cases] == ["case00"]
    # no splits file: every 10th training case is dev (the rule nnint train uses), the rest train
    assert [c.name for c in open_dataset(dataset, split="train").cases] == ["case00", "case01"]
    with pytest.raises(DataError, match="no labelled case"):
        open_dataset(dataset, split="dev")  # only 2 cases: no 10th
    (dataset / "splits.json").write_text(json.dumps({"dev": ["case01"], "train": ["case00"]}))
    try:
        assert [c.name for c in open_dataset(dataset, split="dev").cases] == ["case01"]
        with pytest.raises(DataError, match="available"):
            open_dataset(dataset, split="nope")
        (dataset / "splits.json").write_text(json.dumps([{"train": ["case00"], "val": ["case01"]}]))
        assert [c.name for c in open_dataset(dataset, split="dev").cases] == ["case01"]
    finally:
        (dataset / "splits.json").unlink()
    # a folder of datasets
    ds = open_dataset(dataset.parent)
    assert ds.layout == "nnunet-collection" and ds.cases[0].name == "Dataset001_Toy/case00"


def test_structure_cap_spreads_over_sizes():
    labels = np.zeros((10, 10, 10), np.uint8)
    sizes = {7: 50, 2: 5, 9: 200, 4: 20, 5: 1}
    flat = labels.reshape(-1)
    pos = 0
    for v, n in sizes.items():
        flat[pos:pos + n] = v
        pos += n
    assert targets_of(labels, most=2) == [5, 9]  # the smallest and the largest
    assert targets_of(labels, most=3) == [4, 5, 9]  # ... and the median
    assert targets_of(labels, most=10) == [2, 4, 5, 7, 9]
    assert targets_of(labels, [2, 7, 9], most=2) == [2, 9]


def test_prepared_collection_layout(dataset, tmp_path):
    """The layout nnint.train.prepare writes: a top-level splits.json of records, per-case names."""
    import shutil

    root = tmp_path / "raw"
    shutil.copytree(dataset, root / "Dataset001_Toy")
    (root / "Dataset001_Toy" / "cases").mkdir()
    (root / "Dataset001_Toy" / "cases" / "case01.json").write_text(json.dumps(
        {"labels": {"1": {"name": "left thalamus", "voxels": 5}, "2": {"name": "right thalamus"}}}))
    (root / "splits.json").write_text(json.dumps({
        "version": 1, "rule": "text", "dev_groups": ["g"],
        "train": [{"dataset": "Dataset001_Toy", "case": "case00"}],
        "dev": [{"dataset": "Dataset001_Toy", "case": "case01", "n_labels": 2}],
    }))
    dev = open_dataset(root, split="dev").cases
    assert [c.name for c in dev] == ["Dataset001_Toy/case01"]
    assert dev[0].structure(1) == "left thalamus" and dev[0].structure(2) == "right thalamus"
    train = open_dataset(root, split="train").cases
    assert [c.name for c in train] == ["Dataset001_Toy/case00"] and train[0].structure(1) == "liver"
    assert len(open_dataset(root).cases) == 2
    # one dataset of the collection: the collection's splits.json still applies
    assert [c.name for c in open_dataset(root / "Dataset001_Toy", split="dev").cases] == ["case01"]
    (root / "splits.json").unlink()
    meta = json.loads((root / "Dataset001_Toy" / "dataset.json").read_text())
    meta["dev_split"] = {"folder": "imagesTs / labelsTs", "cases": ["case00"]}
    (root / "Dataset001_Toy" / "dataset.json").write_text(json.dumps(meta))
    assert [c.name for c in open_dataset(root / "Dataset001_Toy", split="dev").cases] == ["case00"]


def test_manifest_v1_labels_and_resampling(tmp_path):
    rng = np.random.default_rng(5)
    img = rng.normal(size=(16, 20, 24)).astype(np.float32)
    itk = sitk.GetImageFromArray(img)
    itk.SetSpacing((1.0, 1.0, 2.0))
    itk.SetOrigin((3.0, -2.0, 5.0))
    sitk.WriteImage(itk, str(tmp_path / "img.nii.gz"))
    # labels on a grid of half the resolution in x and y, same physical extent
    lab = np.zeros((16, 10, 12), np.uint8)
    lab[4:10, 2:6, 3:8] = 3
    litk = sitk.GetImageFromArray(lab)
    litk.SetSpacing((2.0, 2.0, 2.0))
    litk.SetOrigin((3.5, -1.5, 5.0))
    sitk.WriteImage(litk, str(tmp_path / "lab.nii.gz"))
    (tmp_path / "manifest.json").write_text(json.dumps({
        "labels": {"0": "background", "3": "kidney"},
        "cases": [{"name": "k1", "image": "img.nii.gz", "label": "lab.nii.gz"}],
    }))
    ds = open_dataset(tmp_path)
    assert ds.layout == "manifest" and ds.cases[0].structure(3) == "kidney"
    image, labels = load_case(ds.cases[0])
    assert labels.shape == image.shape == (16, 20, 24)
    assert targets_of(labels) == [3]
    # one label voxel (2x2 mm in-plane) covers 2x2 image voxels
    assert (labels == 3).sum() == 6 * 8 * 10
    assert labels[6, 5, 7] == 3 and labels[6, 0, 0] == 0


def test_bad_inputs(tmp_path, dataset):
    with pytest.raises(DataError):
        open_dataset(tmp_path / "missing")
    with pytest.raises(DataError, match="no dataset.json"):
        open_dataset(tmp_path)
    assert main(["evaluate", "--data", str(tmp_path), "--backend", "classical", "--out", str(tmp_path / "o")]) == 1
    assert main(["evaluate", "--data", str(dataset), "--backend", "classical", "--protocol", "nope",
                 "--out", str(tmp_path / "o")]) == 1
    with pytest.raises(NnintError):
        EvalConfig(dataset, tmp_path, clicks=-1)


def test_default_dev_split_is_every_10th_case(tmp_path):
    rng = np.random.default_rng(0)
    cases = []
    for i in range(12):
        img = rng.normal(size=(4, 4, 4)).astype(np.float32)
        sitk.WriteImage(sitk.GetImageFromArray(img), str(tmp_path / f"i{i:02d}.nii.gz"))
        sitk.WriteImage(sitk.GetImageFromArray((img > 0).astype(np.uint8)), str(tmp_path / f"l{i:02d}.nii.gz"))
        cases.append({"name": f"c{i:02d}", "image": f"i{i:02d}.nii.gz", "label": f"l{i:02d}.nii.gz"})
    (tmp_path / "manifest.json").write_text(json.dumps({"cases": cases}))
    assert [c.name for c in open_dataset(tmp_path, split="dev").cases] == ["c09"]
    train = [c.name for c in open_dataset(tmp_path, split="train").cases]
    assert len(train) == 11 and "c09" not in train
