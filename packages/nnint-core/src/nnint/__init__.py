"""nnint: interactive ("promptable") 3D segmentation of medical and microscopy volumes.

The public API, re-exported from the modules that define it::

    from nnint import Image, Session, Point, Box, Scribble, Lasso, InitialMask, load_engine
"""

from nnint.engine import BackendSpec, Capabilities, Engine, MaskUpdate, ModelSpec
from nnint.errors import NnintError
from nnint.image import Geometry, Image
from nnint.plugins import hookimpl, load_engine
from nnint.prompts import Box, InitialMask, Lasso, Point, Scribble
from nnint.session import MaskChange, SegObject, Session

__version__ = "0.1.0"

__all__ = [
    "BackendSpec",
    "Box",
    "Capabilities",
    "Engine",
    "Geometry",
    "Image",
    "InitialMask",
    "Lasso",
    "MaskChange",
    "MaskUpdate",
    "ModelSpec",
    "NnintError",
    "Point",
    "Scribble",
    "SegObject",
    "Session",
    "hookimpl",
    "load_engine",
]
