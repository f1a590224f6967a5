"""nnint-adapters: viewer adapters (napari first; not implemented yet).

An adapter listens to the session hooks (``nnint_mask_changed`` and friends, see
:mod:`nnint.hookspecs`) and redraws the changed bbox; it never owns segmentation state.
"""

__version__ = "0.1.0"
