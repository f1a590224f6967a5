"""Registers the classical (no learned weights) backend."""

from nnint.engine import BackendSpec
from nnint.plugins import hookimpl


def _factory(model=None, device="cpu", **options):
    from nnint.backends.classical import ClassicalEngine

    return ClassicalEngine(**options)


@hookimpl
def nnint_register_backends(register):
    register(
        BackendSpec(
            "classical",
            _factory,
            "seeded region growing from the prompts (no learned weights): the evaluation floor and development backend",
            needs_model=False,
        )
    )
