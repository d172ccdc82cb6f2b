#!/usr/bin/env bash
# Runs one measurement command in a quiet window of a shared machine, then gives the machine back.
#
#   bash experiments/benchmarks/quiet.sh [--max-load 2.5] [--wait-min 60] [--limit-min 14] -- CMD ARGS...
#
# 1. Waits (up to --wait-min minutes) until no pytest runs.
# 2. Pauses (SIGSTOP) the long-running experiment processes `python -m gkd.sweep` / `gkd.main`
#    whose working directory is under one of $QUIET_PAUSE_DIRS (default /work/wt/evidence and
#    /work/wt/methods), recording their PIDs, and resumes them (SIGCONT) in an EXIT trap, so they
#    go on even when the measurement fails or is interrupted. Nothing is ever killed.
# 3. Waits for the 1-minute load to fall under --max-load, then runs CMD under `timeout`
#    (--limit-min, default 14: a pause stays under ~15 minutes).
# The load and the paused PIDs before and after are printed to stderr, and exported to CMD as
# QUIET_LOAD_BEFORE / QUIET_PAUSED, so the rows it writes can carry them. Exit status: CMD's, or
# 75 when no quiet window came within --wait-min.
set -uo pipefail
MAX_LOAD=2.5; WAIT_MIN=60; LIMIT_MIN=14
while [ $# -gt 0 ]; do
  case $1 in
    --max-load) MAX_LOAD=$2; shift 2 ;;
    --wait-min) WAIT_MIN=$2; shift 2 ;;
    --limit-min) LIMIT_MIN=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "quiet.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[ $# -gt 0 ] || { echo "quiet.sh: no command after --" >&2; exit 2; }
DIRS=${QUIET_PAUSE_DIRS:-/work/wt/evidence /work/wt/methods}
deadline=$(( $(date +%s) + WAIT_MIN * 60 ))
load() { cut -d' ' -f1 /proc/loadavg; }
below() { awk -v a="$(load)" -v b="$1" 'BEGIN { exit !(a < b) }'; }
busy() { pgrep -f 'python.* -m pytest|bin/pytest' > /dev/null; }

experiments() {  # PIDs of gkd.sweep / gkd.main processes started from one of $DIRS
  for pid in $(pgrep -f 'python.* -m gkd\.(sweep|main)'); do
    cwd=$(readlink "/proc/$pid/cwd" 2>/dev/null) || continue
    for d in $DIRS; do
      case $cwd/ in "$d"/*) echo "$pid" ;; esac
    done
  done
}

PAUSED=""
resume() {
  for pid in $PAUSED; do kill -CONT "$pid" 2>/dev/null; done
  [ -z "$PAUSED" ] || echo "quiet.sh: resumed $PAUSED; load $(load)" >&2
  PAUSED=""
}
trap resume EXIT
trap 'exit 130' INT TERM

while true; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "quiet.sh: no quiet window within $WAIT_MIN min (load $(load))" >&2; exit 75
  fi
  if busy; then resume; sleep 20; continue; fi
  if [ -z "$PAUSED" ]; then
    PAUSED=$(experiments | tr '\n' ' ')
    for pid in $PAUSED; do kill -STOP "$pid" 2>/dev/null; done
    [ -z "$PAUSED" ] || echo "quiet.sh: paused $PAUSED" >&2
  fi
  # The 1-minute load decays over about a minute: give it up to three before giving the
  # experiments their time back and waiting for the next window.
  for _ in $(seq 18); do below "$MAX_LOAD" && break; busy && break; sleep 10; done
  if below "$MAX_LOAD" && ! busy; then break; fi
  resume; sleep 60
done
export QUIET_LOAD_BEFORE=$(load) QUIET_PAUSED="$PAUSED"
echo "quiet.sh: load $QUIET_LOAD_BEFORE, paused [${PAUSED% }], running: $*" >&2
timeout "$(( LIMIT_MIN * 60 ))" "$@"
rc=$?
echo "quiet.sh: rc $rc, load after $(load)" >&2
exit $rc
