#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py: tests on CUDA, the bench in float32 and bfloat16, the hours of a
# whole Atari 100k run, a 5-minute training run on Boxing) on a machine where the project is not installed.
#
#   bash benchmarks/gpu_check.sh              # on the GPU machine: at most about 9 minutes on one H100
#   bash benchmarks/gpu_check.sh --dry-run    # here, on the CPU: the same stages with tiny settings
#
# The lent GPU machines have Python with torch (CUDA), numpy, OpenCV, safetensors, tensorboard, tqdm, PyYAML
# and pytest, but not gymnasium, ale-py (with its ROMs) or omegaconf, and they reach no package registry.
# So, in order: what is already importable is used; missing packages are installed from the wheels in .whl/
# (made here beforehand by benchmarks/gpu_wheels.sh, carried with the device call: carry [".whl"]) into a
# folder of their own; then pip gets one short try at a registry. The project itself is imported from src/
# (PYTHONPATH), not installed. Whatever is still missing is reported, and the check runs anyway: the stages
# that need it record their errors.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
notes=()

missing() {
    "$PY" - <<'EOF'
import importlib.util
names = {"gymnasium": "gymnasium", "ale_py": "ale-py", "omegaconf": "omegaconf", "torch": "torch",
         "numpy": "numpy", "cv2": "opencv-python-headless", "safetensors": "safetensors",
         "tensorboard": "tensorboard", "tqdm": "tqdm", "yaml": "PyYAML", "pytest": "pytest"}
print(" ".join(package for module, package in names.items() if importlib.util.find_spec(module) is None))
EOF
}

site="${TMPDIR:-/tmp}/diffworld_gpu_check_site"
need="$(missing)"
if [ -n "$need" ] && compgen -G ".whl/*.whl" >/dev/null; then
    if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
        .whl/*.whl; then
        export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
        notes+=("installed $(cd .whl && echo *.whl) into $site")
    else
        notes+=("pip could not install the wheels in .whl/")
    fi
    need="$(missing)"
fi
if [ -n "$need" ]; then
    # Only the project's own needs that a registry may have; dependencies the image lacks are named too.
    want=""
    for package in $need; do
        case $package in
            gymnasium) want="$want gymnasium farama-notifications" ;;
            ale-py | omegaconf) want="$want $package" ;;
        esac
    done
    if [ -n "$want" ] && timeout 120 "$PY" -m pip install -q --no-deps --no-cache-dir --retries 0 \
        --timeout 10 --target "$site" $want >/dev/null 2>&1; then
        export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
        notes+=("installed$want from a package registry into $site")
    fi
    need="$(missing)"
fi
[ -n "$need" ] && notes+=("still missing: $need") && echo "gpu_check.sh: still missing: $need" >&2
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export GPU_CHECK_SETUP="${notes[*]:-everything was importable}"
echo "gpu_check.sh: $GPU_CHECK_SETUP"
exec "$PY" benchmarks/gpu_check.py "$@"
