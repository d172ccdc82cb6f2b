"""Cost curves: step time and peak memory as the batch, the response length and the student grow,
gkd against TRL's GKDTrainer (and EasyDeL's GKDTrainer where its venv runs), one row per point.

  python experiments/benchmarks/cost_curves.py [--systems gkd,trl-gkd,easydel]
      [--axes batch,length,student] [--timed 2] [--out experiments/results/cost_curves.jsonl]
  python experiments/benchmarks/cost_curves.py --plot experiments/results/cost_curves.png

The workload is the side-by-side one (side_by_side.py: SmolLM2-135M-Instruct teacher, on-policy
JSD(0.5), AdamW, float32, chat prompts of 46-48 tokens) with one factor moved at a time from the
base point (batch 8, 64 new tokens, student 4x256): the batch through 8-64, the new tokens
through 64-512, the student through the shapes in students.py. The random students never emit
EOS, so every row generates exactly batch x new tokens on both sides.

Resumable: a point whose row is already in `--out` without an error is skipped, so the grid can
be run in pieces (e.g. one quiet window each, through quiet.sh); with `--max_load 3` the points
measured under a higher load are measured again (the plot takes each point's last row). Each point runs in its own
process (its own peak RSS) and its row names the CPU, the commit, the load before and after and
the memory available before it. A point is not started while the machine has less memory
available than it is expected to need (the largest earlier row of that system, scaled by the
tokens or the student's weights), and TRL runs under an address-space limit of the memory
available, so a point that does not fit fails in its own process with a row saying so, instead
of calling the kernel's OOM killer onto a neighbour. Cost on a quiet 2-core CPU: gkd about
15 minutes for the whole grid, TRL about an hour.
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

from students import matmul_params  # noqa: E402

BASE = {"batch": 8, "new_tokens": 64, "student": "4x256"}
AXES = {"batch": [8, 16, 32, 64], "length": [64, 128, 256, 512],
        "student": ["4x256", "8x384", "15x576", "30x576"]}
FIELD = {"batch": "batch", "length": "new_tokens", "student": "student"}
VOCAB = 49152
GiB = 2 ** 30


def points(axes):
  seen, out = set(), []
  for axis in axes:
    for value in AXES[axis]:
      p = {**BASE, FIELD[axis]: value}
      key = (p["batch"], p["new_tokens"], p["student"])
      if key not in seen:
        seen.add(key)
        out.append(p)
  return out


def key(row):
  return (row["system"], row["batch"], row["new_tokens"], row["student"])


def size(p):
  """A point's work relative to the base: tokens for batch and length, weights for the student."""
  tokens = p["batch"] * (48 + p["new_tokens"]) / (BASE["batch"] * (48 + BASE["new_tokens"]))
  return tokens * matmul_params(p["student"], VOCAB) / matmul_params(BASE["student"], VOCAB)


def mem_available():
  with open("/proc/meminfo") as f:
    return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable"))


def expected_bytes(system, p, rows):
  """Earlier peaks of `system` with their part above the fixed cost scaled by size(): the fixed
  cost is the RSS after loading the models where the row has it, else the system's smallest
  peak. None without an earlier row."""
  done = [r for r in rows if r["system"] == system and r.get("peak_rss_bytes")]
  if not done:
    return None
  smallest = min(r["peak_rss_bytes"] for r in done)

  def scaled(r):
    fixed = r.get("rss_after_load", smallest)
    return fixed + (r["peak_rss_bytes"] - fixed) * max(size(p) / size(r), 1.0)
  return max(scaled(r) for r in done)


