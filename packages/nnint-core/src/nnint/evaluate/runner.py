"""The evaluation loop: simulated users drive engines through the public Session API.

For every case, model, protocol and target (one label value): a fresh object, the protocol's
initial prompt (step 0), then ``clicks`` corrections (steps 1..clicks). After every step the
object's mask is scored against the target (Dice; NSD at ``nsd_tolerance_mm``, under the ``all`` or
the CVPR ``challenge`` rule) and the seconds of ``Session.add`` are recorded. Rows are appended to
``OUT/results.csv`` as they come (one row per step); ``resume`` keeps the complete groups of a
previous run and redoes only the rest. A small crop of the final mask on the target's largest
axial cross-section goes to ``OUT/slices/`` for the report's overlays.

Any :class:`~nnint.engine.Engine` works, local or remote: pass built engines to
:func:`run_evaluation`, or model names that :func:`nnint.plugins.load_engine` understands.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import sys
import time
import zlib
from collections.abc import Mapping
from pathlib import Path

import attrs
import numpy as np

from nnint.engine import Engine
from nnint.errors import NnintError
from nnint.evaluate.data import Case, load_case, open_dataset, targets_of
from nnint.evaluate.metrics import challenge_nsd, dice, surface_dice
from nnint.evaluate.protocols import ProtocolSpec, describe_prompt, get_protocol
from nnint.progress import Progress

__all__ = ["EvalConfig", "COLUMNS", "run_evaluation", "build_engines", "read_results", "target_rng"]

#: columns of results.csv, in order
COLUMNS = (
    "model", "protocol", "variant", "case", "structure", "label", "voxels",
    "step", "prompt", "dice", "nsd", "seconds", "pred_voxels",
)  # fmt: skip


def _names(value) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


@attrs.frozen
class EvalConfig:
    data: str | os.PathLike
    out: str | os.PathLike
    models: tuple[str, ...] = attrs.field(default=(), converter=_names)
    backend: str | None = None
    protocols: tuple[str, ...] = attrs.field(default=("box+clicks",), converter=_names)
    clicks: int = 5
    resume: bool = False
    split: str | None = None
    max_cases: int | None = None
    labels: tuple[int, ...] | None = attrs.field(default=None, converter=attrs.converters.optional(tuple))
    #: at most this many structures per case, spread over the size range (None: all)
    max_structures: int | None = None
    device: str = "cpu"
    seed: int = 0
    nsd_rule: str = "all"
    nsd_tolerance_mm: float = 2.0
    progress: bool = True

    def __attrs_post_init__(self) -> None:
        if self.max_structures is not None and self.max_structures < 1:
            raise NnintError(f"--structures must be >= 1, got {self.max_structures}")
        if self.clicks < 0:
            raise NnintError(f"--clicks must be >= 0, got {self.clicks}")
        if self.nsd_rule not in ("all", "challenge"):
            raise NnintError(f"nsd_rule must be 'all' or 'challenge', got {self.nsd_rule!r}")
        if not self.protocols:
            raise NnintError("no protocol given")


def model_names(models: tuple[str, ...], backend: str | None) -> list[str]:
    """The models a config evaluates: ``--backend classical`` alone means the classical backend."""
    if models:
        return list(dict.fromkeys(models))
    if backend:
        return [backend]
    from nnint.plugins import default_model_name

    name = default_model_name()
    if name is None:
        raise NnintError("no --model given and no default model registered; pass --model NAME or --backend classical")
    return [name]


def build_engines(models: tuple[str, ...], backend: str | None = None, device: str = "cpu") -> dict[str, Engine]:
    """Engines by display name, built with :func:`nnint.plugins.load_engine`."""
    from nnint.plugins import backends, load_engine
    from nnint.plugins import models as registered

    engines: dict[str, Engine] = {}
    known = backends()
    for name in model_names(models, backend):
        spec = known.get(name)
        if name not in registered() and spec is not None and not spec.needs_model:
            # a backend without model files named as a model: "--model classical"
            engines[name] = load_engine(None, backend=name, device=device)
        else:
            engines[name] = load_engine(name, backend=backend, device=device)
    return engines


def target_rng(seed: int, case: str, label: int, protocol: str) -> np.random.Generator:
    """The simulated user's generator for one target: the same for every model (fair comparisons)."""
    key = [int(seed) & 0xFFFFFFFF, zlib.crc32(case.encode()), int(label), zlib.crc32(protocol.encode())]
    return np.random.default_rng(np.random.SeedSequence(key))


