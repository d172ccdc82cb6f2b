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
import os

import numpy as np

from gkd import rundir
from gkd.data import arith, tasks
from gkd.eval import compare, stats

BUCKETS = ((0, 8), (8, 16), (16, 32), (32, 64), (64, 10**6))
ON_POLICY = ("gkd_fkl", "gkd_rkl", "gkd_jsd0.9")
OFF_POLICY = ("sft", "supervised_kd", "seq_kd")
OTHERS = ("mixed_jsd0.9", "gkd_rkl_sampled", "opsd_jsd0.9")  # in the tables, not in H3's groups
MAX_STEPS = 6


def read_rows(run_dir: str) -> list[dict]:
  """A run's per-example rows (its eval_examples.jsonl[.gz], or the sweep's packed table), ordered
  by example id."""
  rows = rundir.read_examples(run_dir)
  if rows is None:
    raise FileNotFoundError(f"{run_dir}: no per-example eval rows")
  return sorted(rows, key=lambda r: r["example_id"])


def first_difference(a: str, b: str) -> int:
  """The first character index where two strings differ (-1 when equal)."""
  for i, (x, y) in enumerate(zip(a, b)):
    if x != y:
      return i
  return -1 if len(a) == len(b) else min(len(a), len(b))


def analyse(sweep: str, teacher_dir: str, config_path: str) -> dict:
  methods = compare.load_config_module(config_path).METHODS
  teacher = [r["completion"] for r in read_rows(teacher_dir)]
  examples = None
  per_method = {}
  for name, _, p in compare.finished_points(sweep, methods):
    rows = read_rows(os.path.join(sweep, "points", p["point"]))
    if len(rows) != len(teacher):
      continue
    if examples is None:
      examples = tasks.get_task("chain_orders").generate("test")[:len(rows)]
    out = per_method.setdefault(name, {"div": [], "correct": [], "bad": [], "steps": [],
                                       "example": []})
    for i, (r, t, e) in enumerate(zip(rows, teacher, examples)):
      out["example"].append(i)
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


def _hazard_counts(m: dict, steps, n: int):
  """Per test example (n of them): first wrong steps at any of `steps`, and solutions that reach
  those steps with every earlier step right (a solution of n terms has steps 0..n-1: n-1 sums and
  the answer)."""
  bad, reached = np.zeros(n), np.zeros(n)
  for k in steps:
    at = ((m["bad"] < 0) | (m["bad"] >= k)) & (k < m["steps"])
    np.add.at(reached, m["example"][at], 1)
    np.add.at(bad, m["example"][at & (m["bad"] == k)], 1)
  return bad, reached


def hazard(m: dict, k: int):
  """(first errors at step k, solutions reaching step k with every earlier step right)."""
  bad, reached = _hazard_counts(m, [k], 1 + int(m["example"].max()))
  return int(bad.sum()), int(reached.sum())


def hazard_growth(per_method: dict, num_resamples: int = 2000, seed: int = 0) -> dict:
  """The plan's H3: the pooled hazard at steps >= 2 minus the pooled hazard at step 0, for the
  on-policy methods pooled and the off-policy ones pooled, and on-policy minus off-policy, each
  (value, low, high) with a 95% percentile interval from resampling test examples (paired: one
  draw serves all methods and seeds)."""
  n = 1 + max(int(m["example"].max()) for m in per_method.values())
  counts = {}
  for group, names in (("on-policy", ON_POLICY), ("off-policy", OFF_POLICY)):
    got = [per_method[name] for name in names if name in per_method]
    if not got:
      return {}
    counts[group] = [sum(c) for c in zip(*(_hazard_counts(m, [0], n)
                                            + _hazard_counts(m, range(2, MAX_STEPS), n)
                                            for m in got))]

  def growth(group, w):  # w: example weights, [n] or [resamples, n]
    b0, r0, b2, r2 = counts[group]
    return (w @ b2) / (w @ r2) - (w @ b0) / (w @ r0)

  weights = np.random.default_rng(seed).multinomial(n, np.full(n, 1 / n), num_resamples)
  value = {g: growth(g, np.ones(n)) for g in counts}
  draws = {g: growth(g, weights) for g in counts}
  value["on-policy minus off-policy"] = value["on-policy"] - value["off-policy"]
  draws["on-policy minus off-policy"] = draws["on-policy"] - draws["off-policy"]
  return {g: (float(value[g]), *map(float, np.percentile(draws[g], [2.5, 97.5]))) for g in value}


def report(per_method: dict) -> str:
  order = [n for n in (*OFF_POLICY, *ON_POLICY, *OTHERS) if n in per_method]
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
            "(wrong when a term was left out or the answer differs from the last sum).", "",
            "## H3: growth of the hazard, step >= 2 minus step 0 (pooled)", "",
            f"On-policy: {', '.join(ON_POLICY)}; off-policy: {', '.join(OFF_POLICY)} (plan.md). "
            "95% intervals resample the test examples.", "",
            "| group | hazard growth |", "|---|---|"]
  for group, (value, low, high) in hazard_growth(per_method).items():
    lines.append(f"| {group} | {value:+.4f} [{low:+.4f}, {high:+.4f}] |")
  return "\n".join(lines + [""])


def plot(per_method: dict, path: str):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
  for name, m in per_method.items():
    style = "-" if name in ON_POLICY else "--" if name in OFF_POLICY else ":"
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
          title="hazard of the first error (solid: on-policy; dashed: off)")
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
