#!/usr/bin/env bash
# Data-parallel step times on one machine: 2 processes x 1 thread (MPI, examples/ddp_mnist.rs)
# against 1 process x 2 threads, for the MLP and the CNN, and for 2 processes the gradient
# reduction overlapped with backward (the default, and in 1 MiB buckets) and not. Needs the `mpi`
# feature's Open MPI (see docs/distributed.md). Run it on an otherwise idle machine with at least
# 2 cores: every configuration uses 2 cores, and a busy machine measures the other load.
#
#   bash benches/ddp_compare.sh            # 1 epoch of the shipped 8000 digits per configuration
#   EPOCHS=2 bash benches/ddp_compare.sh   # more epochs (the table shows the last one's)
#   QUICK=1 bash benches/ddp_compare.sh    # a --smoke run of each, to check that the script works
#
# Prints one line per run: the epoch's wall time, and per step the wall time, the compute (forward
# and backward of the rank's micro-batches) and the exposed communication (rank 0's wait for the
# reduction after its backward), then the weights' fingerprint, which must be the same on every
# line of a model (world-size invariance).
set -euo pipefail
cd "$(dirname "$0")/.."
epochs=${EPOCHS:-1}
models=${MODELS:-mlp cnn}
mpirun=(mpirun --oversubscribe)
[ "$(id -u)" = 0 ] && mpirun+=(--allow-run-as-root)
flags=(--epochs "$epochs")
[ -n "${QUICK:-}" ] && flags=(--smoke)

cargo build --release --features mpi --example ddp_mnist
target=$(cargo metadata --format-version 1 --no-deps | grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)
example=$target/release/examples/ddp_mnist
[ -x "$example" ] || { echo "no ddp_mnist binary at $example"; exit 1; }

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-5s %-24s %-28s %9s %9s %9s %9s  %s\n' model configuration reduction epoch step compute comm weights
for model in $models; do
    # name | processes | threads per process | ddp_mnist flags
    for run in "2 processes x 1 thread|2|1|--overlap true" \
        "2 processes x 1 thread|2|1|--overlap true --bucket-cap-mb 1" \
        "2 processes x 1 thread|2|1|--overlap false" \
        "1 process x 2 threads|1|2|--overlap false" \
        "1 process x 1 thread|1|1|--overlap false"; do
        IFS='|' read -r name np threads extra <<<"$run"
        # shellcheck disable=SC2086 # $extra is a list of flags
        # Open MPI binds each process of a small job to one core: a single process with two
        # threads would then run them on one core. Unbound, as a user runs it without mpirun.
        bind=()
        [ "$np" = 1 ] && bind=(--bind-to none)
        log=$("${mpirun[@]}" "${bind[@]}" -np "$np" "$example" --model "$model" --threads "$threads" "${flags[@]}" $extra)
        # The last epoch's line: "    1 |     0.43     0.30    90.00% |  14.2 s 226.0 ms  200.0 ms  17.0 ms"
        times=$(grep -E '^ +[0-9]+ \|' <<<"$log" | tail -1 | cut -d'|' -f3)
        read -r epoch _ step _ compute _ comm _ <<<"$times"
        weights=$(grep '^weights:' <<<"$log" | awk '{print $2}')
        case "$np:$extra" in
        1:*) reduction="(one process: no messages)" ;;
        *--overlap\ false*) reduction="after the backward" ;;
        *--bucket-cap-mb*) reduction="overlapped, 1 MiB buckets" ;;
        *) reduction="overlapped, default buckets" ;;
        esac
        printf '%-5s %-24s %-28s %7s s %6s ms %6s ms %6s ms  %s\n' "$model" "$name" "$reduction" "$epoch" "$step" "$compute" "$comm" "$weights"
    done
done