def read_results(path: str | os.PathLike) -> list[dict]:
    """Rows of a results.csv, with numbers converted."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            for key in ("label", "voxels", "step", "pred_voxels"):
                if row.get(key) not in (None, ""):
                    row[key] = int(row[key])
            for key in ("dice", "nsd", "seconds"):
                if row.get(key) not in (None, ""):
                    row[key] = float(row[key])
            rows.append(row)
    return rows


def _group_key(row: Mapping) -> tuple[str, str, str, str]:
    return (str(row["case"]), str(row["structure"]), str(row["model"]), str(row["protocol"]))


def slice_file(out: Path, model: str, protocol: str, case: str, structure: str) -> Path:
    digest = hashlib.sha1("\0".join((model, protocol, case, structure)).encode()).hexdigest()[:16]
    return out / "slices" / f"{digest}.npz"


def _save_slice(path: Path, image: np.ndarray, gt: np.ndarray, pred: np.ndarray, spacing_zyx) -> None:
    """The axial slice with the largest target area, cropped around target and prediction."""
    areas = gt.sum(axis=(1, 2))
    z = int(np.argmax(areas))
    both = gt[z] | pred[z]
    ys, xs = np.nonzero(both)
    margin = 6
    y0, y1 = max(int(ys.min()) - margin, 0), min(int(ys.max()) + margin + 1, gt.shape[1])
    x0, x1 = max(int(xs.min()) - margin, 0), min(int(xs.max()) + margin + 1, gt.shape[2])
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        image=image[z, y0:y1, x0:x1].astype(np.float32),
        gt=gt[z, y0:y1, x0:x1],
        pred=pred[z, y0:y1, x0:x1],
        z=z,
        aspect=float(spacing_zyx[1] / spacing_zyx[2]),
    )


class _Writer:
    def __init__(self, path: Path, keep: list[dict]) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(keep)

    def write(self, row: dict) -> None:
        with self.path.open("a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore").writerow(row)


def run_evaluation(config: EvalConfig, engines: Mapping[str, Engine] | None = None) -> Path:
    """Run the evaluation described by ``config``; returns the path of results.csv.

    ``engines`` (name -> Engine) replaces building engines from ``config.models``; use it for
    engines that are not registered (a remote engine, a test double).
    """
    from nnint.session import Session

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    dataset = open_dataset(config.data, split=config.split, max_cases=config.max_cases)
    protocols: dict[str, ProtocolSpec] = {name: get_protocol(name) for name in config.protocols}
    if engines is None:
        engines = build_engines(config.models, config.backend, config.device)
    engines = dict(engines)

    # fail early when a model cannot take a protocol's prompts (the factory checks capabilities)
    variants: dict[tuple[str, str], str] = {}
    probe = np.ones((1, 1, 1), bool)
    for mname, engine in engines.items():
        for pname, spec in protocols.items():
            user = spec.factory(probe, rng=np.random.default_rng(0), spacing=(1.0, 1.0, 1.0),
                                capabilities=engine.capabilities)
            variants[(mname, pname)] = str(getattr(user, "variant", pname))

    results = out / "results.csv"
    steps = set(range(config.clicks + 1))
    keep: list[dict] = []
    done: set[tuple[str, str, str, str]] = set()
    if config.resume:
        previous = read_results(results)
        by_group: dict[tuple, list[dict]] = {}
        for row in previous:
            by_group.setdefault(_group_key(row), []).append(row)
        for key, rows in by_group.items():
            if {r["step"] for r in rows} >= steps:
                done.add(key)
                keep.extend(r for r in rows if r["step"] in steps)
    writer = _Writer(results, keep)
    (out / "config.json").write_text(json.dumps({
        "data": str(config.data), "split": config.split, "models": list(engines), "backend": config.backend,
        "protocols": list(protocols), "variants": {f"{m} / {p}": v for (m, p), v in variants.items()},
        "clicks": config.clicks, "seed": config.seed, "nsd_rule": config.nsd_rule,
        "nsd_tolerance_mm": config.nsd_tolerance_mm, "labels": list(config.labels) if config.labels else None,
        "max_structures": config.max_structures, "cases": [c.name for c in dataset.cases],
    }, indent=1))

    progress = Progress(len(dataset.cases) * len(engines), "evaluate", enabled=config.progress)
    errors: list[tuple] = []
    for case in dataset.cases:
        _run_case(case, config, engines, protocols, variants, done, writer, progress, out, Session, errors)
    if errors:
        print(f"nnint evaluate: {len(errors)} target(s) failed (see above); `--resume` retries them", file=sys.stderr)
    return results


def _run_case(case: Case, config, engines, protocols, variants, done, writer, progress, out, Session, errors) -> None:
    image, labels = load_case(case)
    values = targets_of(labels, config.labels, config.max_structures)
    for mname, engine in engines.items():
        pending = [
            (p, v) for p in protocols for v in values
            if (case.name, case.structure(v), mname, p) not in done
        ]
        if not pending:
            progress.advance(note=f"{case.name} (done)")
            continue
        session = Session(image, engine, engine_info={"model": mname})
        spacing = image.spacing_zyx
        notes = []
        for pname, value in pending:
            gt = labels == value
            structure = case.structure(value)
            rng = target_rng(config.seed, case.name, value, pname)
            user = protocols[pname].factory(gt, rng=rng, spacing=spacing, capabilities=engine.capabilities)
            variant = str(getattr(user, "variant", variants[(mname, pname)]))
            obj = session.new_object(name=structure)
            base = {
                "model": mname, "protocol": pname, "variant": variant, "case": case.name,
                "structure": structure, "label": value, "voxels": int(gt.sum()),
            }
            pred = np.zeros(gt.shape, bool)
            d = float("nan")
            try:
                for step in range(config.clicks + 1):
                    prompt = user.first() if step == 0 else user.next(obj.mask)
                    seconds = 0.0
                    if prompt is not None:
                        t0 = time.perf_counter()
                        session.add(prompt, object_id=obj.id)
                        seconds = time.perf_counter() - t0
                    pred = obj.mask.astype(bool)
                    d = dice(pred, gt)
                    if config.nsd_rule == "challenge":
                        n = challenge_nsd(pred, gt, spacing, dsc=d, tolerance_mm=config.nsd_tolerance_mm)
                    else:
                        n = surface_dice(pred, gt, spacing, config.nsd_tolerance_mm)
                    writer.write({
                        **base, "step": step, "prompt": describe_prompt(prompt), "dice": f"{d:.6f}",
                        "nsd": f"{n:.6f}", "seconds": f"{seconds:.6f}", "pred_voxels": int(pred.sum()),
                    })
                _save_slice(slice_file(out, mname, pname, case.name, structure), image.array, gt, pred, spacing)
            except NnintError as exc:
                # one failing target must not end a long evaluation; its rows stay incomplete, so
                # the group is redone by --resume (and left out of the summary until then)
                print(f"nnint evaluate: {case.name} / {structure} / {mname} / {pname} failed: {exc}",
                      file=sys.stderr)
                errors.append((case.name, structure, mname, pname, str(exc)))
            finally:
                session.remove(obj.id)
            notes.append(f"{structure} {d:.2f}")
        progress.advance(note=f"{case.name} {mname}: " + ", ".join(notes[:4]) + (" ..." if len(notes) > 4 else ""))
