"""Summaries and plots of an evaluation: ``OUT/summary.json`` and ``OUT/report.png`` from ``OUT/results.csv``.

Per group of targets (overall, per model, per protocol, per model and protocol, per structure,
per size group) the summary holds:

``n_targets``
    targets (case, structure) in the group.
``initial_dice``, ``final_dice``, ``final_nsd``
    mean Dice after the initial prompt (step 0), mean Dice and NSD after the last step.
``dice_per_step``, ``nsd_per_step``
    mean over targets at each step 0..N.
``dice_auc_cvpr``, ``nsd_auc_cvpr``
    **CVPR 2025 DSC_AUC / NSD_AUC**: the trapezoid rule with unit spacing over the *correction*
    steps 1..N only (the initial prompt excluded): ``0.5 d1 + d2 + ... + d(N-1) + 0.5 dN``, range
    0..N-1 (0..4 for 5 clicks); mean over targets. None when N < 2.
``dice_auc_mean``, ``nsd_auc_mean``
    **nnInteractive "AUC"**: the plain mean over all interactions 0..N (initial prompt
    included), range 0..1; mean over targets.
``noc80``, ``noc90``
    number of interactions (the initial prompt counts as 1) until Dice >= 0.8 / 0.9, with targets
    that never get there counted as N + 1; ``reached80`` / ``reached90`` are the fractions of
    targets that got there.
``median_seconds``, ``mean_seconds``
    seconds per interaction (``Session.add``), over all steps that had a prompt.

Size groups split targets by voxel count at the terciles of the evaluated targets (the bounds are
in ``size_groups``).
"""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from nnint.errors import NnintError
from nnint.evaluate.metrics import auc_mean, auc_trapezoid, clicks_to_reach
from nnint.evaluate.runner import read_results, slice_file

__all__ = ["summarize", "write_report", "plot_report", "target_curves"]

SIZE_GROUPS = ("small", "medium", "large")

METRIC_NOTES = {
    "dice_auc_cvpr": "CVPR 2025 DSC_AUC: trapezoid rule (unit spacing) over correction steps 1..N, initial prompt "
                     "excluded; range 0..N-1",
    "nsd_auc_cvpr": "CVPR 2025 NSD_AUC: as dice_auc_cvpr, for NSD",
    "dice_auc_mean": "nnInteractive AUC: mean Dice over interactions 0..N (initial prompt included); range 0..1",
    "nsd_auc_mean": "as dice_auc_mean, for NSD",
    "noc80": "interactions (initial prompt = 1) until Dice >= 0.8; not reached counts as N+1",
    "noc90": "interactions (initial prompt = 1) until Dice >= 0.9; not reached counts as N+1",
    "final_dice": "mean Dice after the last step",
    "initial_dice": "mean Dice after the initial prompt (step 0)",
    "median_seconds": "median seconds per interaction (Session.add), steps with a prompt only",
}


