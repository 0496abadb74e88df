#!/usr/bin/env bash
# Regenerate author_synthetic.npz: the generated pair (make_pair.py, imharmony's venv) run through
# the author's own iMad.py and radcal.py (run_author.py, a Python with GDAL and numpy < 2).
#   AUTHOR_DIR: iMad.py, radcal.py, auxil/auxil1.py and libprov_means.so (see run_author.py)
#   usage: make_fixtures.sh AUTHOR_DIR [VENV_PYTHON] [AUTHOR_PYTHON]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
author="$1"; venv_python="${2:-python}"; author_python="${3:-/usr/bin/python3}"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
"$venv_python" "$here/make_pair.py" "$tmp"
"$author_python" "$here/run_author.py" "$author" "$tmp/reference.png" "$tmp/target.png" \
    "$here/fixtures/author_synthetic.npz" --seed 0
