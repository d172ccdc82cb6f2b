"""The divergences' gradient: written out (what gkd runs) against autodiff traced through the KL's
numerically careful form (what it ran before), side by side in one process.

  python experiments/benchmarks/loss_grad.py                    # [4, 64, 49152], ~1 min on CPU
  python experiments/benchmarks/loss_grad.py --out experiments/results/bench_loss_grad.jsonl

Each case is value_and_grad of the per-token divergence summed over [B, T], from student and
teacher logits (the log-softmaxes included), jitted. The two variants run interleaved, `--repeats`
rounds each, so load on a shared machine hits both alike: read the ratio, not the seconds. FLOPs,
bytes and transcendentals come from XLA's cost analysis of each compiled program. One JSON row
per case (with the CPU, load and commit) goes to stdout and, with --out, is appended to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

# Import gkd from this checkout, not from whatever copy is installed.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from gkd import divergences  # noqa: E402
from roofline import machine, program_cost  # noqa: E402

_traced_kl = divergences.core._kl.fun  # the same forward, without its written-out gradient


def _traced(name: str, beta: float):
  """The divergence on log-probs with autodiff through `_traced_kl` (the old gradient)."""
  if name == "forward_kl":
    return lambda ls, lt: _traced_kl(lt, ls)
  if name == "reverse_kl":
    return lambda ls, lt: _traced_kl(ls, lt)

  def jsd(ls, lt):
    lm = divergences.core._log_mix(beta, lt, ls)
    return beta * _traced_kl(lt, lm) + (1 - beta) * _traced_kl(ls, lm)
  return jsd


def _step(on_logprobs):
  def loss(zs, zt):
    return on_logprobs(divergences.log_probs(zs), divergences.log_probs(zt)).sum()
  return jax.jit(jax.value_and_grad(loss, argnums=0))


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--shape", default="4,64,49152", help="B,T,V of the logits")
  ap.add_argument("--repeats", type=int, default=7)
  ap.add_argument("--out", default="", help="append the JSON rows to this file")
  args = ap.parse_args()
  shape = tuple(int(x) for x in args.shape.split(","))
  k1, k2 = jax.random.split(jax.random.key(0))
  zs, zt = 3 * jax.random.normal(k1, shape), 3 * jax.random.normal(k2, shape)
  where = machine()
  cases = [("forward_kl", {}), ("reverse_kl", {}), ("generalized_jsd", {"beta": 0.5}),
           ("generalized_jsd", {"beta": 0.9})]
  for name, kw in cases:
    steps = {"written": _step(divergences.get(name, **kw).on_logprobs),
             "traced": _step(_traced(name, kw.get("beta", 0.0)))}
    costs = {k: program_cost(f, zs, zt) for k, f in steps.items()}
    (v_new, g_new), (v_old, g_old) = steps["written"](zs, zt), steps["traced"](zs, zt)
    times = {k: [] for k in steps}
    for _ in range(args.repeats):
      for k, f in steps.items():
        t0 = time.perf_counter()
        jax.block_until_ready(f(zs, zt))
        times[k].append(time.perf_counter() - t0)
    median = {k: float(np.median(v)) for k, v in times.items()}
    row = {"case": f"{name}{kw or ''}", "shape": shape, "repeats": args.repeats,
           "s_written": median["written"], "s_traced": median["traced"],
           "traced_over_written": median["traced"] / median["written"],
           "value_rel_diff": float(abs(v_new - v_old) / abs(v_old)),
           "grad_max_abs_diff": float(jnp.max(jnp.abs(g_new - g_old))),
           "grad_max_abs": float(jnp.max(jnp.abs(g_old))),
           **{f"{k}_{m}": costs[k][m] for k in costs for m in ("flops", "bytes", "transcendentals",
                                                               "temp_bytes")},
           **where, "load_avg_1m_after": os.getloadavg()[0]}
    line = json.dumps(row)
    print(line, flush=True)
    if args.out:
      with open(args.out, "a") as f:
        f.write(line + "\n")


if __name__ == "__main__":
  main()
