"""The GKD paper's questions, asked of the `paper` sweep (test accuracy on 2,000 examples, paired by
seed and example; only seeds every compared method finished are used):
  1. on-policy GKD against supervised KD: each divergence at λ=1 minus supervised KD (FKL, λ=0);
  2. on-policy GKD against SeqKD: the same, minus SeqKD;
  3. does student data help each divergence: λ=1 and λ=0.5 minus λ=0, per divergence;
  4. which divergence: each on-policy (λ=1) divergence minus on-policy forward KL;
  and every method minus SFT continued for the same steps (the sweep's paired baseline), with how
  often its CI excludes 0 over 20 bootstrap seeds (a bound this close to 0 is Monte Carlo noise).
Reads the committed files only:
  PYTHONPATH=. python experiments/results/testbed_v3/paper_questions.py > experiments/results/testbed_v3/paper/questions.txt
"""

import os
import re

import numpy as np

from gkd.eval import stats
from gkd.rundir import read_examples, read_jsonl

SWEEP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "paper")
DIVERGENCES = {"FKL": "divergence=forward_kl", "RKL": "divergence=reverse_kl",
               "JSD(0.1)": "divergence=generalized_jsd,beta=0.1",
               "JSD(0.5)": "divergence=generalized_jsd,beta=0.5",
               "JSD(0.9)": "divergence=generalized_jsd,beta=0.9"}
LAMBDA = {1.0: "student=1.0,dataset=0.0", 0.5: "student=0.5,dataset=0.5", 0.0: "student=0.0,dataset=1.0"}


def name(div, lam):
  return f"{div} λ={lam:g}"


def load() -> dict[str, dict[int, np.ndarray]]:
  """{method: {seed: accuracy per example, by example id}} for every finished point."""
  keys = {f"{DIVERGENCES[d]},{LAMBDA[lam]}": name(d, lam) for d in DIVERGENCES for lam in LAMBDA}
  keys["mode=sft,dataset=1.0,student=0.0"] = "SFT continued"
  keys["divergence=forward_kl,dataset=0.0,teacher=1.0,student=0.0"] = "SeqKD"
  out: dict[str, dict[int, np.ndarray]] = {}
  for point in (r["point"] for r in read_jsonl(os.path.join(SWEEP, "results.jsonl"))):
    rows = read_examples(os.path.join(SWEEP, "points", point))
    if not rows:
      continue
    key, seed = re.fullmatch(r"(.*),seed=(\d+)", point).groups()
    rows = sorted(rows, key=lambda r: r["example_id"])
    out.setdefault(keys[key], {})[int(seed)] = np.array([r["accuracy"] for r in rows])
  return out


def compare(runs, a, b) -> str:
  seeds = sorted(set(runs.get(a, {})) & set(runs.get(b, {})))
  if not seeds:
    return f"{a} minus {b}: no common seed yet"
  d = stats.paired_difference_ci(np.stack([runs[a][s] for s in seeds]),
                                 np.stack([runs[b][s] for s in seeds]))
  mark = " *" if d.excludes_zero else ""
  return f"{a} minus {b} ({len(seeds)} seeds): {d.mean:+.4f} [{d.low:+.4f}, {d.high:+.4f}]{mark}"


def robustness(runs, a, b, num_seeds=20) -> str:
  seeds = sorted(set(runs[a]) & set(runs[b]))
  x, y = (np.stack([runs[m][s] for s in seeds]) for m in (a, b))
  cis = [stats.paired_difference_ci(x, y, seed=k) for k in range(num_seeds)]
  lows = [ci.low for ci in cis]
  return (f"{a} minus {b}: lower bound {min(lows):+.4f} to {max(lows):+.4f}, excludes 0 for "
          f"{sum(ci.excludes_zero for ci in cis)} of {num_seeds} seeds")


def main():
  runs = load()
  print("Paired differences in test accuracy, 95% CI (bootstrap over seeds and examples); "
        "* marks a CI that excludes 0.\n")
  print("Every method:")
  for method in sorted(runs):
    m = stats.mean_ci(np.stack([runs[method][s] for s in sorted(runs[method])]))
    print(f"  {method} ({len(runs[method])} seeds): {m.mean:.4f} [{m.low:.4f}, {m.high:.4f}]")
  sections = [
      ("0. every method minus SFT continued", [(m, "SFT continued") for m in sorted(runs)
                                               if m != "SFT continued"]),
      ("1. on-policy GKD minus supervised KD", [(name(d, 1.0), name("FKL", 0.0)) for d in DIVERGENCES]),
      ("2. on-policy GKD minus SeqKD", [(name(d, 1.0), "SeqKD") for d in DIVERGENCES]),
      ("3. student data, per divergence: λ=1 and λ=0.5 minus λ=0",
       [(name(d, lam), name(d, 0.0)) for d in DIVERGENCES for lam in (1.0, 0.5)]),
      ("4. on-policy divergences minus on-policy FKL",
       [(name(d, 1.0), name("FKL", 1.0)) for d in DIVERGENCES if d != "FKL"]),
  ]
  for title, pairs in sections:
    print(f"\n{title}:")
    for a, b in pairs:
      print("  " + compare(runs, a, b))
  print("\n0b. every method minus SFT continued, the CI's lower bound over bootstrap seeds 0-19:")
  for a, b in sections[0][1]:
    print("  " + robustness(runs, a, b))


if __name__ == "__main__":
  main()
