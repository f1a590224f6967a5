"""``nnint demo``: segment the bundled sample image with the bundled model (no download)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from nnint.plugins import hookimpl

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "data"


def _arguments(p) -> None:
    p.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    p.add_argument("--model", help="model name or folder (default: the bundled model)")
    p.add_argument("--backend", help="backend (default: the model's own)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=("fp32", "fast", "bf16", "fp16"),
                   help="torch backend: fp32 (reference, default) or fast (bf16/fp16 where the device has it)")


def _run(args) -> int:

    from nnint.default_plugins.commands import engine_options
    from nnint.evaluate.metrics import dice
    from nnint.image import Image
    from nnint.overview import write_overview
    from nnint.plugins import load_engine, resolve_model
    from nnint.prompts import prompt_from_dict
    from nnint.session import Session

    card = json.loads((SAMPLE_DIR / "sample.json").read_text())
    image = Image.read(SAMPLE_DIR / card["image"])
    prompts = [prompt_from_dict(p) for p in card["prompts"]]
    spec = resolve_model(args.model) if (args.model or args.backend != "classical") else None
    engine = load_engine(spec, backend=args.backend, device=args.device, **engine_options(args))
    name = spec.name if spec else (args.backend or "classical")
    if spec is None:
        print("no bundled model is registered yet: running the classical DEVELOPMENT backend "
              "(region growing, no learned weights)", file=sys.stderr)
    print(f"sample: {card['description']} {image.shape} (z, y, x)", file=sys.stderr)
    print(f"model: {name}" + (f" (licence: {spec.license})" if spec else ""), file=sys.stderr)
    session = Session(image, engine)
    for i, prompt in enumerate(prompts, 1):
        t = time.perf_counter()
        session.add(prompt)
        print(f"  prompt {i}/{len(prompts)} {prompt.kind}{'' if prompt.positive else ' (negative)'}: "
              f"{time.perf_counter() - t:.2f} s, mask {int(session.active.mask.sum())} voxels", file=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mask = session.active.mask
    image.write_mask(mask, out / "mask.nii.gz")
    ref_path = SAMPLE_DIR / card["reference"] if card.get("reference") else None
    title = f"nnint demo: {card['target']} ({name})"
    if ref_path is not None:
        ref = Image.read(ref_path).array == card.get("reference_label", 1)
        score = dice(mask.astype(bool), ref.astype(bool))
        title += f", Dice vs reference {score:.3f}"
        print(f"Dice against the reference {card['target']} mask: {score:.3f}", file=sys.stderr)
    write_overview(image, mask, prompts, out / "overview.png", title=title)
    session.save(out / "session.nnint")
    print(f"wrote {out / 'mask.nii.gz'}, {out / 'overview.png'}, {out / 'session.nnint'}", file=sys.stderr)
    return 0 if mask.any() else 1


@hookimpl
def nnint_register_commands(register):
    register("demo", "segment the bundled sample image with the bundled model (no download)", _arguments, _run)
