"""Where each phase of the GKD step spends its time on this CPU, kernel by kernel, against torch.

  python experiments/benchmarks/cpu_profile.py [--out experiments/results/cpu_profile.jsonl]
      [--batch 8] [--new_tokens 64] [--student 4x256] [--top 12]

One command for a new CPU kind (the question it answers: why gkd's lead over TRL differs from
one CPU to another). On gkd_step.py's workload it records, into one JSON line of `--out`:

* the CPU: lscpu's model, topology (threads per core: two vCPUs that are one core's hyper-threads
  share its FMA units), flags that pick kernels (AVX-512, AVX512-BF16, AMX, VNNI), caches; jax,
  jaxlib, XLA_FLAGS; torch's build configuration and the vector ISA it dispatches to;
* per phase (sampler call, teacher scoring, train step): the median time of 3 calls, and from a
  jax.profiler trace the time of every HLO op grouped by the kernel that runs it (a YNNPACK,
  XNNPACK or oneDNN library fusion, XLA's own loop/reduction/output emitters, a plain dot
  thunk, copies), with the hottest ops and what they compute;
* the matrix products behind the hottest ops, each timed three ways: inside the program (its
  op's time per execution), alone under XLA (a jitted dot_general of the same shapes) and alone
  under torch (torch.einsum in .venv-trl, torch's oneDNN/MKL paths) in float32, and in bf16 too
  where the CPU has AVX512-BF16 or AMX;
* the machine's roofs as gkd_step.py measures them, and a 2048^2 matmul in both libraries.

Needs .venv-trl for the torch half (bash experiments/benchmarks/setup_trl.sh); without it the
torch columns are empty and the row says why. Cost on a quiet 2-core CPU: about 3 minutes.
"""

import collections
import json
import os
import re
import statistics
import string
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, REPO)
sys.path.insert(0, HERE)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import gkd_step  # noqa: E402
import roofline as R  # noqa: E402
from gkd import sampling  # noqa: E402

FLAGS_OF_INTEREST = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "avx512_vnni",
                     "avx512_fp16", "avx_vnni", "amx_bf16", "amx_tile", "amx_int8", "amx_fp16")
DTYPES = {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}
LIBRARY_FUSIONS = {"__ynn_fusion": "YNNPACK", "__xnn_fusion": "XNNPACK", "__onednn_fusion": "oneDNN"}


def cpu_facts() -> dict:
  """lscpu's description of the CPU, with the flags that decide kernel choices."""
  out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
  fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
  fields = {k.strip(): v.strip() for k, v in fields.items()}
  flags = set(fields.pop("Flags", "").split())
  keep = ("Model name", "Vendor ID", "CPU family", "Model", "Thread(s) per core", "Core(s) per socket",
          "Socket(s)", "CPU(s)", "CPU max MHz", "CPU MHz", "BogoMIPS", "L1d cache", "L2 cache",
          "L3 cache", "Hypervisor vendor")
  return {**{k: fields[k] for k in keep if k in fields},
          "flags": {f: f in flags for f in FLAGS_OF_INTEREST}}


# ------------------------------------------------------------------------------------------ HLO


