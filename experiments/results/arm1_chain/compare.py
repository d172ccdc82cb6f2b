"""Arm 1's pre-registered comparisons (plan.md beside this file) from the committed sweep:
H1, H2 and the secondary ones, each method minus another on the same seeds and test examples,
with the nominal 95% interval and the Bonferroni one over the plan's 13 comparisons
(1 - 0.05/13); comparisons of the amendment's two methods are listed apart. Seeds missing from
either side are left out and the count is printed.
  PYTHONPATH=. python experiments/results/arm1_chain/compare.py > experiments/results/arm1_chain/compare.txt
"""

import os

import numpy as np

from gkd.eval import compare, stats

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "methods")
REPO = os.path.join(HERE, "..", "..", "..", "..")
BONFERRONI = 1 - 0.05 / 13
CONFIG = compare.load_config_module(os.path.join(REPO, "configs", "arm1_chain.py"))
runs = compare.per_example(HERE, CONFIG.METHODS)  # method -> {seed: accuracies}


def diff(a: str, b: str) -> str:
  return compare.describe(runs, a, b, strict_confidence=BONFERRONI)


for method in CONFIG.METHODS:
  if method in runs:
    a = np.stack([runs[method][s] for s in sorted(runs[method])])
    print(f"{method}: seeds {sorted(runs[method])}, accuracy {stats.mean_ci(a)}")
print()
for label, (a, b) in CONFIG.HYPOTHESES.items():
  print(f"{label}:", diff(a, b))
gains = compare.gains_over(runs, ("gkd_jsd0.9", "supervised_kd"), "sft")
if gains:
  print(f"H2, relative: on-policy JSD(0.9)'s gain over SFT continued {gains[0]['gkd_jsd0.9']:+.4f}, "
        f"supervised KD's {gains[0]['supervised_kd']:+.4f} ({len(gains[1])} seeds)")
print("\nSecondary:")
for a, b in CONFIG.SECONDARY:
  print(" ", diff(a, b))
print("\nThe amendment's methods (secondary):")
for a, b in CONFIG.AMENDED:
  print(" ", diff(a, b))

print("\nBetween seeds of one method (every pair of its seeds):")
for line in compare.between_seeds(runs):
  print(" ", line)

# The amendment of 2026-12-03: on-policy JSD(0.9) seed 0 on the first teacher export (the sweep's
# point) and on the retrained one (teacher_check/), example by example.
CHECK = os.path.join(os.path.dirname(HERE), "teacher_check")
line = compare.rerun_difference(CHECK, runs, CONFIG.METHODS, "gkd_jsd0.9", 0,
                                "retrained export minus first")
if line:
  print(f"\nTeacher check: {line}")
