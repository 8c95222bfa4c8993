#!/usr/bin/env bash
# The runs behind docs/threads/projection.md (evidence protocol, classifier stitching, alignment
# of 1,500-step micro-1m seed pairs). Each step is one `geomlens` command writing one run
# directory under runs/issue24/; `copy` puts the small outputs here (experiments/results/projection/
# issue24/) and `tables` writes issue24/tables.md from them.
#   OMP_NUM_THREADS=1 bash experiments/results/projection/issue24.sh [train evidence stitch align copy tables]
# As run for the committed copies (2 shared cores, 5 engineers): the stitch copies come from the
# first round (micro seeds trained then, converted with `geomlens convert-run DIR`); `train`
# was rerun for the alignment (the run dirs were not kept), then `evidence` and `align` as written
# here (each under the heavy lock, nice 19). The tables record each run's wall time.
set -euo pipefail
cd "$(dirname "$0")/../../.."
R=runs/issue24
OUT=experiments/results/projection/issue24
LOCK="flock /tmp/geomlens-heavy.lock nice -n 19"
MICRO=$R/micro_seeds          # seed=S,head=tied for S = 0, 1, 2
micro() { echo "$MICRO/seed=$1,head=tied"; }

train() {   # micro-1m, tied head, vocab 8,192, 1,500 steps x 8 x 128 (experiments/configs/tied_untied_cpu.yaml);
            # one thread per process (bit-reproducible), the three seeds in parallel under the lock
  OMP_NUM_THREADS=1 $LOCK geomlens run experiments/configs/tied_untied_cpu.yaml --jobs 3 out=$MICRO \
    'sweep.head=[tied]' checkpoint_every=null
}

evidence() {   # every layer, 1,999 permutations (smallest possible p = 1/2000 = 0.0005), defaults
               # otherwise: 8 segments per domain x 64 tokens, 500 positions, 512 units per layer
  $LOCK geomlens evidence --model smollm2-135m --layers all --n-permutations 1999 \
    --out $R/evidence_smollm2
  $LOCK geomlens evidence --model gemma3-270m --layers all --n-permutations 1999 \
    --out $R/evidence_gemma3
}

stitch() {
  for s in 0 1 2; do
    $LOCK geomlens stitch --model-a "$(micro $s)" --model-b "$(micro $(( (s + 1) % 3 )))" --out $R/stitch_micro${s}_micro$(( (s + 1) % 3 ))
    $LOCK geomlens stitch --model-a smollm2-135m --model-b "$(micro $s)" --out $R/stitch_smollm2_micro$s
  done
}

align() {   # the paper's six kinds (K = mlp_in, V = mlp_out, W_Q, W_K, W_V, W_O); 999 token permutations,
            # 999 coordinate permutations for the raw d_model baseline, 999 for the neuron-level null;
            # the three seed pairs in parallel (one thread each) under one hold of the lock
  $LOCK bash -c '
    for pair in "0 1" "1 2" "0 2"; do
      set -- $pair
      OMP_NUM_THREADS=1 geomlens align --model-a "'"$MICRO"'/seed=$1,head=tied" --model-b "'"$MICRO"'/seed=$2,head=tied" \
        --kinds mlp_in mlp_out q k v o --n-permutations 999 --raw-permutations 999 --n-neuron-null 999 \
        --out "'"$R"'/align_micro$1_micro$2" &
    done
    wait'
}

copy() {
  mkdir -p $OUT
  for d in $R/evidence_* $R/stitch_* $R/align_*; do
    [ -f "$d/done" ] || continue
    n=$(basename "$d")
    for f in "$d"/*.csv "$d"/*.png "$d"/summary.json "$d"/config.json; do
      if [ -f "$f" ]; then cp "$f" "$OUT/${n}_$(basename "$f")"; fi
    done
  done
  for s in 0 1 2; do
    d=$(micro $s)
    if [ -f "$d/summary.json" ]; then cp "$d/summary.json" "$OUT/micro_seed${s}_train_summary.json"; fi
  done
}

tables() { python experiments/results/projection/issue24_tables.py "$OUT"; }

for step in "${@:-train evidence stitch align copy tables}"; do
  for s in $step; do $s; done
done
