"""The ``nnint`` command. Subcommands come from the ``nnint_register_commands`` hook; the built-in
ones (``segment``, ``info``, ``models``) are registered by :mod:`nnint.default_plugins.commands`
exactly like a third party's would be."""

from __future__ import annotations

import argparse
import os
import sys

from nnint.errors import NnintError


def build_parser() -> argparse.ArgumentParser:
    from nnint import __version__
    from nnint.plugins import get_plugin_manager

    parser = argparse.ArgumentParser(
        prog="nnint",
        description="Interactive 3D segmentation: prompts in, masks out. Index coordinates are (z, y, x).",
    )
    parser.add_argument("--version", action="version", version=f"nnint {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands = []

    def register(name, help, add_arguments, run):  # noqa: A002 - the hook's documented keyword
        commands.append((name, help, add_arguments, run))

    get_plugin_manager().hook.nnint_register_commands(register=register)
    for name, help_text, add_arguments, run in sorted(commands, key=lambda c: c[0]):
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(p)
        p.set_defaults(_run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    # OpenMP threads that spin while waiting tripled CPU time on busy 2-core machines (measured in
    # docs/compat.md); passive waiting costs nothing measurable when the machine is idle. It must be
    # set before torch is imported, which the subcommands do lazily.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "_run"):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except NnintError as exc:
        print(f"nnint {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"nnint {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
