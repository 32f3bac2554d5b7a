#!/usr/bin/env bash
# Run (or continue) the hold-out study at scale cpu in the background, from the frozen commit named in
# docs/results/holdout/protocol.md ("Frozen code: commit <hash>"): a git worktree of it under
# runs/holdout/frozen (git-ignored), imported ahead of the checkout's own package (PYTHONPATH), one process,
# one thread, through experiments/holdout_frozen.py (resumes from the committed databases and records on a
# fresh machine; protocol amendment 2). Runs go to runs/holdout/cpu/, results to docs/results/holdout/cpu/ of this checkout; the log
# is runs/holdout/cpu.log, the process id runs/holdout/cpu.pid. Extra arguments go to holdout_study.py.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
FROZEN=$(sed -n 's/^Frozen code: commit \([0-9a-f]\{40\}\).*/\1/p' "$ROOT/docs/results/holdout/protocol.md")
[ -n "$FROZEN" ] || { echo "no 'Frozen code: commit <hash>' line in the protocol" >&2; exit 1; }
TREE=$ROOT/runs/holdout/frozen
[ -d "$TREE" ] || git -C "$ROOT" worktree add --detach "$TREE" "$FROZEN"
[ "$(git -C "$TREE" rev-parse HEAD)" = "$FROZEN" ] || { echo "$TREE is not at $FROZEN" >&2; exit 1; }
if [ -f "$ROOT/runs/holdout/cpu.pid" ] && kill -0 "$(cat "$ROOT/runs/holdout/cpu.pid")" 2>/dev/null; then
    echo "already running: process $(cat "$ROOT/runs/holdout/cpu.pid")" >&2; exit 1
fi
cd "$TREE/experiments"
OMP_NUM_THREADS=1 PYTHONPATH="$TREE/src" SPIKESTAB_EXPERIMENT_OUT="$ROOT" nohup nice -n 10 \
    "$ROOT/.venv/bin/python" "$ROOT/experiments/holdout_frozen.py" --scale cpu --workers 1 "$@" >> "$ROOT/runs/holdout/cpu.log" 2>&1 &
echo $! > "$ROOT/runs/holdout/cpu.pid"
echo "hold-out study running from $FROZEN as process $!; log $ROOT/runs/holdout/cpu.log"
