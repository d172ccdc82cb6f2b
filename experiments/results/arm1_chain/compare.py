"""Arm 1's pre-registered comparisons (plan.md beside this file) from the committed sweep:
H1, H2 and the secondary ones, each method minus another on the same seeds and test examples,
with the nominal 95% interval and the Bonferroni one over the plan's 13 comparisons
(1 - 0.05/13); comparisons of the amendment's two methods are listed apart. Seeds missing from
either side are left out and the count is printed.
  PYTHONPATH=. python experiments/results/arm1_chain/compare.py > experiments/results/arm1_chain/compare.txt
"""

import os
import re

import numpy as np

from gkd.eval import stats
from gkd.rundir import read_examples, read_jsonl

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "methods")
BONFERRONI = 1 - 0.05 / 13
NAMES = {  # point name without its seed -> the plan's method name
    "mode=sft,dataset=1.0,student=0.0": "sft",
    "divergence=forward_kl,student=0.0,dataset=1.0": "supervised_kd",
    "divergence=forward_kl,dataset=0.0,teacher=1.0,student=0.0,cache_teacher_samples=False":
        "seq_kd",
    "divergence=forward_kl,student=1.0,dataset=0.0": "gkd_fkl",
    "divergence=reverse_kl,student=1.0,dataset=0.0": "gkd_rkl",
    "divergence=generalized_jsd,beta=0.9,student=1.0,dataset=0.0": "gkd_jsd0.9",
    "divergence=generalized_jsd,beta=0.9,student=0.5,dataset=0.5": "mixed_jsd0.9",
    "divergence=reverse_kl,student=1.0,dataset=0.0,estimator=sampled_token": "gkd_rkl_sampled",
    "divergence=generalized_jsd,beta=0.9,student=1.0,dataset=0.0,source=self,self_prompt_len=32":
        "opsd_jsd0.9",
}


def accuracy(rows):
  return np.array([r["accuracy"] for r in sorted(rows, key=lambda r: r["example_id"])])


runs = {}  # method -> {seed: accuracies}
for row in read_jsonl(os.path.join(HERE, "results.jsonl")):
  if row.get("status") != "done":
    continue
  name, seed = re.fullmatch(r"(.*),seed=(\d+)", row["point"]).groups()
  runs.setdefault(NAMES[name], {})[int(seed)] = accuracy(
      read_examples(os.path.join(HERE, "points", row["point"])))


def diff(a: str, b: str) -> str:
  seeds = sorted(set(runs.get(a, {})) & set(runs.get(b, {})))
  if not seeds:
    return f"{a} - {b}: no common seeds"
  x = np.stack([runs[a][s] for s in seeds])
  y = np.stack([runs[b][s] for s in seeds])
  nominal = stats.paired_difference_ci(x, y)
  strict = stats.paired_difference_ci(x, y, confidence=BONFERRONI)
  discordance = float(np.mean(x != y))
  return (f"{a} - {b} ({len(seeds)} seeds): {nominal.mean:+.4f} [{nominal.low:+.4f}, "
          f"{nominal.high:+.4f}], Bonferroni [{strict.low:+.4f}, {strict.high:+.4f}], "
          f"discordance {discordance:.3f}")


for method in NAMES.values():
  if method in runs:
    a = np.stack([runs[method][s] for s in sorted(runs[method])])
    print(f"{method}: seeds {sorted(runs[method])}, accuracy {stats.mean_ci(a)}")
print("\nH1:", diff("gkd_jsd0.9", "seq_kd"))
print("H2:", diff("gkd_jsd0.9", "supervised_kd"))
if all(m in runs for m in ("gkd_jsd0.9", "supervised_kd", "sft")):
  seeds = sorted(set(runs["gkd_jsd0.9"]) & set(runs["supervised_kd"]) & set(runs["sft"]))
  gain = lambda m: np.mean([runs[m][s].mean() - runs["sft"][s].mean() for s in seeds])  # noqa: E731
  print(f"H2, relative: on-policy JSD(0.9)'s gain over SFT continued {gain('gkd_jsd0.9'):+.4f}, "
        f"supervised KD's {gain('supervised_kd'):+.4f} ({len(seeds)} seeds)")
print("\nSecondary:")
for a, b in [("gkd_fkl", "seq_kd"), ("gkd_fkl", "supervised_kd"), ("gkd_rkl", "seq_kd"),
             ("gkd_rkl", "supervised_kd"), ("mixed_jsd0.9", "gkd_jsd0.9")]:
  print(" ", diff(a, b))
for method in ("supervised_kd", "seq_kd", "gkd_fkl", "gkd_rkl", "gkd_jsd0.9", "mixed_jsd0.9"):
  print(" ", diff(method, "sft"))
print("\nThe amendment's methods (secondary):")
for a, b in [("gkd_rkl_sampled", "gkd_rkl"), ("gkd_rkl_sampled", "seq_kd"), ("opsd_jsd0.9", "sft"),
             ("opsd_jsd0.9", "gkd_jsd0.9")]:
  print(" ", diff(a, b))

# For scale: how often two seeds of one method disagree on a test example.
print("\nBetween seeds of one method (every pair of its seeds):")
for method, by_seed in runs.items():
  seeds = sorted(by_seed)
  pairs = [np.mean(by_seed[i] != by_seed[j]) for i in seeds for j in seeds if i < j]
  if pairs:
    print(f"  {method}: discordance {np.mean(pairs):.3f} (pairs {min(pairs):.3f}-{max(pairs):.3f})")

# The amendment of 2026-12-03: on-policy JSD(0.9) seed 0 on the first teacher export (the sweep's
# point) and on the retrained one (teacher_check/), example by example.
CHECK = os.path.join(os.path.dirname(HERE), "teacher_check", "points",
                     "divergence=generalized_jsd,beta=0.9,student=1.0,dataset=0.0,seed=0")
if os.path.isdir(CHECK) and 0 in runs.get("gkd_jsd0.9", {}):
  again, first = accuracy(read_examples(CHECK)), runs["gkd_jsd0.9"][0]
  d = stats.paired_difference_ci(again[None], first[None])
  print(f"\nTeacher check: gkd_jsd0.9 seed 0, retrained export minus first: accuracy "
        f"{again.mean():.4f} vs {first.mean():.4f}, {d.mean:+.4f} [{d.low:+.4f}, {d.high:+.4f}], "
        f"discordance {float(np.mean(again != first)):.3f}")
