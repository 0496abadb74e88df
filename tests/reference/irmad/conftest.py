"""run_author.py is a reference-output generator for the author's environment (GDAL's Python
bindings, numpy < 2), not a test module: --doctest-modules must not import it."""

collect_ignore = ["run_author.py"]
