"""The hook specifications: nnint's documented extension contract.

Plugins implement these with ``@nnint.hookimpl`` and are found through the entry-point group
``nnint`` (see :mod:`nnint.plugins`). nnint's own backends, models and commands are ordinary
plugins of these same hooks (``nnint.default_plugins``).

Registration hooks receive a ``register`` callback instead of returning values, so one plugin can
register several things and errors point at the registering call.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("nnint")


@hookspec
def nnint_register_backends(register):
    """Register backends: ``register(BackendSpec(name, factory, description, needs_model))``."""


@hookspec
def nnint_register_models(register):
    """Register models: ``register(ModelSpec(name, backend, description, license, path, details))``."""


@hookspec
def nnint_register_commands(register):
    """Register ``nnint`` subcommands: ``register(name, help, add_arguments, run)`` where
    ``add_arguments(parser)`` configures an argparse parser and ``run(args) -> int`` runs it."""


@hookspec
def nnint_register_protocols(register):
    """Register simulated-user protocols for ``nnint evaluate``: ``register(name, factory)``."""


# --- session events (adapters redraw, the bridge sends deltas, loggers log) -------------------


@hookspec
def nnint_object_created(session, obj):
    """An object was created (and became the active one)."""


@hookspec
def nnint_object_confirmed(session, obj):
    """An object was confirmed (locked)."""


@hookspec
def nnint_object_removed(session, obj):
    """An object was removed."""


@hookspec
def nnint_prompt_added(session, obj, prompt):
    """A prompt was added to ``obj`` (also fired when a redo re-applies one)."""


@hookspec
def nnint_prompt_undone(session, obj, prompt):
    """The newest prompt of ``obj`` was undone."""


@hookspec
def nnint_mask_changed(session, change):
    """An object's mask changed; ``change`` is a :class:`nnint.session.MaskChange` (bbox, values, version)."""
