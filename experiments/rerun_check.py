"""Does a rerun reproduce a committed run? Compares every value the rerun logged (each step's row
of metrics.jsonl, and final_metrics.json) with the committed copy, leaving out the wall-clock
fields (names ending in `_s`: seconds and rates per second). Prints each difference and a one-line
verdict; exits 1 unless every step both logged is equal and the final metrics are too.

  python experiments/rerun_check.py runs/arm2_smollm2/teacher \
      experiments/results/arm2_smollm2/stages/teacher

A rerun still in progress is compared over the steps it has logged so far (its verdict says how
many). Reads either run's metrics.jsonl or its gzipped copy (collect.sh stores the latter).
"""

import argparse
import json
import os
import sys

from gkd import rundir


def compared(row: dict) -> dict:
  """A logged row without its wall-clock fields (seconds, rates per second)."""
  return {k: v for k, v in row.items() if not k.endswith("_s")}


def logged(run_dir: str) -> dict[int, dict]:
  """{step: every compared value logged at that step}; a step's train and eval rows merged."""
  steps: dict[int, dict] = {}
  for row in rundir.read_jsonl(os.path.join(run_dir, "metrics.jsonl")):
    values = compared(row)
    steps.setdefault(values.pop("step"), {}).update(values)
  return steps


def final(run_dir: str) -> dict | None:
  path = os.path.join(run_dir, rundir.FINAL_METRICS)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return compared(json.load(f))


def differences(rerun: str, committed: str) -> tuple[list[str], str]:
  """(one line per differing value, the verdict line)."""
  new, old = logged(rerun), logged(committed)
  if not old:
    raise SystemExit(f"{committed}: no metrics.jsonl(.gz) to compare against.")
  shared = sorted(set(new) & set(old))
  lines = [f"step {s} {k}: rerun {new[s].get(k)!r}, committed {old[s].get(k)!r}"
           for s in shared for k in sorted(set(new[s]) | set(old[s]))
           if new[s].get(k) != old[s].get(k)]
  new_final, old_final = final(rerun), final(committed)
  if new_final is not None:
    lines += [f"final {k}: rerun {new_final.get(k)!r}, committed {old_final.get(k)!r}"
              for k in sorted(set(new_final) | set(old_final or {}))
              if new_final.get(k) != (old_final or {}).get(k)]
  done = "finished" if new_final is not None else "in progress"
  verdict = (f"{'same' if not lines else 'DIFFERENT'}: {len(lines)} differing values over "
             f"{len(shared)} of the committed run's {len(old)} logged steps (rerun {done})")
  return lines, verdict


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("rerun", help="the rerun's folder (holding metrics.jsonl)")
  parser.add_argument("committed", help="the committed run's folder")
  args = parser.parse_args()
  lines, verdict = differences(args.rerun, args.committed)
  print("\n".join(lines + [verdict]))
  sys.exit(1 if lines else 0)


if __name__ == "__main__":
  main()
