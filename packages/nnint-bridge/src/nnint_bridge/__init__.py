"""nnint-bridge: drive an nnint session from another process over ZeroMQ (not implemented yet).

The core already provides what the bridge needs: sessions report every mask change as a
:class:`nnint.session.MaskChange` with a bbox, new values and a version, and remote engines fit the
:class:`nnint.engine.Engine` interface.
"""

__version__ = "0.1.0"
