# shellcheck shell=bash
# Sourced by the install tests: an installed inference-sidecar serving the tiny model (Linear
# 64->10) in a private runtime directory, which the clients find through
# INFERENCE_SIDECAR_RUNTIME_DIR, and the check of what the example programs print.

sidecar_pid=

# start_tiny_sidecar SIDECAR SIDECARCTL MODELS_DIR SCRATCH NAME: returns once it is ready.
start_tiny_sidecar() {
  local sidecar=$1 sidecarctl=$2 models_dir=$3 scratch=$4 name=$5
  export INFERENCE_SIDECAR_RUNTIME_DIR=$scratch/run
  mkdir -m 0700 "$INFERENCE_SIDECAR_RUNTIME_DIR"
  "$sidecar" --name "$name" --model "$models_dir/tiny.pt" --warmup-shape 1x64 \
    --runtime-dir "$INFERENCE_SIDECAR_RUNTIME_DIR" --workers 1 --max-clients 4 --arena-bytes 1M --cache-bytes 0 \
    >"$scratch/sidecar.log" 2>&1 &
  sidecar_pid=$!
  for _ in $(seq 1 600); do
    if "$sidecarctl" status --name "$name" 2>/dev/null | grep -qx 'state: ready'; then return 0; fi
    kill -0 "$sidecar_pid" 2>/dev/null || break
    sleep 0.1
  done
  cat "$scratch/sidecar.log" >&2
  echo "FAIL: $sidecar did not become ready" >&2
  return 1
}

# SIGTERM, and the sidecar's exit code must be 0.
stop_tiny_sidecar() {
  [ -n "$sidecar_pid" ] || return 0
  kill -TERM "$sidecar_pid"
  local status=0
  wait "$sidecar_pid" || status=$?
  sidecar_pid=
  return "$status"
}

# For an EXIT trap: a test that failed half-way leaves no sidecar behind.
kill_tiny_sidecar() {
  if [ -n "$sidecar_pid" ]; then
    kill "$sidecar_pid" 2>/dev/null || true
    wait "$sidecar_pid" 2>/dev/null || true
  fi
}

# check_inference_output PROGRAM OUTPUT: one 1x10 float32 tensor, as examples/installed prints it.
check_inference_output() {
  if [[ ! "$2" =~ ^\[1,\ 10\]\ float32:(\ [-+0-9.e]+){10}$ ]]; then
    echo "FAIL: $1 printed '$2'" >&2
    return 1
  fi
}
