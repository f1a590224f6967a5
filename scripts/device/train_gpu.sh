#!/usr/bin/env bash
# One time-boxed GPU training run on the project's rented device machine (see docs/training.md,
# "GPU runs"). The machine has python3 with torch, numpy, scipy, attrs, pluggy, msgpack and
# matplotlib, but no network, no SimpleITK and at most 64 MiB of our files, so:
#   * nnint-core travels as a wheel (.devicepack/whl), installed with --no-deps;
#   * the real training cases travel as a case pack (.devicepack/cases, scripts/device/pack_cases.py);
#   * synthetic cases are generated there, in parallel, before training starts.
# Prepare here:  .venv/bin/pip wheel --no-deps --no-build-isolation packages/nnint-core -w .devicepack/whl
#                .venv/bin/python scripts/device/pack_cases.py --data data/raw --exclude-source synthetic \
#                    --redistributable-only --out .devicepack/cases
# Run there:     bash scripts/device/train_gpu.sh     (device run, carry [".devicepack"])
# Results come back under $OUT: run.tgz.part* (the run folder without cache and optimizer state),
# train.log and gpu.txt.  Settings: MINUTES (training time), INIT (warm start folder or empty),
# SEEDS (synthetic seed range), PER_SEED, BATCH, WORKERS, RUN, DEVICE, PY, PACK, WHEELS, and EXTRA
# (more `nnint train` options; later options win).
set -euo pipefail
OUT=${OUT:?set OUT to the results folder}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
MINUTES=${MINUTES:-7.5}
INIT=${INIT-checkpoints/nnint-small-wip}
SEEDS=${SEEDS:-$(seq -s ' ' 100 114)}
PER_SEED=${PER_SEED:-12}
RUN=${RUN:-runs/gpu}
WORKERS=${WORKERS:-$(( $(nproc --all) - 3 ))}  # (before OMP_NUM_THREADS: GNU nproc obeys it)
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
start=$(date +%s)
say() { echo "[$(( $(date +%s) - start ))s] $*" | tee -a "$OUT/train.log"; }

PACK=${PACK:-.devicepack/cases}
WHEELS=${WHEELS:-.devicepack/whl}
if [ -d "$WHEELS" ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/nnint-site "$WHEELS"/*.whl
  export PYTHONPATH=/tmp/nnint-site${PYTHONPATH:+:$PYTHONPATH}
fi
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true) > "$OUT/gpu.txt"
"$PY" -c "import torch, numpy, scipy, nnint; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'numpy', numpy.__version__, 'scipy', scipy.__version__, 'nnint', nnint.__file__)" | tee -a "$OUT/gpu.txt"

data=(--data "pack:$PACK")
for s in $SEEDS; do data+=(--data "synthetic:$PER_SEED:$s"); done
mkdir -p "$RUN"
# generate every case into the run's cache in parallel (the trainer prepares serially)
say "preparing cases (${#data[@]} sources / 2) on $(nproc --all) cores"
for ((i = 1; i < ${#data[@]}; i += 2)); do
  "$PY" -c "import sys; from nnint.train.dataset import prepare_cases as p; [p([sys.argv[1]], sys.argv[2], s, log=None) for s in ('train', 'dev')]" \
    "${data[i]}" "$RUN/cache" &
done
wait
say "cases ready"

init=()
[ -n "$INIT" ] && init=(--init "$INIT")
cmd=("$PY" -c "import sys; from nnint.cli import main; sys.exit(main())" train "${data[@]}" --redistributable-only
     --out "$RUN" "${init[@]}" --arch small --patch 64,96 --infer-patch 96 --batch "${BATCH:-16}" --lr 1e-3 --iterations 100000
     --minutes "$MINUTES" --device "$DEVICE" --threads 4 --workers "$WORKERS" --val-every 0 --save-every 0
     --save-minutes 3 --log-every 25 --seed 11 ${EXTRA:-})
printf '%q ' "${cmd[@]:3}" | sed 's/^/nnint /' > "$RUN/COMMAND.txt"; echo >> "$RUN/COMMAND.txt"
say "training: $(cat "$RUN/COMMAND.txt")"
# a hard stop 45 s after the budget: SIGTERM makes the trainer checkpoint and export before it exits
timeout -s TERM "$("$PY" -c "print(int(${MINUTES} * 60 + 45))")" "${cmd[@]}" 2>&1 | tee -a "$OUT/train.log" || say "trainer exit status $?"
say "packing results"
tar -czf "$OUT/run.tgz" --exclude cache --exclude checkpoint_latest.pth "$RUN"
split -b 15m "$OUT/run.tgz" "$OUT/run.tgz.part" && rm "$OUT/run.tgz"
ls -la "$OUT" | tee -a "$OUT/train.log"
say "done"
