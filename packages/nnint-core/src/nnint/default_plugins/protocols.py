"""Registers the built-in simulated-user protocols of ``nnint evaluate`` (see nnint.evaluate.protocols)."""

from nnint.plugins import hookimpl


@hookimpl
def nnint_register_protocols(register):
    from nnint.evaluate.protocols import BUILTIN

    for name, factory in BUILTIN.items():
        register(name, factory)
