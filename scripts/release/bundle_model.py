"""Ship a trained model inside nnint-core: put its weights in ``nnint/models/NAME`` and write its model card.

    .venv/bin/python scripts/release/bundle_model.py --fold checkpoints/nnint-small-wip \
        --fold box3d=checkpoints/nnint-small-box-wip --eval out/eval-bundled/summary.json \
        --speed docs/bench/bundled-speed.json --name nnint-small

Each ``--fold`` is a weights snapshot (``scripts/release/snapshot_weights.py``: a model folder with
``SNAPSHOT.json``, which records every training command behind the weights). The first is the
model; ``KIND=FOLDER`` adds a specialist that answers every object whose first prompt is of that
kind (the engine's ``specialist_folds``; one folder with a fold each, built by
``ensemble_folder.py``). Writes ``packages/nnint-core/src/nnint/models/NAME/`` with the model folder
(plans.json, dataset.json, inference_info.json, LICENSE, fold_K/checkpoint_final.pth),
``model_card.json`` (what ``nnint models`` lists; ``default: true`` makes it the embedded default)
and ``MODEL_CARD.md``, and copies the evaluation's report.png to ``docs/img/bundled-eval.png``.

Everything in the card is read from files, nothing is typed in: the snapshots' commands, the data's
provenance.json (licences of the training cases), the evaluation's summary.json and results.csv
(``nnint evaluate``) and the speed benchmark's JSON (``scripts/bench/bundled_speed.py``). It
refuses weights over 25 MB in all, and weights from any training command that could have seen a
case whose provenance is not redistributable.
"""

from __future__ import annotations

import argparse
import collections
import json
import platform
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from ensemble_folder import build as build_folds  # the sibling script (scripts/release is sys.path[0])
from snapshot_weights import CKPT, FILES

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "packages" / "nnint-core" / "src" / "nnint" / "models"
EVAL_PNG = REPO / "docs" / "img" / "bundled-eval.png"
SIZE_LIMIT_MB = 25.0
# nnint's training engine options the evaluation and the speed benchmark ran with: bf16 on CPUs/GPUs
# that run it natively, fp32 elsewhere; a positive 3D box is a hard limit (nnint.engine.box_limit);
# corrections work one way (nnint.engine.one_way_correction); small objects and first clicks are
# answered magnified up to 3x (nnint.backends.torch.magnify); the image vetoes predicted voxels of an
# intensity the object lacks (nnint.backends.torch.evidence); a positive click on an object larger
# than the window starts zoomed out to it (engine.object_window)
ENGINE_OPTIONS = {"precision": "fast", "confine_to_box": True, "one_way_corrections": True, "magnify": 3,
                  "intensity_veto": 1.0, "zoom_to_object": True}


def split_comment(command: str) -> tuple[str, str]:
    """A snapshot's command line and its trailing ``   # comment`` (which says where and why it ran)."""
    cmd, _, comment = command.partition("   #")
    return cmd.strip(), comment.strip()


def training_commands(snapshot: dict) -> list[str]:
    """The snapshot's commands without their comments."""
    return [split_comment(c)[0] for c in snapshot["commands"]]


def cpu_model() -> str:
    """The CPU's model name (the CPU runs ran on this kind of machine)."""
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else ():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def training_minutes(snapshots: list[dict]) -> dict:
    """Wall minutes of training behind the weights, on CPUs and on GPUs (``--device cuda``), each
    command counted once (a specialist's snapshot repeats its starting network's commands)."""
    minutes: dict[str, float] = {}
    for snap in snapshots:
        if len(snap.get("command_minutes", ())) != len(snap["commands"]):
            raise SystemExit("a snapshot lacks command_minutes (one number per command): record them in its SNAPSHOT.json")
        minutes.update(zip(training_commands(snap), snap["command_minutes"]))
    gpu = sum(m for c, m in minutes.items() if "--device cuda" in c)
    return {"cpu_minutes": sum(minutes.values()) - gpu, "gpu_minutes": gpu}


def data_sources(commands: list[str]) -> list[str]:
    """Every ``--data`` of the commands; refuses one that trained without ``--redistributable-only``.
    A case pack (``pack:``, the GPU runs) is made from data/raw by ``scripts/device/pack_cases.py
    --redistributable-only``, so it stands for data/raw."""
    sources: list[str] = []
    for cmd in commands:
        words = shlex.split(cmd)
        data = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--data"]
        if data and "--redistributable-only" not in words:
            raise SystemExit(f"a training command did not use --redistributable-only: {cmd}")
        for src in data:
            src = "data/raw" if src.startswith("pack:") else src
            if src not in sources:
                sources.append(src)
    return sources


