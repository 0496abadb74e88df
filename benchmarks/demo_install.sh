#!/bin/bash
# What `make demo` installs, before and after issue 9: the runtime dependencies alone (now)
# against the runtime dependencies plus the test extra (before). Fresh venvs, no pip cache, so
# the time includes the downloads. Usage: benchmarks/demo_install.sh [WORKDIR]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d)}
python=${PYTHON:-python3.11}
for kind in runtime test; do
  rm -rf "$work/venv-$kind"
  "$python" -m venv "$work/venv-$kind"
  "$work/venv-$kind/bin/python" -m pip install --quiet --upgrade pip
  spec="$repo"; [ "$kind" = test ] && spec="$repo[test]"
  start=$(date +%s.%N)
  "$work/venv-$kind/bin/python" -m pip install --quiet --no-cache-dir -e "$spec"
  end=$(date +%s.%N)
  echo "$kind: $(echo "$end - $start" | bc) s, $(du -sm "$work/venv-$kind" | cut -f1) MB"
done