SHAPE = re.compile(r"^([a-z]+\d*)\[([\d,]*)\]")
INSTR = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (.+?) ([a-z][a-z\-]*)\((.*)$")


def parse_hlo(text: str) -> dict:
  """{op name: {"opcode", "shape", "computation", "calls", "fusion_kind", "library", "target",
  "operands", "attrs"}} for every instruction of an optimized HLO module."""
  ops, computation = {}, None
  for line in text.splitlines():
    head = re.match(r"^(?:ENTRY )?%([\w.\-]+) ", line)
    if head and line.rstrip().endswith("{"):
      computation = head.group(1)
      continue
    m = INSTR.match(line)
    if not m:
      continue
    name, shape, opcode, rest = m.groups()
    calls = re.search(r"calls=%([\w.\-]+)", rest)
    kind = re.search(r"kind=(k\w+)", rest)
    library = re.search(r'"fusion_config":\{"kind":"(__\w+)"', rest)
    target = re.search(r'custom_call_target="([^"]+)"', rest)
    operands = re.findall(r"%([\w.\-]+)", rest.split(")", 1)[0])
    ops[name] = {"opcode": opcode, "shape": shape, "computation": computation,
                 "calls": calls.group(1) if calls else None, "fusion_kind": kind.group(1) if kind else None,
                 "library": library.group(1) if library else None,
                 "target": target.group(1) if target else None, "operands": operands, "attrs": rest}
  return ops


def dims(attrs: str, key: str) -> list[int]:
  m = re.search(key + r"=\{([\d,]*)\}", attrs)
  return [int(x) for x in m.group(1).split(",") if x] if m else []


def dot_spec(op: dict, ops: dict) -> dict | None:
  """A dot as an einsum over its operands' shapes (dot_general's output order: batch, lhs free,
  rhs free), with its dtype and FLOPs."""
  shapes = [SHAPE.match(ops[o]["shape"]) for o in op["operands"][:2] if o in ops]
  if len(shapes) != 2 or not all(shapes):
    return None
  (lt, ls), (rt, rs) = [(m.group(1), [int(x) for x in m.group(2).split(",") if x]) for m in shapes]
  lb, lc = dims(op["attrs"], "lhs_batch_dims"), dims(op["attrs"], "lhs_contracting_dims")
  rb, rc = dims(op["attrs"], "rhs_batch_dims"), dims(op["attrs"], "rhs_contracting_dims")
  letters = iter(string.ascii_lowercase)
  lhs, rhs = [None] * len(ls), [None] * len(rs)
  for i, j in zip(lb + lc, rb + rc):
    lhs[i] = rhs[j] = next(letters)
  lhs = [x or next(letters) for x in lhs]
  rhs = [x or next(letters) for x in rhs]
  out = [lhs[i] for i in lb] + [x for i, x in enumerate(lhs) if i not in lb + lc] + \
      [x for i, x in enumerate(rhs) if i not in rb + rc]
  sizes = dict(zip(lhs, ls)) | dict(zip(rhs, rs))
  flops = 2 * int(np.prod([sizes[x] for x in set(lhs) | set(rhs)]))
  return {"einsum": f"{''.join(lhs)},{''.join(rhs)}->{''.join(out)}", "lhs": ls, "rhs": rs,
          "dtype": DTYPES.get(lt, lt), "flops": flops}


def kernel_of(op: dict, ops: dict) -> str:
  """Which kernel family runs an op: a library fusion, one of XLA's emitters, a dot thunk, ..."""
  body = [o for o in ops.values() if o["computation"] == op["calls"]] if op["calls"] else []
  has_dot = any(o["opcode"] == "dot" for o in body) or op["opcode"] == "dot"
  if op["library"]:
    return f"{LIBRARY_FUSIONS.get(op['library'], op['library'])} {'dot' if has_dot else 'eltwise/reduce'}"
  if op["opcode"] == "fusion":
    return f"XLA {op['fusion_kind']}{' with dot' if has_dot else ''}"
  if op["opcode"] == "dot":
    return "XLA dot thunk"
  if op["opcode"] == "custom-call":
    return f"custom-call {op['target']}"
  if op["opcode"] in ("copy", "transpose"):
    return "copy/transpose"
  return op["opcode"]


def program_profile(fn, compiled_text: str, top: int) -> dict:
  """Median time of 3 calls of `fn`, and its profiled op times grouped by kernel family."""
  jax.block_until_ready(fn())
  seconds = []
  for _ in range(3):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    seconds.append(time.perf_counter() - t0)
  per_op, calls = R.op_times(fn)
  ops = parse_hlo(compiled_text)
  by_kernel = collections.Counter()
  for name, s in per_op.items():
    by_kernel[kernel_of(ops[name], ops) if name in ops else "unknown"] += s
  static = collections.Counter(kernel_of(o, ops) for o in ops.values()
                               if o["computation"] and not o["computation"].startswith("fused"))
  hot = []
  for name, s in per_op.most_common(top):
    op = ops.get(name, {"opcode": "?", "calls": None})
    body = [o for o in ops.values() if o["computation"] == op.get("calls")] if op.get("calls") else [op]
    dots = [d for d in (dot_spec(o, ops) for o in body if o["opcode"] == "dot") if d]
    hot.append({"op": name, "kernel": kernel_of(op, ops) if name in ops else "unknown",
                "s": round(s, 5), "calls": calls[name], "s_per_call": s / max(calls[name], 1),
                "computes": ",".join(sorted({o["opcode"] for o in body} - {"parameter", "constant"})),
                "dots": dots})
  total = sum(per_op.values()) or 1.0
  return {"s": statistics.median(seconds), "op_seconds_total": total,
          "by_kernel_s": {k: round(v, 5) for k, v in by_kernel.most_common()},
          "by_kernel_share": {k: round(v / total, 3) for k, v in by_kernel.most_common()},
          "kernels_in_program": dict(static.most_common()), "hot_ops": hot}


# ----------------------------------------------------------------------------------- matmuls


def xla_matmul_s(m: dict, repeats: int = 5) -> float:
  key_a, key_b = jax.random.split(jax.random.key(0))
  a = jax.random.normal(key_a, m["lhs"], jnp.float32).astype(m["dtype"])
  b = jax.random.normal(key_b, m["rhs"], jnp.float32).astype(m["dtype"])
  return R.best_time(jax.jit(lambda x, y: jnp.einsum(m["einsum"], x, y)), a, b, repeats=repeats)


def torch_matmuls_s(matmuls: list[dict]) -> dict:
  python = os.path.join(REPO, ".venv-trl", "bin", "python")
  if not os.path.exists(python):
    return {"error": ".venv-trl missing: bash experiments/benchmarks/setup_trl.sh"}
  proc = subprocess.run([python, os.path.join(HERE, "torch_matmuls.py")], capture_output=True,
                        text=True, input=json.dumps({"matmuls": matmuls, "repeats": 5}))
  if proc.returncode:
    return {"error": proc.stderr[-1500:]}
  return json.loads(proc.stdout)


def compare_matmuls(phases: dict, bf16: bool) -> dict:
  """The hot ops' products (deduplicated), timed in the program, alone in XLA, alone in torch."""
  seen = {}
  for phase, prof in phases.items():
    for op in prof["hot_ops"]:
      for d in op["dots"]:
        key = (d["einsum"], tuple(d["lhs"]), tuple(d["rhs"]), d["dtype"])
        if key not in seen:
          seen[key] = {**d, "phase": phase, "op": op["op"], "kernel": op["kernel"],
                       "in_program_s_per_call": op["s_per_call"] if len(op["dots"]) == 1 else None}
  square = {"einsum": "ij,jk->ik", "lhs": [2048, 2048], "rhs": [2048, 2048], "dtype": "float32",
            "flops": 2 * 2048 ** 3, "phase": "reference", "op": "2048^2", "kernel": "",
            "in_program_s_per_call": None}
  rows = [square, *seen.values()]
  if bf16:
    rows += [{**r, "dtype": "bfloat16", "in_program_s_per_call": None} for r in list(rows)]
  for r in rows:
    r["xla_s"] = xla_matmul_s(r)
  request = [{k: r[k] for k in ("einsum", "lhs", "rhs", "dtype")} for r in rows]
  torch_out = torch_matmuls_s(request)
  for i, r in enumerate(rows):
    r["torch_s"] = torch_out["seconds"][i] if "seconds" in torch_out else None
    for lib in ("xla", "torch"):
      r[f"{lib}_gflops"] = r["flops"] / r[f"{lib}_s"] / 1e9 if r[f"{lib}_s"] else None
  torch_info = {k: v for k, v in torch_out.items() if k != "seconds"}
  return {"matmuls": rows, "torch": torch_info}


# --------------------------------------------------------------------------------------- main


def main():
  parser = gkd_step.arg_parser()
  parser.description = __doc__.splitlines()[0]
  parser.set_defaults(out=os.path.join(REPO, "experiments", "results", "cpu_profile.jsonl"))
  parser.add_argument("--top", type=int, default=12, help="hot ops listed (and matmuls compared) per phase")
  args = parser.parse_args()
  t_start, host, load_before = time.time(), R.machine(), os.getloadavg()[0]
  cpu = cpu_facts()
  limits = R.machine_limits()
  w = gkd_step.build(args)
  params = w.state.params["student"]
  prompts = (jnp.asarray(w.prompt_tokens), jnp.asarray(w.prompt_mask))
  settings = sampling.SamplerSettings(args.new_tokens, **w.sampler.settings)

  def sample():
    return sampling._sample_jit(w.sampler.graphdef, settings, params, *prompts, jax.random.key(0))

  out = sample()
  batch = jax.tree.map(jnp.asarray, sampling.trim_to_bucket(
      {"prompt_tokens": w.prompt_tokens, "prompt_mask": w.prompt_mask, "response_tokens": out.tokens,
       "response_mask": out.mask}, gkd_step.BUCKETS))
  step_compiled = w.train_step.lower(w.state, batch, w.teacher_params).compile()
  holder = {"state": w.state}

  def step():
    holder["state"], metrics = step_compiled(holder["state"], batch, w.teacher_params)
    return metrics

  programs = {
      "sampling": (sample, sampling._sample_jit.lower(w.sampler.graphdef, settings, params, *prompts,
                                                      jax.random.key(0)).compile().as_text()),
      "teacher_scoring": (lambda: w.teacher_scores(w.teacher_params, batch),
                          w.teacher_scores.lower(w.teacher_params, batch).compile().as_text()),
      "train_step": (step, step_compiled.as_text()),
  }
  phases = {name: program_profile(fn, text, args.top) for name, (fn, text) in programs.items()}
  phases["update"] = {"s": phases["train_step"]["s"] - phases["teacher_scoring"]["s"]}
  bf16 = cpu["flags"].get("avx512_bf16") or cpu["flags"].get("amx_bf16")
  matmuls = compare_matmuls({k: v for k, v in phases.items() if "hot_ops" in v}, bool(bf16))
  record = {"impl": "gkd-jax", "label": args.label, **host, "load_avg_1m_before": load_before,
            "cpu": cpu, "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else jax.__version__,
            "batch": args.batch, "new_tokens": args.new_tokens, "student": args.student,
            "dtype": args.dtype, "chunk": args.chunk, "limits": limits, "phases": phases, **matmuls,
            "wall_s": time.time() - t_start, "load_avg_1m_after": os.getloadavg()[0]}
  print_report(record)
  with open(args.out, "a") as f:
    f.write(json.dumps(record) + "\n")


def print_report(r):
  err = lambda *a: print(*a, file=sys.stderr)  # noqa: E731
  c = r["cpu"]
  err(f"{c.get('Model name')}: {c.get('CPU(s)')} CPUs, {c.get('Thread(s) per core')} thread(s) per "
      f"core; " + " ".join(f for f, on in c["flags"].items() if on))
  err(f"load {r['load_avg_1m_before']:.1f} -> {r['load_avg_1m_after']:.1f}; torch "
      f"{r['torch'].get('torch', '?')} dispatches {r['torch'].get('capability', '?')}")
  for name, p in r["phases"].items():
    err(f"\n{name}: {p['s']:.3f} s")
    for k, s in p.get("by_kernel_s", {}).items():
      err(f"  {k:<34}{s:>8.3f} s  {p['by_kernel_share'][k]:>5.0%}")
    for op in p.get("hot_ops", [])[:5]:
      err(f"  hot {op['op']:<28} {op['kernel']:<24} {op['s']:.3f} s / {op['calls']} calls  {op['computes'][:40]}")
  err(f"\n{'product':<34}{'dtype':<10}{'phase':<16}{'in prog ms':>11}{'XLA GF/s':>10}{'torch GF/s':>11}")
  for m in r["matmuls"]:
    shape = f"{m['einsum']} {m['lhs']}x{m['rhs']}"
    prog = f"{m['in_program_s_per_call'] * 1e3:.2f}" if m["in_program_s_per_call"] else "-"
    tg = f"{m['torch_gflops']:.0f}" if m["torch_gflops"] else "-"
    err(f"{shape[:33]:<34}{m['dtype']:<10}{m['phase']:<16}{prog:>11}{m['xla_gflops']:>10.0f}{tg:>11}")


if __name__ == "__main__":
  main()
