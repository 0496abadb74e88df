"""Multi-step jobs over collections, built on the image- and feature-level API.

:mod:`imharmony.workflows.demo` is the end-to-end demo (``imharmony demo``).
"""
