"""gkd and TRL on the same workload, back to back in one invocation, into one raw-output file.

  python experiments/benchmarks/side_by_side.py [--timed 3] [--warmup 1]
      [--out experiments/results/bench_side_by_side.jsonl] [--only gkd,trl-gkd,trl-distill]
      [--dtype float32|bfloat16]

Runs, in this order: gkd (chunked loss), TRL GKDTrainer, TRL DistillationTrainer, gkd again
(the two gkd runs bracket the TRL ones, so a load change shows up as their disagreement).
Each run is its own process (its own peak RSS). Every row appended to `--out` carries the same
`run_id`, the CPU model, the core count, the load average before the run and the git commit, so
only rows of one run_id are compared. `--dtype bfloat16` is its own workload (gkd computes in bf16
with float32 master weights, TRL runs with bf16=True, i.e. CPU autocast); its rows say so and are
never set against float32 rows. Needs .venv-trl (bash experiments/benchmarks/setup_trl.sh).
Cost on a quiet 2-core CPU: about 6 minutes with the defaults.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import roofline as R  # noqa: E402


def run_gkd(args, extra, label):
  with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as tmp:
    cmd = [sys.executable, os.path.join(HERE, "gkd_step.py"), "--steps", str(args.timed),
           "--out", tmp.name, "--label", label, "--dtype", args.dtype, *extra]
    proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": REPO},
                          capture_output=True, text=True)
    sys.stderr.write(proc.stderr[-3000:])
    rows = [json.loads(line) for line in open(tmp.name) if line.strip()]
  if proc.returncode or not rows:
    return {"impl": "gkd-jax", "label": label, "error": proc.stderr[-2000:]}
  return rows[-1]


def run_trl(args, trainer, label):
  python = os.path.join(REPO, ".venv-trl", "bin", "python")
  cmd = [python, os.path.join(HERE, "trl_gkd_reference.py"), "--trainer", trainer,
         "--warmup-steps", str(args.warmup), "--timed-steps", str(args.timed),
         *(["--bf16"] if args.dtype == "bfloat16" else [])]
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
  lines = [line for line in proc.stdout.splitlines() if line.startswith("{\"impl\"")]
  if proc.returncode or not lines:
    return {"impl": "trl", "label": label, "error": proc.stderr[-2000:]}
  return {**json.loads(lines[-1]), "label": label}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--timed", type=int, default=3)
  parser.add_argument("--warmup", type=int, default=1, help="TRL warm-up steps (gkd compiles in its own)")
  parser.add_argument("--chunk", type=int, default=16)
  parser.add_argument("--out", default=os.path.join(REPO, "experiments", "results",
                                                    "bench_side_by_side.jsonl"))
  parser.add_argument("--only", default="gkd,trl-gkd,trl-distill,gkd")
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  args = parser.parse_args()
  run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
  plan = {"gkd": lambda label: run_gkd(args, ["--chunk", str(args.chunk)], label),
          "gkd-plain": lambda label: run_gkd(args, ["--chunk", "0"], label),
          "trl-gkd": lambda label: run_trl(args, "gkd", label),
          "trl-distill": lambda label: run_trl(args, "distillation", label)}
  for i, name in enumerate(args.only.split(",")):
    host = R.machine()
    t0 = time.time()
    row = plan[name](f"{name}#{i}")
    row.update({"run_id": run_id, "order": i, "wall_s": time.time() - t0, "dtype": args.dtype,
                "taskset": os.sched_getaffinity(0) != set(range(os.cpu_count())) and
                sorted(os.sched_getaffinity(0)),
                **{k: host[k] for k in ("cpu_model", "cpu_count", "commit", "dirty",
                                        "glibc_tunables")},
                "load_avg_1m_before": host["load_avg_1m"], "load_avg_1m_after": os.getloadavg()[0]})
    with open(args.out, "a") as f:
      f.write(json.dumps(row) + "\n")
    print(f"{name}: {row.get('seconds_per_step', row.get('error', '?'))} s/step, "
          f"load {row['load_avg_1m_before']:.1f}->{row['load_avg_1m_after']:.1f}", file=sys.stderr,
          flush=True)


if __name__ == "__main__":
  main()
