"""Peak memory of the plain vs the chunked distillation loss (forward + backward, jitted).

  python experiments/benchmarks/loss_memory.py            # SmolLM2-135M head shapes, ~10 s on CPU
  python experiments/benchmarks/loss_memory.py --time     # also time one step of each (~1.5 min)
  python experiments/benchmarks/loss_memory.py --vocab 128256 --chunk 64

Memory comes from XLA's buffer assignment (`compiled.memory_analysis()`), so nothing
of size [B, T, V] is ever allocated to measure it: `temp` is the scratch the program
needs beyond its arguments and outputs, and `peak ≈ args + outputs + temp`. Both
variants compute the loss and its gradients w.r.t. the student hidden states and
head kernel; the plain one starts from the same hidden states and does the head
matmuls itself, so the arguments are identical.

Measured output (with the CPU, cores and commit) is kept in
experiments/results/bench_loss_memory.txt: plain peak 6,674 MiB (17.4 [B,T,V] tensors),
chunked 1,956 MiB (5.1) at chunk 128. The chunked path does each chunk's backward pass while
the chunk's logits are live (no rematerialization), so its temporaries grow with `--chunk`
(B·chunk·V floats times about 16): train with a small chunk (16) at V ≈ 49k.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
import time

import jax
import jax.numpy as jnp

# Import gkd from this checkout, not from whatever copy is installed.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
from gkd import divergences, objectives  # noqa: E402


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--seq", type=int, default=512)
  parser.add_argument("--dim", type=int, default=576)  # SmolLM2-135M width (student = teacher here)
  parser.add_argument("--vocab", type=int, default=49152)
  parser.add_argument("--chunk", type=int, default=128)
  parser.add_argument("--divergence", default="generalized_jsd")
  parser.add_argument("--time", action="store_true", help="also run each step once (slow on CPU)")
  args = parser.parse_args()
  b, t, d, v = args.batch, args.seq, args.dim, args.vocab

  f32 = jax.ShapeDtypeStruct
  shapes = (
    f32((b, t, d), jnp.float32),  # student hidden
    f32((d, v), jnp.float32),  # student kernel
    f32((b, t, d), jnp.float32),  # teacher hidden
    f32((d, v), jnp.float32),  # teacher kernel
    f32((b, t), jnp.int32),  # labels
    f32((b, t), jnp.bool_),  # loss mask
  )
  objective = objectives.Objective(divergences.get(args.divergence), temperature=1.0, alpha=0.5)

  def plain(hs, ws, ht, wt, labels, mask):
    return objectives.distillation_loss(hs @ ws, ht @ wt, labels, mask, objective)[0]

  def chunked(hs, ws, ht, wt, labels, mask):
    return objectives.chunked_distillation_loss(
      hs, ws, ht, wt, labels, mask, dataclasses.replace(objective, chunk_size=args.chunk)
    )[0]

  logits_mb = b * t * v * 4 / 2**20
  print(f"B={b} T={t} D={d} V={v} chunk={args.chunk} divergence={args.divergence} "
        f"backend={jax.default_backend()}")
  print(f"one float32 [B,T,V] tensor = {logits_mb:,.0f} MiB\n")
  print(f"{'variant':<10}{'args MiB':>10}{'out MiB':>10}{'temp MiB':>10}{'peak MiB':>10}"
        f"{'peak/[BTV]':>12}{'compile s':>11}" + (f"{'step s':>9}" if args.time else ""))
  peaks = {}
  for name, fn in (("plain", plain), ("chunked", chunked)):
    step = jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))
    start = time.perf_counter()
    compiled = step.lower(*shapes).compile()
    compile_s = time.perf_counter() - start
    mem = compiled.memory_analysis()
    mib = lambda n: n / 2**20
    peak = mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
    peak -= mem.alias_size_in_bytes
    peaks[name] = peak
    row = (f"{name:<10}{mib(mem.argument_size_in_bytes):>10,.0f}"
           f"{mib(mem.output_size_in_bytes):>10,.0f}{mib(mem.temp_size_in_bytes):>10,.0f}"
           f"{mib(peak):>10,.0f}"
           f"{mib(peak) / logits_mb:>12.2f}{compile_s:>11.1f}")
    if args.time:
      keys = jax.random.split(jax.random.key(0), 4)
      inputs = (
        jax.random.normal(keys[0], (b, t, d)),
        jax.random.normal(keys[1], (d, v)) * d**-0.5,
        jax.random.normal(keys[2], (b, t, d)),
        jax.random.normal(keys[3], (d, v)) * d**-0.5,
        jnp.zeros((b, t), jnp.int32),
        jnp.ones((b, t), bool),
      )
      jax.block_until_ready(compiled(*inputs))  # warm-up
      start = time.perf_counter()
      jax.block_until_ready(compiled(*inputs))
      row += f"{time.perf_counter() - start:>9.2f}"
    print(row)
  print(f"\nchunked peak / plain peak = {peaks['chunked'] / peaks['plain']:.3f} "
        f"({peaks['plain'] / peaks['chunked']:.1f}x less memory)")


if __name__ == "__main__":
  main()
