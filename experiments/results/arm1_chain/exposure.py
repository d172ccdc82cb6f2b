"""Exposure-bias analysis of a chain_orders sweep: where each student's greedy solution leaves the
teacher's, and at which step its first error falls, on-policy against off-policy.

  python experiments/results/arm1_chain/exposure.py SWEEP_DIR TEACHER_RUN_DIR [--config=configs/arm1_chain.py]

SWEEP_DIR holds results.jsonl and points/NAME/eval_examples.jsonl[.gz] (greedy completions on
the test split); TEACHER_RUN_DIR the teacher's own eval on the same examples. Positions are
characters of the completion (tokens, for the char-level testbed). Two views:
  divergence   per method, the share of test prompts whose greedy solution first leaves the
               teacher's at each range of positions, and the accuracy within each range;
  hazard       per method, for each solution step k, the share of solutions whose first wrong
               step is k among those whose steps before k were all right (gkd.data.arith's
               checker: a step must add an unused term to the running total without a slip).
               Exposure bias predicts a hazard that grows with k for students trained only on
               others' prefixes, and less growth for students trained on their own.
Writes SWEEP_DIR/exposure.md and SWEEP_DIR/exposure.png. Intervals: percentile bootstrap over
test examples, seeds pooled (a spread for a descriptive table, not a paired test).
"""

import argparse
import gzip
import importlib.util
import json
import os

import numpy as np

from gkd.data import arith, tasks
from gkd.eval import stats
from gkd.eval.summary import flat_overrides

BUCKETS = ((0, 8), (8, 16), (16, 32), (32, 64), (64, 10**6))
ON_POLICY = ("gkd_fkl", "gkd_rkl", "gkd_jsd0.9")
OFF_POLICY = ("sft", "supervised_kd", "seq_kd")
MAX_STEPS = 6


def read_rows(run_dir: str) -> list[dict]:
  """eval_examples.jsonl or its gzipped form, ordered by example id."""
  path = os.path.join(run_dir, "eval_examples.jsonl")
  if os.path.exists(path):
    opener = open(path)
  else:
    opener = gzip.open(path + ".gz", "rt")
  with opener as f:
    rows = [json.loads(line) for line in f]
  return sorted(rows, key=lambda r: r["example_id"])


def first_difference(a: str, b: str) -> int:
  """The first character index where two strings differ (-1 when equal)."""
  for i, (x, y) in enumerate(zip(a, b)):
    if x != y:
      return i
  return -1 if len(a) == len(b) else min(len(a), len(b))