def target_curves(rows: Iterable[dict]) -> list[dict]:
    """One record per (model, protocol, case, structure): steps sorted, with dice/nsd/seconds lists."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["protocol"], row["case"], row["structure"]), []).append(row)
    out = []
    for (model, protocol, case, structure), items in groups.items():
        items.sort(key=lambda r: r["step"])
        out.append({
            "model": model, "protocol": protocol, "case": case, "structure": structure,
            "variant": items[0].get("variant", ""), "voxels": int(items[0]["voxels"]),
            "dice": [float(r["dice"]) for r in items], "nsd": [float(r["nsd"]) for r in items],
            "seconds": [float(r["seconds"]) for r in items if r.get("prompt") != "none"],
        })
    return out


def _complete(curves: list[dict], config: dict | None) -> tuple[list[dict], int]:
    """Drop targets whose run stopped early (a failure; ``--resume`` redoes them)."""
    if config and isinstance(config.get("clicks"), int):
        expected = config["clicks"] + 1
    else:
        expected = max((len(c["dice"]) for c in curves), default=0)
    kept = [c for c in curves if len(c["dice"]) >= expected]
    return kept, len(curves) - len(kept)


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _block(curves: list[dict]) -> dict:
    if not curves:
        return {"n_targets": 0}
    n_steps = min(len(c["dice"]) for c in curves)
    dice = np.array([c["dice"][:n_steps] for c in curves])
    nsd = np.array([c["nsd"][:n_steps] for c in curves])
    seconds = [s for c in curves for s in c["seconds"]]
    out: dict = {
        "n_targets": len(curves),
        "initial_dice": float(dice[:, 0].mean()),
        "final_dice": float(dice[:, -1].mean()),
        "initial_nsd": float(nsd[:, 0].mean()),
        "final_nsd": float(nsd[:, -1].mean()),
        "dice_per_step": [float(v) for v in dice.mean(0)],
        "nsd_per_step": [float(v) for v in nsd.mean(0)],
        "dice_auc_cvpr": _mean(auc_trapezoid(d[1:]) for d in dice) if n_steps >= 3 else None,
        "nsd_auc_cvpr": _mean(auc_trapezoid(d[1:]) for d in nsd) if n_steps >= 3 else None,
        "dice_auc_mean": _mean(auc_mean(d) for d in dice),
        "nsd_auc_mean": _mean(auc_mean(d) for d in nsd),
    }
    for thr in (80, 90):
        hits = [clicks_to_reach(d, thr / 100) for d in dice]
        out[f"noc{thr}"] = float(np.mean([n_steps if h is None else h + 1 for h in hits]))
        out[f"reached{thr}"] = float(np.mean([h is not None for h in hits]))
    out["median_seconds"] = float(np.median(seconds)) if seconds else 0.0
    out["mean_seconds"] = float(np.mean(seconds)) if seconds else 0.0
    return _rounded(out)


def _rounded(value):
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def size_bounds(curves: list[dict]) -> tuple[float, float]:
    sizes = sorted({(c["case"], c["structure"], c["voxels"]) for c in curves}, key=lambda t: t[2])
    vox = np.array([s[2] for s in sizes], dtype=float)
    if vox.size == 0:
        return (0.0, 0.0)
    return float(np.quantile(vox, 1 / 3)), float(np.quantile(vox, 2 / 3))


def size_group(voxels: int, bounds: tuple[float, float]) -> str:
    return "small" if voxels < bounds[0] else "medium" if voxels < bounds[1] else "large"


def summarize(rows: list[dict], config: dict | None = None) -> dict:
    """The summary.json content for ``rows`` of results.csv."""
    curves, incomplete = _complete(target_curves(rows), config)
    bounds = size_bounds(curves)
    summary: dict = {
        "incomplete_targets": incomplete,
        "metrics": METRIC_NOTES,
        "config": config or {},
        "size_groups": {
            "small": f"voxels < {bounds[0]:.0f}",
            "medium": f"{bounds[0]:.0f} <= voxels < {bounds[1]:.0f}",
            "large": f"voxels >= {bounds[1]:.0f}",
            "bounds": list(bounds),
        },
        "overall": _block(curves),
        "per_model": {},
        "per_protocol": {},
        "results": {},
    }
    models = list(dict.fromkeys(c["model"] for c in curves))
    protocols = list(dict.fromkeys(c["protocol"] for c in curves))
    for m in models:
        summary["per_model"][m] = _block([c for c in curves if c["model"] == m])
    for p in protocols:
        summary["per_protocol"][p] = _block([c for c in curves if c["protocol"] == p])
    for m in models:
        summary["results"][m] = {}
        for p in protocols:
            sub = [c for c in curves if c["model"] == m and c["protocol"] == p]
            if not sub:
                continue
            block = {"variant": sub[0]["variant"], "overall": _block(sub), "per_structure": {}, "per_size": {}}
            for s in sorted({c["structure"] for c in sub}):
                block["per_structure"][s] = _block([c for c in sub if c["structure"] == s])
            for g in SIZE_GROUPS:
                part = [c for c in sub if size_group(c["voxels"], bounds) == g]
                if part:
                    block["per_size"][g] = _block(part)
            summary["results"][m][p] = block
    return summary


def write_report(out: str | os.PathLike, *, worst: int = 4) -> dict:
    """Write ``summary.json`` and ``report.png`` into ``out`` from its results.csv; returns the summary."""
    out = Path(out)
    rows = read_results(out / "results.csv")
    if not rows:
        raise NnintError(f"{out / 'results.csv'} is missing or empty; run `nnint evaluate` first")
    config_path = out / "config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    summary = summarize(rows, config)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    plot_report(rows, out / "report.png", out=out, worst=worst, summary=summary)
    return summary


def plot_report(rows: list[dict], path: Path, *, out: Path | None = None, worst: int = 4, summary: dict | None = None) -> None:
    """Dice against interaction step per model and protocol, split by size group; overlays of the worst cases."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    curves, _ = _complete(target_curves(rows), (summary or {}).get("config"))
    bounds = size_bounds(curves)
    series = list(dict.fromkeys((c["model"], c["protocol"], c["variant"]) for c in curves))
    panels = [None, *SIZE_GROUPS]
    fig = plt.figure(figsize=(17, 9.2), dpi=100)
    grid = fig.add_gridspec(2, max(4, worst), height_ratios=[1.0, 1.0], hspace=0.45, wspace=0.28)
    colors = plt.get_cmap("tab10")
    styles = ["-", "--", ":", "-."]
    markers = ["o", "s", "^", "D"]
    models = list(dict.fromkeys(c["model"] for c in curves))
    protocols = list(dict.fromkeys(c["protocol"] for c in curves))
    for i, group in enumerate(panels):
        ax = fig.add_subplot(grid[0, i])
        for m, p, v in series:
            sub = [c for c in curves if c["model"] == m and c["protocol"] == p
                   and (group is None or size_group(c["voxels"], bounds) == group)]
            if not sub:
                continue
            n = min(len(c["dice"]) for c in sub)
            mean = np.mean([c["dice"][:n] for c in sub], axis=0)
            label = f"{m} / {p}" + (f" ({v})" if v and v != p else "")
            # colour: protocol; line style and marker: model
            mi, pi = models.index(m), protocols.index(p)
            ax.plot(range(n), mean, styles[mi % 4], marker=markers[mi % 4], ms=4, lw=1.6,
                    color=colors(pi % 10), label=label)
        if group is None:
            ax.set_title(f"all targets (n={len({(c['case'], c['structure']) for c in curves})})", fontsize=11)
        else:
            lo = 0 if group == "small" else bounds[0] if group == "medium" else bounds[1]
            hi = bounds[0] if group == "small" else bounds[1] if group == "medium" else None
            n_t = len({(c["case"], c["structure"]) for c in curves if size_group(c["voxels"], bounds) == group})
            rng = f"< {hi:.0f}" if lo == 0 else (f">= {lo:.0f}" if hi is None else f"{lo:.0f}-{hi:.0f}")
            ax.set_title(f"{group} ({rng} vox, n={n_t})", fontsize=11)
        ax.set_xlabel("interaction step (0 = initial prompt)")
        if i == 0:
            ax.set_ylabel("mean Dice")
        ax.set_ylim(0, 1.0)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))

    handles, labels = fig.axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 5), fontsize=9,
                   bbox_to_anchor=(0.5, 0.955), frameon=False)
    # overlays of the worst final Dice
    ranked = sorted(curves, key=lambda c: c["dice"][-1])[:worst]
    for k, c in enumerate(ranked):
        ax = fig.add_subplot(grid[1, k])
        f = slice_file(out, c["model"], c["protocol"], c["case"], c["structure"]) if out is not None else None
        if f is not None and f.exists():
            data = np.load(f)
            img = data["image"]
            lo_v, hi_v = np.percentile(img, [1, 99]) if img.size else (0, 1)
            ax.imshow(img, cmap="gray", vmin=lo_v, vmax=hi_v if hi_v > lo_v else lo_v + 1,
                      aspect=float(data["aspect"]), interpolation="nearest")
            if data["gt"].any() and not data["gt"].all():
                ax.contour(data["gt"].astype(float), levels=[0.5], colors=["#00e000"], linewidths=1.6)
            if data["pred"].any() and not data["pred"].all():
                ax.contour(data["pred"].astype(float), levels=[0.5], colors=["#ff2020"], linewidths=1.2,
                           linestyles="--")
            where = f"z={int(data['z'])}"
        else:
            ax.text(0.5, 0.5, "no slice saved", ha="center", va="center", transform=ax.transAxes)
            where = ""
        case = c["case"].rsplit("/", 1)[-1]
        head = textwrap.shorten(f"{case} / {c['structure']}", width=44, placeholder="...")
        ax.set_title(f"{head} {where}\n{c['model']} / {c['protocol']}: final Dice {c['dice'][-1]:.2f}",
                     fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.text(0.5, 0.485, "lowest final Dice (green: ground truth, red dashed: prediction)", fontsize=11,
             ha="center", va="bottom")
    title = "nnint evaluate"
    if summary is not None:
        o = summary["overall"]
        n_targets = len({(c["case"], c["structure"]) for c in curves})
        title += (f" - {n_targets} targets x {len(models)} model(s) x {len(protocols)} protocol(s), "
                  f"mean final Dice {o['final_dice']:.3f}, median {o['median_seconds']:.3f} s per interaction")
    fig.suptitle(title, fontsize=13, y=0.99)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
