"""The built-in subcommands ``segment``, ``info`` and ``models``, registered through the same hook
(``nnint_register_commands``) that other distributions use."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from nnint.errors import InvalidPromptError
from nnint.plugins import hookimpl


class _OrderedPrompt(argparse.Action):
    """Collect --point/--box values into one ordered list, so prompts apply in command-line order."""

    def __call__(self, parser, namespace, values, option_string=None):
        items = list(getattr(namespace, "ordered_prompts", None) or [])
        items.append((self.dest, values))
        namespace.ordered_prompts = items


def parse_cli_prompt(kind: str, text: str):
    """``z,y,x[:neg]`` -> Point; ``z0,y0,x0,z1,y1,x1[:neg]`` -> Box (half-open)."""
    from nnint.prompts import Box, Point

    body, _, flag = text.partition(":")
    if flag not in ("", "neg", "pos"):
        raise InvalidPromptError(f"--{kind} {text!r}: the suffix must be ':neg' or ':pos'")
    try:
        values = [float(v) for v in body.split(",")]
    except ValueError:
        raise InvalidPromptError(f"--{kind} {text!r}: expected comma-separated numbers") from None
    positive = flag != "neg"
    if kind == "point":
        if len(values) != 3:
            raise InvalidPromptError(f"--point {text!r}: expected z,y,x (3 numbers), got {len(values)}")
        return Point(values, positive)
    if len(values) != 6:
        raise InvalidPromptError(f"--box {text!r}: expected z0,y0,x0,z1,y1,x1 (6 numbers), got {len(values)}")
    return Box(values[:3], values[3:], positive)


def _load_prompt_file(path: str):
    from nnint.prompts import prompt_from_dict

    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise InvalidPromptError(f"cannot read prompt file {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise InvalidPromptError(f"prompt file {path} is not valid JSON: {exc}") from None
    items = data.get("prompts") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise InvalidPromptError(f"prompt file {path} must hold a list of prompts or {{'prompts': [...]}}")
    return [prompt_from_dict(item) for item in items]


def _add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="registered model name or model folder (default: the bundled model)")
    p.add_argument("--backend", help="backend name (default: the model's own backend)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--precision", choices=("fp32", "fast", "bf16", "fp16"),
                   help="torch backend: fp32 (reference, default) or fast (bf16/fp16 where the device has it)")


def engine_options(args) -> dict:
    """Backend options given on the command line (only the ones set, so other backends see none)."""
    return {"precision": args.precision} if getattr(args, "precision", None) else {}


def _segment_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", help="image file (NIfTI, NRRD, MHA, ...) or DICOM series folder")
    p.add_argument("--point", action=_OrderedPrompt, metavar="Z,Y,X[:neg]", help="a click (repeatable)")
    p.add_argument("--box", action=_OrderedPrompt, metavar="Z0,Y0,X0,Z1,Y1,X1[:neg]", help="a half-open box (repeatable)")
    p.add_argument("--prompts", metavar="FILE.json", help="prompts from a JSON file (applied after --point/--box)")
    p.add_argument("-o", "--output", required=True, help="mask file to write (in the image's geometry)")
    p.add_argument("--overview", metavar="PNG", help="also write three orthogonal slices with mask and prompts")
    _add_model_arguments(p)


def _segment(args) -> int:
    from nnint.image import Image
    from nnint.overview import write_overview
    from nnint.plugins import load_engine, resolve_model
    from nnint.session import Session

    prompts = [parse_cli_prompt(kind, text) for kind, text in (getattr(args, "ordered_prompts", None) or [])]
    if args.prompts:
        prompts += _load_prompt_file(args.prompts)
    if not prompts:
        raise InvalidPromptError("no prompts given: pass --point, --box or --prompts FILE.json")
    t0 = time.perf_counter()
    image = Image.read(args.image)
    spec = resolve_model(args.model) if args.backend != "classical" or args.model else None
    engine = load_engine(spec, backend=args.backend, device=args.device, **engine_options(args))
    name = spec.name if spec else (args.backend or "classical")
    print(f"image {image.shape} (z, y, x), spacing {tuple(round(v, 4) for v in image.spacing_zyx)} mm; model {name}", file=sys.stderr)
    if spec is not None and spec.license:
        print(f"model licence: {spec.license}", file=sys.stderr)
    session = Session(image, engine, engine_info={"model": name, "backend": args.backend})
    for i, prompt in enumerate(prompts, 1):
        t = time.perf_counter()
        session.add(prompt)
        print(f"prompt {i}/{len(prompts)} {prompt.kind}: {time.perf_counter() - t:.2f} s", file=sys.stderr)
    mask = session.active.mask
    image.write_mask(mask, args.output)
    print(f"wrote {args.output}: {int(mask.sum())} voxels ({time.perf_counter() - t0:.1f} s total)", file=sys.stderr)
    if args.overview:
        write_overview(image, mask, prompts, args.overview, title=f"nnint segment ({name})")
        print(f"wrote {args.overview}", file=sys.stderr)
    return 0


def _info_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", help="image file or DICOM series folder")


def _info(args) -> int:
    import numpy as np

    from nnint.image import Image

    image = Image.read(args.image)
    a = image.array
    g = image.geometry
    print(f"file       {image.source}")
    print(f"shape      {image.shape} (z, y, x)")
    print(f"dtype      {a.dtype}")
    print(f"spacing    {tuple(round(v, 6) for v in g.spacing_zyx)} mm (z, y, x)")
    print(f"origin     {tuple(round(v, 6) for v in g.origin)} mm (x, y, z, LPS)")
    print(f"direction  {np.round(np.asarray(g.direction).reshape(3, 3), 4).tolist()}")
    print(f"intensity  min {a.min()}  max {a.max()}  mean {float(a.mean()):.4g}")
    print(f"memory     {a.nbytes / 2**20:.1f} MiB as stored, {a.size * 4 / 2**20:.1f} MiB as float32")
    return 0


def _models_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _models(args) -> int:
    from nnint.plugins import backends, default_model_name, models

    found = models()
    default = default_model_name()
    if args.json:
        print(json.dumps({n: {"backend": s.backend, "description": s.description, "license": s.license,
                              "path": str(s.path) if s.path else None, **s.details} for n, s in found.items()}, indent=1))
        return 0
    if not found:
        print("no models registered")
    for name, spec in found.items():
        mark = " (default)" if name == default else ""
        print(f"{name}{mark}")
        print(f"  backend      {spec.backend}")
        print(f"  licence      {spec.license}")
        if spec.description:
            print(f"  description  {spec.description}")
        for key in ("prompts", "size_mb", "parameters", "trained_on", "dev_dice"):
            if key in spec.details:
                print(f"  {key:<12} {spec.details[key]}")
        if spec.path:
            print(f"  path         {spec.path}")
    print("\nbackends: " + ", ".join(f"{n} ({b.description})" for n, b in backends().items()))
    print("any nnInteractive-format model folder also works: --model /path/to/folder")
    return 0


@hookimpl
def nnint_register_commands(register):
    register("segment", "segment one object from prompts and write its mask", _segment_arguments, _segment)
    register("info", "describe an image: shape, spacing, geometry, intensities", _info_arguments, _info)
    register("models", "list available models (capabilities, licence, size) and backends", _models_arguments, _models)
