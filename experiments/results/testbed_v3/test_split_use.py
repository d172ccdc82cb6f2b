"""How much the v3 testbed asks of its 2,000 test examples: the finished runs evaluated on them
(per collected directory), and the paired accuracy comparisons the committed analyses compute on
them (the sweeps' differences.csv, paired_vs_start.txt, paper/questions.txt), with how many of
those exclude 0. With no correction for multiple comparisons, about 1 in 20 comparisons of equal
methods excludes 0 by chance. Reads the committed files only:
  PYTHONPATH=. python experiments/results/testbed_v3/test_split_use.py > experiments/results/testbed_v3/test_split_use.txt
"""

import csv
import glob
import json
import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))


def test_runs(folder: str) -> int:
  count = 0
  for config in glob.glob(os.path.join(folder, "**", "config.json"), recursive=True):
    run = os.path.dirname(config)
    if os.path.basename(run) == "export":  # the model's config, not a run's
      continue
    with open(config) as f:
      split = json.load(f)["eval"]["split"]
    count += split == "test" and os.path.exists(os.path.join(run, "final_metrics.json"))
  return count


def main():
  folders = sorted(d for d in os.listdir(HERE) if os.path.isdir(os.path.join(HERE, d)))
  runs = {d: test_runs(os.path.join(HERE, d)) for d in folders}
  print("Runs evaluated on the test split:")
  for d, n in runs.items():
    if n:
      print(f"  {d}: {n}")
  print(f"  total: {sum(runs.values())}")

  comparisons = {}  # source: (count, CIs excluding 0)
  for path in sorted(glob.glob(os.path.join(HERE, "*", "differences.csv"))):
    sweep = os.path.basename(os.path.dirname(path))
    if not runs.get(sweep):
      continue  # a validation-only sweep
    with open(path) as f:
      rows = [r for r in csv.DictReader(f) if r.get("accuracy_diff")]
    comparisons[f"{sweep}/differences.csv"] = (
        len(rows), sum(r["accuracy_excludes_zero"] == "True" for r in rows))
  for path in sorted(glob.glob(os.path.join(HERE, "**", "paired_vs_start.txt"), recursive=True)):
    with open(path) as f:
      text = f.read()
    lows = [float(x) for x in re.findall(r"(?:minus the start|SeqKD.*?\(\d+ seeds\):) "
                                         r"Interval\(mean=[^,]+, low=([^,]+)", text)]
    highs = [float(x) for x in re.findall(r"(?:minus the start|SeqKD.*?\(\d+ seeds\):) "
                                          r"Interval\(mean=[^,]+, low=[^,]+, high=([^,]+)", text)]
    comparisons[os.path.relpath(path, HERE)] = (
        len(lows), sum(lo > 0 or hi < 0 for lo, hi in zip(lows, highs)))
  with open(os.path.join(HERE, "paper", "questions.txt")) as f:
    pairs = dict(re.findall(r"^  (\S.* minus .*?) \(\d+ seeds\): \S+ \[.*\]( \*)?$", f.read(),
                            re.M))
  comparisons["paper/questions.txt"] = (len(pairs), sum(mark == " *" for mark in pairs.values()))

  print("\nPaired accuracy comparisons on the test split in the committed analyses "
        "(comparisons, of which the CI excludes 0):")
  for source, (n, excluding) in comparisons.items():
    print(f"  {source}: {n}, {excluding}")
  total = sum(n for n, _ in comparisons.values())
  print(f"  total: {total}, {sum(e for _, e in comparisons.values())}; "
        f"expected to exclude 0 by chance if every pair were equal: {total / 20:.1f}")


if __name__ == "__main__":
  main()
