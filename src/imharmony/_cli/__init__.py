"""Command modules of the ``imharmony`` command line (one module per command)."""
