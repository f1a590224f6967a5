"""Registers the torch backend (nnInteractive-format checkpoint folders)."""

from nnint.engine import BackendSpec
from nnint.plugins import hookimpl


def _factory(model, device="cpu", **options):
    from nnint.backends.torch.engine import TorchEngine

    return TorchEngine.from_model(model, device=device, **options)


@hookimpl
def nnint_register_backends(register):
    register(BackendSpec("torch", _factory, "PyTorch; runs nnInteractive-format checkpoint folders on CPU or CUDA"))