def method_names(config_path: str) -> dict:
  """{frozen flat overrides: method name} from the config's METHODS."""
  spec = importlib.util.spec_from_file_location("arm_config", config_path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return {_key(m): name for name, m in module.METHODS.items()}


def _key(overrides: dict):
  flat = flat_overrides({k: v for k, v in overrides.items() if k != "seed"})
  return tuple(sorted((k, str(v)) for k, v in flat.items()))


def analyse(sweep: str, teacher_dir: str, config_path: str) -> dict:
  names = method_names(config_path)
  with open(os.path.join(sweep, "results.jsonl")) as f:
    points = [json.loads(line) for line in f]
  teacher = [r["completion"] for r in read_rows(teacher_dir)]
  examples = None
  per_method = {}
  for p in points:
    if p.get("status") != "done":
      continue
    name = names.get(_key(p["overrides"]))
    rows = read_rows(os.path.join(sweep, "points", p["point"]))
    if name is None or len(rows) != len(teacher):
      continue
    if examples is None:
      examples = tasks.get_task("chain_orders").generate("test")[:len(rows)]
    out = per_method.setdefault(name, {"div": [], "correct": [], "bad": [], "steps": []})
    for r, t, e in zip(rows, teacher, examples):
      terms = arith.signed_terms(e["prompt"][:-1])
      out["div"].append(first_difference(r["completion"], t))
      out["correct"].append(r["accuracy"])
      bad = arith.first_bad_step(terms, r["completion"])
      out["bad"].append(-1 if bad is None else bad)
      out["steps"].append(len(terms))  # len(terms) - 1 sums, then the answer
  return {k: {kk: np.array(vv) for kk, vv in v.items()} for k, v in per_method.items()}


def _ci(x) -> str:
  if len(x) < 2:
    return "—" if not len(x) else f"{np.mean(x):.3f}"
  i = stats.mean_ci(np.asarray(x, float), num_resamples=1000)
  return f"{i.mean:.3f} [{i.low:.3f}, {i.high:.3f}]"


def hazard(m: dict, k: int):
  """(first errors at step k, solutions reaching step k with every earlier step right)."""
  reached = (m["bad"] < 0) | (m["bad"] >= k)
  reached &= k < m["steps"]  # a solution of n terms has n-1 sums and the answer: steps 0..n-1
  return int(np.sum(m["bad"][reached] == k)), int(np.sum(reached))


def report(per_method: dict) -> str:
  order = [n for n in (*OFF_POLICY, *ON_POLICY, "mixed_jsd0.9") if n in per_method]
  lines = ["# Exposure-bias analysis (exposure.py)", "",
           "## Where the greedy solution first leaves the teacher's (character position)", "",
           "| method | n | never leaves | " + " | ".join(f"[{a}, {b if b < 10**6 else '∞'})"
                                                         for a, b in BUCKETS) + " |",
           "|---|---|---|" + "---|" * len(BUCKETS)]
  for name in order:
    m = per_method[name]
    cells = [f"{np.mean(m['div'] < 0):.3f} (acc {_ci(m['correct'][m['div'] < 0])})"]
    for a, b in BUCKETS:
      sel = (m["div"] >= a) & (m["div"] < b)
      cells.append(f"{np.mean(sel):.3f} (acc {_ci(m['correct'][sel])})")
    lines.append(f"| {name} | {len(m['div'])} | " + " | ".join(cells) + " |")
  lines += ["", "Each cell: the share of (seed, prompt) pairs in the range, and the accuracy within it.",
            "", "## Hazard of the first wrong step, by step (among solutions right so far)", "",
            "| method | " + " | ".join(f"step {k}" for k in range(MAX_STEPS)) + " |",
            "|---|" + "---|" * MAX_STEPS]
  for name in order:
    cells = []
    for k in range(MAX_STEPS):
      bad, reached = hazard(per_method[name], k)
      cells.append(f"{bad / reached:.3f} ({bad}/{reached})" if reached else "—")
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  lines += ["", "Step k < n−1 is the k-th sum of an n-term problem; step n−1 is the answer "
            "(wrong when a term was left out or the answer differs from the last sum).", ""]
  return "\n".join(lines)


def plot(per_method: dict, path: str):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
  for name, m in per_method.items():
    style = "-" if name in ON_POLICY else "--"
    xs, ys = [], []
    for k in range(MAX_STEPS):
      bad, reached = hazard(m, k)
      if reached >= 20:
        xs.append(k)
        ys.append(bad / reached)
    ax2.plot(xs, ys, style, marker="o", label=name)
    acc = [np.mean(m["correct"][(m["div"] >= a) & (m["div"] < b)])
           if np.any((m["div"] >= a) & (m["div"] < b)) else np.nan for a, b in BUCKETS]
    ax1.plot(range(len(BUCKETS)), acc, style, marker="o", label=name)
  ax1.set_xticks(range(len(BUCKETS)), [f"{a}–{b if b < 10**6 else ''}" for a, b in BUCKETS])
  ax1.set(xlabel="first divergence from the teacher's greedy solution (chars)",
          ylabel="accuracy", title="accuracy by where the solution leaves the teacher's")
  ax2.set(xlabel="solution step", ylabel="P(first wrong step = k | right so far)",
          title="hazard of the first error (solid: on-policy)")
  ax2.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("sweep")
  parser.add_argument("teacher")
  parser.add_argument("--config", default="configs/arm1_chain.py")
  args = parser.parse_args()
  per_method = analyse(args.sweep, args.teacher, args.config)
  text = report(per_method)
  with open(os.path.join(args.sweep, "exposure.md"), "w") as f:
    f.write(text)
  plot(per_method, os.path.join(args.sweep, "exposure.png"))
  print(text)


if __name__ == "__main__":
  main()