def data_provenance(sources: list[str]) -> dict:
    """Training sources with case counts and licences; raises if a training case is not redistributable."""
    from nnint.train.dataset import _list_sources

    out = []
    for src in sources:
        if src.startswith("synthetic:"):
            n = len(_list_sources([src], "train"))
            out.append({"source": src, "cases": n, "licence": "generated by nnint.train.synthetic (project licence)",
                        "redistributable": True})
            continue
        cases = _list_sources([str(REPO / src)], "train", redistributable_only=True)
        prov = json.loads((REPO / src / "provenance.json").read_text())
        by = collections.defaultdict(lambda: {"cases": 0, "licences": set(), "packages": set()})
        for name, _ in cases:
            entry = prov[name]
            if not entry.get("redistributable"):
                raise SystemExit(f"training case {name} is not redistributable ({entry.get('licence')})")
            d = by[name.split("/")[0]]
            d["cases"] += 1
            d["licences"].add(entry.get("licence", "?"))
            d["packages"].update(entry.get("packages") or ([entry["package"]] if entry.get("package") else []))
        for ds, d in sorted(by.items()):
            out.append({"source": f"{src}/{ds}", "cases": d["cases"], "licences": sorted(d["licences"]),
                        "registry_packages": sorted(d["packages"]), "redistributable": True})
    return {"sources": out, "cases": sum(s["cases"] for s in out)}


def evaluation_summary(path: Path) -> dict:
    """The headline numbers of an ``nnint evaluate`` output folder (summary.json + results.csv):
    per model and protocol the Dice/NSD curves, NoC, per size group and per dataset."""
    from nnint.evaluate.runner import read_results

    summary = json.loads(path.read_text())
    keep = ("n_targets", "initial_dice", "final_dice", "final_nsd", "dice_per_step", "dice_auc_cvpr",
            "noc80", "noc90", "median_seconds")
    results = {
        model: {proto: {"variant": block["variant"], **{k: block["overall"].get(k) for k in keep},
                        "final_dice_by_size": {g: b["final_dice"] for g, b in block["per_size"].items()}}
                for proto, block in protocols.items()}
        for model, protocols in summary["results"].items()
    }
    final: dict = {}
    for r in read_results(path.parent / "results.csv"):
        key = (r["model"], r["protocol"], r["case"], r["structure"])
        if key not in final or r["step"] > final[key]["step"]:
            final[key] = r
    per_dataset: dict = {}
    for (model, proto, case, _), r in final.items():
        per_dataset.setdefault(case.split("/")[0], {}).setdefault(model, {}).setdefault(proto, []).append(r["dice"])
    per_dataset = {ds: {m: {p: {"n": len(v), "final_dice": round(sum(v) / len(v), 4)} for p, v in pm.items()}
                        for m, pm in mods.items()} for ds, mods in sorted(per_dataset.items())}
    cfg = summary.get("config", {})
    return {
        "folder": str(path.parent.resolve().relative_to(REPO)) if path.resolve().is_relative_to(REPO) else str(path.parent),
        "data": cfg.get("data"), "split": cfg.get("split"), "clicks": cfg.get("clicks"), "seed": cfg.get("seed"),
        "max_structures": cfg.get("max_structures"), "cases": cfg.get("cases"),
        "size_groups": summary.get("size_groups"),
        "results": results,
        "per_dataset": per_dataset,
    }


