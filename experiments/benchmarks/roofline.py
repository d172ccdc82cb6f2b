"""Roofline helpers shared by the benchmarks: this machine's limits, a program's cost, its hot ops.

* `machine_limits()` measures, in the calling process, the float32 matmul rate (a 2048² `jnp.dot`),
  the memory bandwidth (a 256 MiB reduction, read once) and the exp rate (`jnp.exp` over 64 MiB;
  transcendentals are the third roof of a loss over a 49k vocabulary on a CPU). Best of a few runs,
  so a neighbour's burst costs less.
* `program_cost(jitted, *args)` lowers and compiles once and returns the XLA cost analysis (flops,
  bytes accessed, transcendentals), the device memory from `memory_analysis()` and the compile time.
* `roofline(cost, limits)` is the bound: max(flops/matmul rate, bytes/bandwidth); `exp_bound` adds
  transcendentals/exp rate as the explanation when a phase sits above its matmul/memory bound.
* `op_times(fn)` profiles a call with `jax.profiler` and sums the time of each HLO op (the CPU
  runtime records one event per thunk); `hot_ops(fn, compiled_text)` names what the hottest compute.
* `machine()` names the CPU model, the cores, the load average and the git commit for each record.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import resource
import subprocess
import tempfile
import time

import jax
import jax.numpy as jnp


def best_time(fn, *args, repeats: int = 5) -> float:
  jax.block_until_ready(fn(*args))
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - t0)
  return best


def machine_limits(n: int = 2048, mib: int = 256) -> dict:
  """{"matmul_flops_per_s", "bandwidth_bytes_per_s", "exp_per_s"} measured now, in this process."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  matmul = 2 * n ** 3 / best_time(jax.jit(jnp.dot), a, a)
  x = jnp.ones((mib * 2 ** 20 // 4,), jnp.float32)
  bandwidth = x.nbytes / best_time(jax.jit(jnp.sum), x)
  y = x[: x.size // 4]
  exp_rate = y.size / best_time(jax.jit(lambda v: jnp.sum(jnp.exp(v))), y)
  return {"matmul_flops_per_s": matmul, "bandwidth_bytes_per_s": bandwidth, "exp_per_s": exp_rate,
          "matmul_n": n, "bandwidth_mib": mib}


def program_cost(jitted, *args, **kwargs) -> dict:
  """Cost and memory of one compiled program, and how long lowering + compiling took."""
  t0 = time.perf_counter()
  compiled = jitted.lower(*args, **kwargs).compile()
  compile_s = time.perf_counter() - t0
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  mem = compiled.memory_analysis()
  device_bytes = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
                  - mem.alias_size_in_bytes)
  return {"flops": float(cost.get("flops", 0.0)), "bytes": float(cost.get("bytes accessed", 0.0)),
          "transcendentals": float(cost.get("transcendentals", 0.0)), "compile_s": compile_s,
          "device_bytes": int(device_bytes), "temp_bytes": int(mem.temp_size_in_bytes),
          "compiled": compiled}


def decode_step_cost(graphdef, params, batch: int, cache_len: int) -> dict:
  """`program_cost` of one sampler decode step: a one-token KV-cache forward, the head and the
  token choice (XLA's cost analysis counts a while loop's body once, so loops are costed by
  their step)."""
  from flax import nnx

  from gkd import sampling

  settings = sampling.SamplerSettings(1)

  def step(params, tok, cache, key):
    model = nnx.merge(graphdef, params)
    h, cache = model.forward_cached(tok[:, None], cache, positions=jnp.zeros((batch, 1), jnp.int32))
    return sampling.choose(model.next_token_logits(h[:, 0]), key, settings)[0], cache

  cache = nnx.merge(graphdef, params).init_cache(batch, cache_len)
  return program_cost(jax.jit(step), params, jnp.zeros((batch,), jnp.int32), cache, jax.random.key(0))


def scaled(cost: dict, k: float) -> dict:
  return {key: cost[key] * k for key in ("flops", "bytes", "transcendentals")}


def added(*costs: dict) -> dict:
  return {key: sum(c[key] for c in costs) for key in ("flops", "bytes", "transcendentals")}


def roofline(cost: dict, limits: dict) -> dict:
  """The matmul/memory bound of a cost, and the exp-rate term that explains CPU losses."""
  compute_s = cost["flops"] / limits["matmul_flops_per_s"]
  memory_s = cost["bytes"] / limits["bandwidth_bytes_per_s"]
  exp_s = cost["transcendentals"] / limits["exp_per_s"]
  return {"bound_s": max(compute_s, memory_s), "compute_s": compute_s, "memory_s": memory_s,
          "exp_s": exp_s, "bound_with_exp_s": max(compute_s, memory_s) + exp_s}


def _describe(compiled_text: str) -> dict[str, str]:
  """{op name: what it computes}: the ops of its fused computation and its JAX source op."""
  bodies, current, calls, source = {}, None, {}, {}
  for line in compiled_text.splitlines():
    head = re.match(r"^(?:ENTRY )?%([\w.\-]+) ", line)
    if head and line.rstrip().endswith("{"):
      current = head.group(1)
      bodies[current] = []
      continue
    op = re.match(r"^\s*(?:ROOT )?%([\w.\-]+) = (?:\([^)]*\)|\S+) ([a-z][a-z\-]*)\(", line)
    if not op:
      continue
    if current:
      bodies[current].append(op.group(2))
    callee = re.search(r"calls=%([\w.\-]+)", line)
    if callee:
      calls[op.group(1)] = callee.group(1)
    name = re.search(r'op_name="([^"]+)"', line)
    source[op.group(1)] = name.group(1).split("/", 1)[-1][-80:] if name else ""
  boring = {"parameter", "constant", "broadcast", "bitcast", "reshape", "get-tuple-element", "tuple"}
  out = {}
  for op, src in source.items():
    kinds = collections.Counter(k for k in bodies.get(calls.get(op, ""), ()) if k not in boring)
    out[op] = (",".join(k for k, _ in kinds.most_common(5)) + " " + src).strip()
  return out


def _kind(computes: str) -> str:
  if "dot" in computes.split(" ")[0]:
    return "matmul"
  if any(k in computes for k in ("exponential", "log", "tanh", "logistic")):
    return "transcendental elementwise/reduce"
  if computes.startswith("copy") or "transpose" in computes or "dynamic-update-slice" in computes:
    return "copy/layout"
  return "other elementwise/reduce"


def op_times(fn) -> tuple[collections.Counter, collections.Counter]:
  """({HLO op name: seconds}, {HLO op name: executions}) over one profiled call of `fn()` (the
  CPU runtime records one event per thunk run, loop bodies once per trip; ops that run
  concurrently each count their own time)."""
  with tempfile.TemporaryDirectory() as d:
    jax.profiler.start_trace(d)
    jax.block_until_ready(fn())
    jax.profiler.stop_trace()
    traces = glob.glob(os.path.join(d, "**", "*.trace.json.gz"), recursive=True)
    events = json.load(gzip.open(sorted(traces)[-1]))["traceEvents"]
  per_op, calls = collections.Counter(), collections.Counter()
  for e in events:
    args = e.get("args") or {}
    if e.get("ph") == "X" and "hlo_op" in args:
      per_op[args["hlo_op"]] += e.get("dur", 0.0) * 1e-6
      calls[args["hlo_op"]] += 1
  return per_op, calls


def hot_ops(fn, compiled_text: str, top: int = 5) -> dict:
  """Profiles one call of `fn()`: {"top": the `top` HLO ops by total time with their share and
  what they compute, "by_kind": the time share of matmuls, transcendental elementwise work,
  copies and other elementwise work}."""
  per_op, _ = op_times(fn)
  total = sum(per_op.values()) or 1.0
  what = _describe(compiled_text)
  by_kind = collections.Counter()
  for op, s in per_op.items():
    by_kind[_kind(what.get(op, ""))] += s / total
  return {"top": [{"op": op, "s": round(s, 4), "share": round(s / total, 3),
                   "computes": what.get(op, "")} for op, s in per_op.most_common(top)],
          "by_kind": {k: round(v, 3) for k, v in by_kind.most_common()}}


def peak_rss_bytes() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def machine() -> dict:
  """CPU model, core count, load average and the git commit, for every raw-output row."""
  model = "unknown"
  try:
    with open("/proc/cpuinfo") as f:
      model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  def git(*cmd):
    return subprocess.run(["git", *cmd], cwd=root, capture_output=True, text=True).stdout.strip()
  # glibc's malloc tunables (glibc.malloc.hugetlb=1: transparent huge pages) double the measured
  # bandwidth on the VM these figures come from and move the programs' times: a row says which
  # setting it ran under.
  return {"cpu_model": model, "cpu_count": os.cpu_count(), "load_avg_1m": os.getloadavg()[0],
          "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
          "commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--", "gkd")),
          "device": jax.devices()[0].device_kind, "jax": jax.__version__}
