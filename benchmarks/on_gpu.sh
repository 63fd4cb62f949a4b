#!/usr/bin/env bash
# Everything that needs a GPU, in one run on a lent machine (about 7 minutes): the GPU tests,
# then the new layer families' benchmarks at the issues' device sizes (issue 18: LeNet at batch
# 512; issue 17: a transformer block at T = d = 512, batch 64; issue 19: an LSTM with hidden
# 512). Each part has its own time limit, so one that hangs cannot take the others with it.
#
#     bash benchmarks/on_gpu.sh          # the log also goes to $OUT/on_gpu.log where OUT is set
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false      # JAX and torch share the GPU in one process
log="${OUT:-/tmp}/on_gpu.log"

part() {    # part SECONDS COMMAND...: one part, its time limit, its exit status in the log
    echo; echo "== $(date -u +%H:%M:%S) $*"
    timeout "$1" "${@:2}"
    echo "== exit $?"
}

{
    nvidia-smi -L
    python3 -c "import torch, jax; print('torch', torch.__version__, '| jax', jax.__version__, jax.devices())"
    part 180 python3 -m pytest -q -p no:cacheprovider tests/test_on_gpu.py tests/test_backends.py -k "cuda or gpu or device"
    part 90 python3 benchmarks/cnn.py --device cuda --batch 512 --rounds 9 --reps 3 --dtype float32
    part 90 python3 benchmarks/cnn.py --device cuda --batch 512 --rounds 9 --reps 3
    part 120 python3 benchmarks/transformer.py --device cuda --large --rounds 7
    part 90 python3 benchmarks/recurrent.py --device cuda --hidden 512 --rounds 7
} 2>&1 | tee "$log"
