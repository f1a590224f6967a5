"""The plugin manager, and the registries the hooks fill (backends, models, commands, protocols).

Plugins are loaded from the entry-point group ``nnint``; nnint's own defaults are loaded the same
way, through ``nnint.default_plugins``. Set ``NNINT_NO_ENTRYPOINTS=1`` to load only the defaults.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pluggy

from nnint import hookspecs
from nnint.engine import BackendSpec, Engine, ModelSpec
from nnint.errors import PluginError, UnknownBackendError, UnknownModelError

hookimpl = pluggy.HookimplMarker("nnint")

DEFAULT_PLUGINS = (
    "nnint.default_plugins.torch_backend",
    "nnint.default_plugins.classical_backend",
    "nnint.default_plugins.bundled_models",
    "nnint.default_plugins.commands",
    "nnint.default_plugins.train_command",
    "nnint.default_plugins.demo_command",
    "nnint.default_plugins.protocols",
    "nnint.default_plugins.evaluate_command",
)

_pm: pluggy.PluginManager | None = None
_lock = threading.Lock()


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager (created and loaded on first use)."""
    global _pm
    with _lock:
        if _pm is None:
            pm = pluggy.PluginManager("nnint")
            pm.add_hookspecs(hookspecs)
            import importlib

            for name in DEFAULT_PLUGINS:
                pm.register(importlib.import_module(name), name=name)
            if not os.environ.get("NNINT_NO_ENTRYPOINTS"):
                pm.load_setuptools_entrypoints("nnint")
            _pm = pm
        return _pm


def reset_plugin_manager() -> None:
    """Forget the loaded plugins; the next use reloads them (for tests and long-lived hosts that
    install plugins at run time)."""
    global _pm
    with _lock:
        _pm = None


def _collect(hook_name: str) -> list:
    items: list = []
    getattr(get_plugin_manager().hook, hook_name)(register=items.append)
    return items


def backends() -> dict[str, BackendSpec]:
    """All registered backends by name."""
    out: dict[str, BackendSpec] = {}
    for spec in _collect("nnint_register_backends"):
        if not isinstance(spec, BackendSpec):
            raise PluginError(f"nnint_register_backends registered {spec!r}; register a nnint.engine.BackendSpec")
        out[spec.name] = spec
    return out


def models() -> dict[str, ModelSpec]:
    """All registered models by name."""
    out: dict[str, ModelSpec] = {}
    for spec in _collect("nnint_register_models"):
        if not isinstance(spec, ModelSpec):
            raise PluginError(f"nnint_register_models registered {spec!r}; register a nnint.engine.ModelSpec")
        out[spec.name] = spec
    return out


def default_model_name() -> str | None:
    """The model used when none is named: the first registered model marked ``default``."""
    for spec in models().values():
        if spec.details.get("default"):
            return spec.name
    return None


def get_backend(name: str) -> BackendSpec:
    found = backends()
    if name not in found:
        raise UnknownBackendError(f"unknown backend {name!r}; available: {', '.join(sorted(found)) or 'none'}")
    return found[name]


def resolve_model(name_or_path: str | os.PathLike | None) -> ModelSpec | None:
    """A registered model name, or a checkpoint folder path (served by the torch backend)."""
    if name_or_path is None:
        name = default_model_name()
        return models()[name] if name else None
    registered = models()
    key = str(name_or_path)
    if key in registered:
        return registered[key]
    path = Path(key).expanduser()
    if path.is_dir():
        lic = path / "LICENSE"
        first = lic.read_text(errors="replace").strip().splitlines()[:1] if lic.is_file() else []
        return ModelSpec(name=path.name, backend="torch", description=f"model folder {path}", path=path.resolve(),
                         license=first[0].strip() if first else "unknown")
    raise UnknownModelError(
        f"unknown model {key!r}: not a registered model ({', '.join(sorted(registered)) or 'none'}) "
        "and not a model folder; see `nnint models`"
    )


def load_engine(
    model: str | os.PathLike | ModelSpec | None = None,
    backend: str | None = None,
    device: str = "cpu",
    **options,
) -> Engine:
    """Build an engine from a model name/folder and a backend name (defaults: the default model
    and its own backend)."""
    spec = model if isinstance(model, ModelSpec) else resolve_model(model)
    backend_name = backend or (spec.backend if spec is not None else "classical")
    bspec = get_backend(backend_name)
    if bspec.needs_model and spec is None:
        raise UnknownModelError(f"backend {backend_name!r} needs a model; pass --model NAME|PATH (see `nnint models`)")
    return bspec.factory(spec, device=device, **options)