def run_gkd(p, args, cap):
  del cap  # XLA:CPU reserves address space far beyond what it touches: no RLIMIT_AS here
  with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as tmp:
    cmd = [sys.executable, os.path.join(HERE, "gkd_step.py"), "--steps", str(args.timed),
           "--batch", str(p["batch"]), "--new_tokens", str(p["new_tokens"]),
           "--student", p["student"], "--out", tmp.name, "--label", "cost curve"]
    proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": REPO},
                          capture_output=True, text=True)
    rows = [json.loads(line) for line in open(tmp.name) if line.strip()]
  if proc.returncode or not rows:
    return {"error": proc.stderr[-1500:], "returncode": proc.returncode}
  r = rows[-1]
  return {"seconds_per_step": r["seconds_per_step"], "step_seconds": r["step_seconds"],
          "peak_rss_bytes": r["peak_rss_bytes"], "phases": r["phases"], "limits": r["limits"],
          "rss_after_load": r["peak_rss_bytes_by_stage"]["after_load"],
          "generated_tokens_per_step": r["generated_tokens_per_step"]}


def run_trl(p, args, cap):
  # prlimit, not a preexec_fn: this process has started JAX's threads, and fork + Python code
  # in the child can deadlock.
  cmd = ["prlimit", f"--as={cap}", "--", os.path.join(REPO, ".venv-trl", "bin", "python"),
         os.path.join(HERE, "trl_gkd_reference.py"),
         "--trainer", "gkd", "--warmup-steps", "1", "--timed-steps", str(args.timed),
         "--batch", str(p["batch"]), "--max-new-tokens", str(p["new_tokens"]), "--student", p["student"]]
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
  lines = [line for line in proc.stdout.splitlines() if line.startswith("{\"impl\"")]
  if proc.returncode or not lines:
    return {"error": proc.stderr[-1500:], "returncode": proc.returncode,
            "address_space_limit_bytes": cap}
  r = json.loads(lines[-1])
  return {k: r[k] for k in ("seconds_per_step", "step_seconds", "peak_rss_bytes",
                            "generated_tokens_per_step", "generate_seconds_per_step",
                            "forward_loss_seconds_per_step")}


def run_easydel(p, args, cap):
  python = os.path.join(REPO, ".venv-easydel", "bin", "python")
  cmd = [python, os.path.join(HERE, "easydel_gkd.py"), "--timed-steps", str(args.timed),
         "--batch", str(p["batch"]), "--max-new-tokens", str(p["new_tokens"]), "--student", p["student"]]
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
  lines = [line for line in proc.stdout.splitlines() if line.startswith("{\"impl\"")]
  if proc.returncode or not lines:
    return {"error": proc.stderr[-1500:], "returncode": proc.returncode}
  return json.loads(lines[-1])


SYSTEMS = {"gkd": run_gkd, "trl-gkd": run_trl, "easydel": run_easydel}


