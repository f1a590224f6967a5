"""Registers the models shipped inside nnint-core (see nnint/models/)."""

from nnint.plugins import hookimpl


@hookimpl
def nnint_register_models(register):
    from nnint.models import bundled_models

    for spec in bundled_models():
        register(spec)
