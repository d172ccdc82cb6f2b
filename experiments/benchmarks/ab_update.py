"""A/B of levers on the update phase (the train step minus teacher scoring), in alternated fresh
processes: A, B, C, A, B, C, ... so a change in the machine's load hits every variant alike.

  python experiments/benchmarks/ab_update.py --variant base= \\
      --variant fast_math=XLA_FLAGS=--xla_cpu_enable_fast_math=true [--processes 3] [--steps 5]
      [--out experiments/results/bench_ab_update.jsonl]

A variant is NAME=ENV=VALUE[;ENV=VALUE...] (environment settings of its processes, e.g. XLA
flags) or NAME=--arg value (gkd_step.py arguments such as --chunk 32 or --dtype bfloat16).
Each process builds gkd_step.py's workload, samples one on-policy batch, compiles, and times
`--steps` train steps and teacher-scoring calls; a row per process goes to `--out` (CPU, commit,
load before and after), and the medians per variant are printed. `--one` is the worker.
"""

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)


def worker(argv):
  sys.path.insert(0, REPO)
  import jax
  import jax.numpy as jnp

  import gkd_step
  import roofline as R
  from gkd import sampling
  parser = gkd_step.arg_parser()
  parser.add_argument("--one", action="store_true")
  args = parser.parse_args(argv)
  load_before, host = os.getloadavg()[0], R.machine()
  w = gkd_step.build(args)
  out = w.sampler(w.state.params["student"], w.prompt_tokens, w.prompt_mask, rng=jax.random.key(0),
                  max_new_tokens=args.new_tokens)
  batch = jax.tree.map(jnp.asarray, sampling.trim_to_bucket(
      {"prompt_tokens": w.prompt_tokens, "prompt_mask": w.prompt_mask,
       "response_tokens": out.tokens, "response_mask": out.mask}, gkd_step.BUCKETS))
  state, step_s, teacher_s = w.state, [], []
  for i in range(args.steps + 1):
    t0 = time.perf_counter()
    state, metrics = w.train_step(state, batch, w.teacher_params)
    jax.block_until_ready(metrics)
    t1 = time.perf_counter()
    jax.block_until_ready(w.teacher_scores(w.teacher_params, batch))
    t2 = time.perf_counter()
    if i:  # the first call compiles
      step_s.append(t1 - t0)
      teacher_s.append(t2 - t1)
  step, teacher = statistics.median(step_s), statistics.median(teacher_s)
  print(json.dumps({"train_step_s": step, "teacher_s": teacher, "update_s": step - teacher,
                    "train_step_all": step_s, "teacher_all": teacher_s, "loss": float(metrics["loss"]),
                    **{k: host[k] for k in ("cpu_model", "cpu_count", "commit", "dirty")},
                    "xla_flags": os.environ.get("XLA_FLAGS", ""), "argv": argv,
                    "load_avg_1m_before": load_before, "load_avg_1m_after": os.getloadavg()[0]}))


def parse_variant(text):
  name, _, spec = text.partition("=")
  if spec.startswith("--"):
    return name, {}, shlex.split(spec)
  env = dict(item.split("=", 1) for item in spec.split(";") if item)
  return name, env, []


def main():
  if "--one" in sys.argv:
    return worker([a for a in sys.argv[1:]])
  parser = argparse.ArgumentParser()
  parser.add_argument("--variant", action="append", required=True)
  parser.add_argument("--processes", type=int, default=3)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--label", default="")
  parser.add_argument("--out", default=os.path.join(REPO, "experiments", "results", "bench_ab_update.jsonl"))
  args = parser.parse_args()
  variants = [parse_variant(v) for v in args.variant]
  run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
  results = {name: [] for name, _, _ in variants}
  for rep in range(args.processes):
    for name, env, extra in variants:
      cmd = [sys.executable, os.path.abspath(__file__), "--one", "--steps", str(args.steps), *extra]
      proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": REPO, **env})
      lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
      row = json.loads(lines[-1]) if lines and not proc.returncode else {"error": proc.stderr[-1500:]}
      row.update({"run_id": run_id, "variant": name, "env": env, "extra": extra, "repeat": rep,
                  "label": args.label})
      with open(args.out, "a") as f:
        f.write(json.dumps(row) + "\n")
      results[name].append(row)
      print(f"{name} #{rep}: " + (f"step {row['train_step_s']:.3f} teacher {row['teacher_s']:.3f} "
                                  f"update {row['update_s']:.3f} s, load {row['load_avg_1m_before']:.1f}"
                                  if "error" not in row else row["error"].splitlines()[-1]),
            file=sys.stderr, flush=True)
  for name, rows in results.items():
    good = [r for r in rows if "error" not in r]
    if good:
      med = {k: statistics.median(r[k] for r in good) for k in ("train_step_s", "teacher_s", "update_s")}
      print(f"{run_id} {name}: median over {len(good)} processes: step {med['train_step_s']:.3f}, "
            f"teacher {med['teacher_s']:.3f}, update {med['update_s']:.3f} s", file=sys.stderr)


if __name__ == "__main__":
  main()