def measure(args):
  sys.path.insert(0, HERE)
  import roofline as R
  rows = []
  if os.path.exists(args.out):
    rows = [json.loads(line) for line in open(args.out) if line.strip()]
  done = {key(r) for r in rows if "error" not in r and "skipped" not in r
          and r["load_avg_1m_before"] <= args.max_load}
  for p in points(args.axes.split(",")):
    for system in args.systems.split(","):
      if (system, p["batch"], p["new_tokens"], p["student"]) in done:
        continue
      host, available = R.machine(), mem_available()
      need = expected_bytes(system, p, rows)
      row = {"system": system, **p, "timed_steps": args.timed,
             **{k: host[k] for k in ("cpu_model", "cpu_count", "commit", "dirty", "glibc_tunables")},
             "load_avg_1m_before": host["load_avg_1m"], "mem_available_bytes": available,
             "expected_peak_bytes": need, "quiet_wrapper_load": os.environ.get("QUIET_LOAD_BEFORE"),
             "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
      if need is not None and need > available - GiB:
        row["skipped"] = (f"expects {need / GiB:.1f} GiB, {available / GiB:.1f} GiB available")
      else:
        t0 = time.time()
        row.update(SYSTEMS[system](p, args, max(available - GiB, 2 * GiB)))
        row["wall_s"] = time.time() - t0
      row["load_avg_1m_after"] = os.getloadavg()[0]
      rows.append(row)
      with open(args.out, "a") as f:
        f.write(json.dumps(row) + "\n")
      status = row.get("seconds_per_step") or row.get("skipped") or row["error"].splitlines()[-1:]
      print(f"{system} {p}: {status}; load {row['load_avg_1m_before']:.1f}->"
            f"{row['load_avg_1m_after']:.1f}", file=sys.stderr, flush=True)


def plot(args):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  rows = [json.loads(line) for line in open(args.out) if line.strip()]
  best = {}
  for r in rows:  # the last good row of each point
    if "seconds_per_step" in r:
      best[key(r)] = r
  fig, axs = plt.subplots(2, 3, figsize=(13, 7.5))
  xs = {"batch": ("batch (prompts per step)", lambda r: r["batch"]),
        "length": ("new tokens per response", lambda r: r["new_tokens"]),
        "student": ("student matmul weights (M)",
                    lambda r: matmul_params(r["student"], VOCAB) / 1e6)}
  styles = {"gkd": ("tab:blue", "o"), "trl-gkd": ("tab:red", "s"), "easydel": ("tab:green", "^")}
  for col, axis in enumerate(("batch", "length", "student")):
    label, x = xs[axis]
    on_axis = {(p["batch"], p["new_tokens"], p["student"]) for p in points([axis])}
    for system, (color, marker) in styles.items():
      mine = sorted((r for k, r in best.items() if k[0] == system and k[1:] in on_axis), key=x)
      if not mine:
        continue
      kw = dict(color=color, marker=marker, label=system)
      axs[0, col].plot([x(r) for r in mine], [r["seconds_per_step"] for r in mine], **kw)
      if system == "gkd":  # the roofline: the sum of the phases' bounds (roofline.py)
        axs[0, col].plot([x(r) for r in mine], [sum(p["bound_s"] for p in r["phases"]) for r in mine],
                         color=color, linestyle="--", label="gkd roofline bound")
      axs[1, col].plot([x(r) for r in mine], [r["peak_rss_bytes"] / GiB for r in mine], **kw)
    for row, what in enumerate(("s/step", "peak RSS (GiB)")):
      ax = axs[row, col]
      ax.set_xscale("log", base=2)
      ax.set_yscale("log", base=2)
      ax.set_xlabel(label)
      ax.set_ylabel(what)
      ax.grid(True, which="both", alpha=0.3)
      ax.legend(fontsize=8)
  cpus = sorted({r["cpu_model"] for r in best.values()})
  commits = sorted({r["commit"][:7] for r in best.values()})
  loads = [r.get(k) for r in best.values() for k in ("load_avg_1m_before", "load_avg_1m_after")]
  loads = [x for x in loads if x is not None] or [float("nan")]
  fig.suptitle(f"On-policy GKD step cost, one factor at a time from batch 8 / 64 new tokens / "
               f"student 4x256 ({', '.join(cpus)}; commit {', '.join(commits)}; 1-min load "
               f"{min(loads):.1f}-{max(loads):.1f})", fontsize=10)
  fig.tight_layout()
  fig.savefig(args.plot, dpi=110)
  print(f"wrote {args.plot}", file=sys.stderr)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--systems", default="gkd,trl-gkd")
  parser.add_argument("--axes", default="batch,length,student")
  parser.add_argument("--timed", type=int, default=2)
  parser.add_argument("--out", default=os.path.join(REPO, "experiments", "results", "cost_curves.jsonl"))
  parser.add_argument("--max_load", type=float, default=float("inf"),
                      help="re-measure points whose row was taken at a higher 1-minute load")
  parser.add_argument("--plot", default="", help="draw the rows of --out into this PNG and exit")
  args = parser.parse_args()
  unknown = set(args.systems.split(",")) - set(SYSTEMS) or set(args.axes.split(",")) - set(AXES)
  if unknown:
    sys.exit(f"unknown system or axis: {sorted(unknown)}")
  plot(args) if args.plot else measure(args)


if __name__ == "__main__":
  main()
