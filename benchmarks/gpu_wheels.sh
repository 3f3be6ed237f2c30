#!/usr/bin/env bash
# Run here, where pip reaches a package registry, before a session that may be lent a GPU: puts in .whl/ the
# wheels of what the GPU machines lack (gymnasium, farama-notifications, ale-py with its ROMs, omegaconf),
# built for their Python (CPython 3.12, x86-64 Linux), at the versions installed here. .whl/ is kept out of
# git (.git/info/exclude) and travels with the device call: carry [".whl"]. benchmarks/gpu_check.sh
# installs them there. About 4 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
exclude="$(git rev-parse --git-path info/exclude)"
mkdir -p "$(dirname "$exclude")" .whl
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >>"$exclude"

version() {  # the version installed here, else the one given
    "$PY" -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null || echo "$2"
}
specs=(
    "gymnasium==$(version gymnasium 1.4.0)"
    "farama-notifications==$(version farama-notifications 0.0.6)"
    "ale-py==$(version ale-py 0.12.1)"
    "omegaconf==$(version omegaconf 2.4.0)"
)
rm -f .whl/gymnasium-*.whl .whl/farama_notifications-*.whl .whl/ale_py-*.whl .whl/omegaconf-*.whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${specs[@]}"
ls -l .whl