def model_card_markdown(card: dict) -> str:
    """MODEL_CARD.md: the card for people (model_card.json holds the same facts)."""
    ev, tr, sp, arch = card["evaluation"], card["training"], card["speed"], card["architecture"]
    lines = [
        f"# {card['name']}", "",
        card["description"] + ".", "",
        f"* Licence: {card['license']} (LICENSE). Trained only on data whose licences allow redistribution.",
        f"* Architecture: ResEnc U-Net ({arch['arch']}), {arch['parameters']:,} parameters per network, "
        f"{len(tr['folds'])} network(s), {arch['weights_mb']} MB of float16 weights in all; inference window "
        f"{arch['inference_patch']}^3.",
        f"* Engine options (model_card.json `engine_options`, the ones every number here was measured with): "
        + ", ".join(f"`{k}={json.dumps(v)}`" for k, v in card["engine_options"].items()) + ".",
        f"* Speed (`scripts/bench/bundled_speed.py`): median {sp['median_seconds']:.2f} s per interaction "
        f"(p90 {sp['p90_seconds']:.2f} s) on a {'x'.join(map(str, sp['volume']))} volume with {sp['threads']} "
        f"CPU threads, load average {sp['load_average_before_after'][0]:.1f} during the run.",
        "", "## Evaluation", "",
        f"`nnint evaluate` on the `{ev['split']}` split of `{ev['data']}` (never used for training), "
        f"{ev['clicks']} corrections after the first prompt, simulated-user seed {ev['seed']}, at most "
        f"{ev['max_structures']} structures per case spread from the smallest to the largest.", "",
        "| model | protocol | targets | Dice after 1st prompt | final Dice | final NSD | NoC90 | s/interaction |",
        "|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for model, protos in ev["results"].items():
        for proto, r in protos.items():
            lines.append(f"| {model} | {proto} ({r['variant']}) | {r['n_targets']} | {r['initial_dice']:.3f} | "
                         f"**{r['final_dice']:.3f}** | {r['final_nsd']:.3f} | {r['noc90']:.2f} | {r['median_seconds']:.2f} |")
    lines += ["", "Dice per step (first prompt, then each correction):", ""]
    for model, protos in ev["results"].items():
        for proto, r in protos.items():
            lines.append(f"* {model} / {proto}: " + " -> ".join(f"{v:.3f}" for v in r["dice_per_step"]))
    lines += ["", "Final Dice per dataset of the dev split:", "",
              "| dataset | " + " | ".join(f"{m} {p}" for m, ps in ev["results"].items() for p in ps) + " |",
              "|---|" + "--:|" * sum(len(ps) for ps in ev["results"].values())]
    for ds, mods in ev["per_dataset"].items():
        cells = []
        for m, ps in ev["results"].items():
            for p in ps:
                v = mods.get(m, {}).get(p)
                cells.append(f"{v['final_dice']:.3f} (n={v['n']})" if v else "-")
        lines.append(f"| {ds} | " + " | ".join(cells) + " |")
    lines += ["", "Curves and the worst cases: `docs/img/bundled-eval.png`.", "", "## Training data", ""]
    for src in card["data"]["sources"]:
        lic = src.get("licence") or "; ".join(src.get("licences", []))
        lines.append(f"* `{src['source']}`: {src['cases']} cases; {lic}")
    lines += ["", "## Training", "",
              f"{tr['cpu_minutes'] / 60:.1f} h of training on 2 CPU cores and {tr['gpu_minutes']:.0f} min on a GPU "
              f"in all ({tr['hardware']}); bundled at commit {tr['commit'][:12]}. Each fold's commands, "
              "oldest first (a specialist starts from the general network, so its list repeats that one's):", ""]
    for fold in tr["folds"]:
        lines += [f"### fold {fold['fold']}: {fold['answers']}", "", fold["note"], "", "```"]
        for c, m in zip(fold["commands"], fold["command_minutes"]):
            cmd, comment = split_comment(c)
            lines.append(f"{cmd}   # {m} min" + (f"; {comment}" if comment else ""))
        lines += ["```", ""]
    return "\n".join(lines)


def parse_fold(text: str) -> tuple[str | None, Path]:
    kind, sep, folder = text.rpartition("=")
    return (kind if sep else None), Path(folder)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fold", action="append", required=True, metavar="[KIND=]SNAPSHOT",
                   help="a weights snapshot; the first is the model, KIND=SNAPSHOT a specialist for objects "
                        "whose first prompt is KIND (repeatable)")
    p.add_argument("--name", default="nnint-small")
    p.add_argument("--eval", required=True, help="summary.json of `nnint evaluate` on the dev split, with NAME "
                   "and classical among its models")
    p.add_argument("--speed", required=True, help="JSON written by scripts/bench/bundled_speed.py")
    p.add_argument("--description", default="small promptable 3D segmentation model trained by nnint train "
                   "(points, 2D/3D boxes, scribbles, lassos, initial masks)")
    args = p.parse_args(argv)

    from nnint.engine import PROMPT_KINDS

    folds = [parse_fold(f) for f in args.fold]
    if folds[0][0] is not None or any(k is None for k, _ in folds[1:]):
        raise SystemExit("the first --fold is the model (no KIND=); every further one is KIND=SNAPSHOT")
    for kind, _ in folds[1:]:
        if kind not in PROMPT_KINDS:
            raise SystemExit(f"unknown prompt kind {kind!r}; one of {sorted(PROMPT_KINDS)}")
    snapshots = [json.loads((folder / "SNAPSHOT.json").read_text()) for _, folder in folds]
    # a specialist's snapshot repeats the commands of the network it started from
    commands = list(dict.fromkeys(c for s in snapshots for c in training_commands(s)))
    provenance = data_provenance(data_sources(commands))
    time_spent = training_minutes(snapshots)
    evaluation = evaluation_summary(Path(args.eval))
    if not {args.name, "classical"} <= set(evaluation["results"]):
        raise SystemExit(f"{args.eval} must hold {args.name} (evaluated under that name) and classical")
    size_mb = sum((folder / CKPT).stat().st_size for _, folder in folds) / 1e6
    if size_mb > SIZE_LIMIT_MB:
        raise SystemExit(f"weights are {size_mb:.1f} MB, over the {SIZE_LIMIT_MB} MB limit")

    dest = MODELS / args.name
    if dest.exists():
        shutil.rmtree(dest)
    if len(folds) == 1:
        dest.mkdir()
        for rel in (*FILES, str(CKPT)):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(folds[0][1] / rel, dest / rel)
    else:
        build_folds(dest, [folder for _, folder in folds])
        (dest / "ENSEMBLE.json").unlink()  # the card records the same, with the commands
    options = dict(ENGINE_OPTIONS)
    if len(folds) > 1:
        options.update(use_fold=0, specialist_folds={kind: k for k, (kind, _) in enumerate(folds) if kind})
    config = json.loads((dest / "plans.json").read_text())
    from nnint.backends.torch.checkpoint import load_model_folder

    mf = load_model_folder(dest, 0)
    parameters = sum(w.numel() for w in mf.build_network("cpu").parameters())
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    card = {
        "name": args.name,
        "backend": "torch",
        "default": True,
        "description": args.description,
        "license": (dest / "LICENSE").read_text().splitlines()[0].strip(),
        "engine_options": options,
        "architecture": {"arch": config.get("plans_name", "?"), "parameters": parameters,
                         "weights_mb": round(size_mb, 2), "inference_patch": mf.patch_size[0]},
        "training": {
            "commit": commit,
            "hardware": f"{cpu_model()} (2 cores) for the CPU runs; an NVIDIA GPU for the "
                        f"{sum('--device cuda' in c for c in commands)} runs with --device cuda",
            **time_spent,
            "folds": [{"fold": k, "answers": f"objects whose first prompt is a {kind}" if kind else "every other object",
                       "snapshot": str(folder), "iteration_of_last_run": s["iteration"],
                       "snapshot_commit": s["snapshot_commit"], "note": s.get("note", ""),
                       "commands": s["commands"], "command_minutes": s["command_minutes"],
                       "command_minutes_source": s.get("command_minutes_source", "")}
                      for k, ((kind, folder), s) in enumerate(zip(folds, snapshots))],
        },
        "data": provenance,
        "evaluation": evaluation,
        "speed": json.loads(Path(args.speed).read_text()),
    }
    # the short facts `nnint models` prints
    ours = evaluation["results"][args.name]
    card["prompts"] = "points, 2D/3D boxes, scribbles, lassos, initial masks"
    card["size_mb"] = round(size_mb, 1)
    card["parameters"] = parameters
    card["trained_on"] = (f"{provenance['cases']} redistributable cases; {len(commands)} training runs, "
                          f"{time_spent['cpu_minutes'] / 60:.1f} h on 2 CPU cores + {time_spent['gpu_minutes']:.0f} min "
                          "on a GPU")
    card["dev_dice"] = (", ".join(f"{p} {r['final_dice']:.3f}" for p, r in ours.items())
                        + f" (after {evaluation['clicks']} corrections)")
    (dest / "model_card.json").write_text(json.dumps(card, indent=1, default=str) + "\n")
    (dest / "MODEL_CARD.md").write_text(model_card_markdown(card))
    shutil.copy2(Path(args.eval).parent / "report.png", EVAL_PNG)
    print(f"bundled {args.name}: {len(folds)} network(s), {size_mb:.1f} MB weights, {provenance['cases']} "
          f"training cases -> {dest}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
