#!/usr/bin/env bash
# Fresh machine to a model answering a client through shared memory, with latencies printed:
# installs what is missing, builds from scratch, scripts the demo CNN from Python, starts the
# sidecar, runs a client process against it, stops the sidecar.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${SIDECAR_DEMO_BUILD_DIR:-$root/build/demo}
name=demo-$$

"$root/scripts/deps.sh"
rm -rf "$build"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DSIDECAR_BUILD_TESTS=OFF -DSIDECAR_BUILD_BENCH=OFF
cmake --build "$build" -j "$(nproc)" --target inference-sidecar sidecarctl sidecar-demo

model=$(/usr/bin/python3 "$root/scripts/make_models.py" "$build/models" demo)
# The sidecar's socket goes here, and its clients look here: no root needed for the demo.
export INFERENCE_SIDECAR_RUNTIME_DIR="$build/run"
mkdir -p "$INFERENCE_SIDECAR_RUNTIME_DIR"
shm_before=$(ls /dev/shm | sort)
echo "== demo model scripted with torch.jit.script: $model"

"$build/sidecar/inference-sidecar" --model "$model" --name "$name" --warmup-shape 1x3x224x224 \
  >"$build/sidecar.log" 2>&1 &
sidecar_pid=$!
stop_sidecar() {
  if kill -0 "$sidecar_pid" 2>/dev/null; then
    kill -TERM "$sidecar_pid"
    wait "$sidecar_pid" || true
  fi
}
trap stop_sidecar EXIT

echo "== the sidecar's start-up (cold first call, then warmed):"
"$build/examples/sidecar-demo" --name "$name" --model "$model" --requests 30 >"$build/demo.out"
grep -E "loaded|warmed|ready" "$build/sidecar.log" | sed 's/^/   /'
echo "== a client process, in-process forward vs. through the sidecar:"
cat "$build/demo.out"

echo "== from the shell: sidecarctl status and infer on a .npy file"
"$build/clientlib/sidecarctl" status --name "$name" | sed 's/^/   /'
/usr/bin/python3 -c "import numpy as np; np.save('$build/input.npy', np.random.rand(1, 3, 224, 224).astype(np.float32))"
"$build/clientlib/sidecarctl" infer --name "$name" --input "$build/input.npy" --output "$build/output.npy" | sed 's/^/   /'
/usr/bin/python3 -c "import numpy as np; print('   output.npy:', np.load('$build/output.npy').round(4))"

echo "== sidecarctl cache: the result cache in shared memory"
"$build/clientlib/sidecarctl" cache --name "$name" | sed 's/^/   /'

kill -TERM "$sidecar_pid"
wait "$sidecar_pid"
code=$?
echo "== sidecar stopped with exit code $code; its socket removed: $([ -e "$INFERENCE_SIDECAR_RUNTIME_DIR/$name.sock" ] && echo no || echo yes); new files in /dev/shm: $([ "$(ls /dev/shm | sort)" = "$shm_before" ] && echo none || echo some)"
