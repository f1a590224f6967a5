"""nnint's own plugins: ordinary implementations of the hooks in :mod:`nnint.hookspecs`."""
