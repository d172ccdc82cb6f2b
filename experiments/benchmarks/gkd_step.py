"""Throughput of the GKD step with the real SmolLM2 teacher, against this machine's roofline.

  python experiments/benchmarks/gkd_step.py [--steps 5] [--batch 8] [--new_tokens 64]
      [--lmbda 1.0] [--chunk 16] [--student 4x256] [--dtype float32]
      [--out experiments/results/bench_side_by_side.jsonl]

Workload (the same as experiments/benchmarks/trl_gkd_reference.py, for the side-by-side ratio):
teacher SmolLM2-135M-Instruct (GGUF, dequantized to float32), student a random 4-layer d=256
Llama sharing its tokenizer (`--student` names another from students.py), `--batch` chat-formatted prompts from prompts.jsonl, generalized JSD
β=0.5, AdamW with clipping at 1.0. Each step draws its source with probability λ (`--lmbda`):
the student's own samples (64 new tokens at T=1) or the dataset's reference answers
(supervised KD). Sampled responses are trimmed to their longest real length rounded up to a
bucket (`sampling.trim_to_bucket`), so the teacher and the update skip all-padding columns.
`--dtype bfloat16` is a workload of its own (never compared with float32 rows): both models
compute in bf16 (the teacher stored in bf16, the student's master weights and AdamW state in
float32), for CPUs whose matrix units take bf16 (AVX512-BF16, AMX).

Prints a table to stderr and appends one JSON line to `--out` holding, for each phase
(sampling, teacher scoring, student update): the median time over the timed steps, the FLOPs,
bytes and transcendentals from XLA's cost analysis of its compiled program, the roofline bound
max(FLOPs / matmul rate, bytes / bandwidth) with the matmul rate and the bandwidth measured in
this process (`roofline.machine_limits`), the time's multiple of that bound, the compile time and
the device memory (`memory_analysis()`). A phase above 1.5x its bound also gets its hottest XLA
ops from a `jax.profiler` trace, which say why. "update" is the train step minus the teacher
scoring it contains (the step runs the teacher forward itself). Cost: 1-3 minutes on 2 cores.
"""

import argparse
import dataclasses
import functools
import json
import os
import statistics
import sys
import time
import types

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

import roofline as R  # noqa: E402
from students import ROPE_THETA, STUDENTS  # noqa: E402
from gkd.models import gguf, llama  # noqa: E402
from gkd import divergences, sampling, scoring, teachers  # noqa: E402
from gkd.objectives import Objective  # noqa: E402
from gkd.train import step as step_lib  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
BUCKETS = (16, 32, 64, 128, 256, 512)  # response widths the teacher and the update compile for


def read_prompts(batch: int):
  with open(os.path.join(HERE, "prompts.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  if batch > len(rows):
    sys.exit(f"--batch {batch} exceeds the {len(rows)} prompts in prompts.jsonl")
  return rows[:batch]


def left_pad(rows, pad_id):
  width = max(map(len, rows))
  tokens = np.full((len(rows), width), pad_id, np.int32)
  mask = np.zeros((len(rows), width), bool)
  for i, row in enumerate(rows):
    tokens[i, width - len(row):], mask[i, width - len(row):] = row, True
  return tokens, mask


def dataset_responses(rows, tokenizer):
  """The reference answers plus EOS, right-padded: the λ=0 (supervised KD) responses."""
  ids = [tokenizer.encode(r["messages"][-1]["content"]) + [tokenizer.eos_id] for r in rows]
  width = max(map(len, ids))
  tokens = np.full((len(ids), width), tokenizer.pad_id, np.int32)
  mask = np.zeros((len(ids), width), bool)
  for i, row in enumerate(ids):
    tokens[i, :len(row)], mask[i, :len(row)] = row, True
  return tokens, mask


def timed(fn, *args):
  t0 = time.perf_counter()
  out = jax.block_until_ready(fn(*args))
  return out, time.perf_counter() - t0


def phase_record(name, seconds, cost, limits):
  bound = R.roofline(cost, limits)
  rec = {"phase": name, "s": seconds, "flops": cost["flops"], "bytes": cost["bytes"],
         "transcendentals": cost["transcendentals"], "bound_s": bound["bound_s"],
         "x_bound": seconds / bound["bound_s"] if bound["bound_s"] else None,
         "compute_s": bound["compute_s"], "memory_s": bound["memory_s"], "exp_s": bound["exp_s"],
         "x_bound_with_exp": seconds / bound["bound_with_exp_s"] if bound["bound_with_exp_s"] else None}
  return rec


def build(args) -> types.SimpleNamespace:
  """The workload's models, batches and jitted programs (also used by cpu_profile.py)."""
  teacher, tokenizer = gguf.load_gguf(dtype=args.dtype, param_dtype=args.dtype)
  student = llama.Llama(llama.LlamaConfig(
      vocab_size=teacher.config.vocab_size, max_seq_len=2048, rope_theta=ROPE_THETA,
      dtype=args.dtype, **STUDENTS[args.student]), rngs=nnx.Rngs(0))
  rss_after_load = R.peak_rss_bytes()
  rows = read_prompts(args.batch)
  prompt_tokens, prompt_mask = left_pad([r["prompt_ids"] for r in rows], tokenizer.pad_id)
  data_tokens, data_mask = dataset_responses(rows, tokenizer)
  sg, ss = nnx.split(student)
  tg, ts = nnx.split(teacher)
  teacher_params = ts.to_pure_dict()
  del teacher, student, ts
  teacher_proto = teachers.Live(tg)
  objective = Objective(divergences.get("generalized_jsd", beta=0.5), chunk_size=args.chunk)
  optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-4))  # as TRL's defaults
  params = {"student": ss.to_pure_dict()}
  state = step_lib.TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))
  train_step = jax.jit(functools.partial(step_lib.train_step, student_graph=sg, teacher=teacher_proto,
                                         objective=objective, optimizer=optimizer), donate_argnums=0)
  teacher_scores = jax.jit(lambda p, b: scoring.token_scores(nnx.merge(tg, p), b))
  sampler = sampling.Sampler(sg, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id, temperature=1.0)
  return types.SimpleNamespace(
      sg=sg, tg=tg, teacher=teacher_proto, teacher_params=teacher_params, objective=objective,
      optimizer=optimizer, state=state, train_step=train_step, teacher_scores=teacher_scores,
      sampler=sampler, prompt_tokens=prompt_tokens, prompt_mask=prompt_mask,
      data_tokens=data_tokens, data_mask=data_mask, tokenizer=tokenizer,
      rss_after_load=rss_after_load)


def arg_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser()
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--new_tokens", type=int, default=64)
  parser.add_argument("--lmbda", type=float, default=1.0, help="probability of an on-policy step")
  parser.add_argument("--chunk", type=int, default=16, help="objective.chunk_size (0: plain loss)")
  parser.add_argument("--out", default="", help="append the JSON record to this file")
  parser.add_argument("--student", default="4x256", choices=sorted(STUDENTS))
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                      help="compute dtype of both models (bfloat16: a workload of its own)")
  parser.add_argument("--label", default="", help="free text stored with the record")
  return parser


def main():
  args = arg_parser().parse_args()
  host = R.machine()
  limits = R.machine_limits()
  w = build(args)
  rss = {"after_load": w.rss_after_load}
  prompt_tokens, prompt_mask, data_tokens, data_mask = (
      w.prompt_tokens, w.prompt_mask, w.data_tokens, w.data_mask)
  sg, teacher_params, objective, optimizer = w.sg, w.teacher_params, w.objective, w.optimizer
  teacher_proto, state, train_step, teacher_scores, sampler = (
      w.teacher, w.state, w.train_step, w.teacher_scores, w.sampler)

  coin = np.random.default_rng(0)
  sources = ["student" if coin.random() < args.lmbda else "dataset" for _ in range(args.steps)]
  sources = [sources[0]] + sources  # step 0 is a warm-up of the first source
  for warm in {"student", "dataset"} & set(sources[1:]) - {sources[0]}:
    sources.insert(1, warm)  # every source's programs compile before the timed steps
  n_warm = len(sources) - args.steps

  per_step, batches, compile_s = [], {}, {}
  for i, source in enumerate(sources):
    t_sample, decode_steps = 0.0, 0
    if source == "student":
      out, t_sample = timed(lambda: sampler(state.params["student"], prompt_tokens, prompt_mask,
                                            rng=jax.random.key(i), max_new_tokens=args.new_tokens))
      decode_steps = int(np.max(np.sum(np.asarray(out.mask), axis=1)))
      batch = sampling.trim_to_bucket({"prompt_tokens": prompt_tokens, "prompt_mask": prompt_mask,
                                       "response_tokens": out.tokens, "response_mask": out.mask},
                                      BUCKETS)
    else:
      batch = {"prompt_tokens": prompt_tokens, "prompt_mask": prompt_mask,
               "response_tokens": data_tokens, "response_mask": data_mask}
    batch = jax.tree.map(jnp.asarray, batch)
    _, t_teacher = timed(teacher_scores, teacher_params, batch)
    (state, metrics), t_step = timed(train_step, state, batch, teacher_params)
    rss[f"after_step{i}"] = R.peak_rss_bytes()
    if i < n_warm:  # the first call of each program: compile + run
      compile_s[source] = {"sampler": t_sample, "teacher": t_teacher, "train_step": t_step}
      batches[source] = (batch, decode_steps)
      continue
    per_step.append({"source": source, "sample_s": t_sample, "teacher_s": t_teacher,
                     "step_s": t_step, "response_width": int(batch["response_tokens"].shape[1]),
                     "response_tokens": int(np.sum(batch["response_mask"])), "decode_steps": decode_steps,
                     "loss": float(metrics["loss"])})

  rss_steps = R.peak_rss_bytes()  # before the cost analyses and profiles below add their own
  # Costs and bounds, per source, from the compiled programs the timed steps ran.
  phases, compile_report = [], {}
  for source, (batch, decode_steps) in sorted(batches.items()):
    mine = [r for r in per_step if r["source"] == source]
    if not mine:
      continue
    med = {k: statistics.median(r[k] for r in mine) for k in ("sample_s", "teacher_s", "step_s")}
    c_teacher = R.program_cost(teacher_scores, teacher_params, batch)
    c_step = R.program_cost(train_step, state, batch, teacher_params)
    c_update = {k: c_step[k] - c_teacher[k] for k in ("flops", "bytes", "transcendentals")}
    if objective.chunk_size:
      # XLA counts a scan's body once: cost the same step with the whole response in one chunk.
      one_chunk = dataclasses.replace(objective, chunk_size=int(batch["response_tokens"].shape[1]))
      c_one = R.program_cost(jax.jit(functools.partial(
          step_lib.train_step, student_graph=sg, teacher=teacher_proto, objective=one_chunk,
          optimizer=optimizer)), state, batch, teacher_params)
      c_update = {k: c_one[k] - c_teacher[k] for k in ("flops", "bytes", "transcendentals")}
    # Compile time: a program's first call minus its median steady call.
    compile_report[source] = {
        "teacher_s": compile_s[source]["teacher"] - med["teacher_s"],
        "train_step_s": compile_s[source]["train_step"] - med["step_s"]}
    device = {"teacher_bytes": c_teacher["device_bytes"], "train_step_bytes": c_step["device_bytes"]}
    if source == "student":
      c_sample = R.program_cost(sampling._sample_jit, sampler.graphdef,
                                sampling.SamplerSettings(args.new_tokens, **sampler.settings),
                                state.params["student"], jnp.asarray(prompt_tokens),
                                jnp.asarray(prompt_mask), jax.random.key(0))
      c_decode = R.decode_step_cost(sg, state.params["student"], args.batch,
                                    prompt_tokens.shape[1] + args.new_tokens)
      # XLA counts a while loop's body once: add the decode steps the loop really ran.
      cost = R.added(c_sample, R.scaled(c_decode, max(decode_steps - 1, 0)))
      rec = phase_record("sampling", med["sample_s"], cost, limits)
      if rec["x_bound"] > 1.5:
        rec["hot_ops"] = R.hot_ops(lambda: sampler(state.params["student"], prompt_tokens,
                                                   prompt_mask, rng=jax.random.key(0),
                                                   max_new_tokens=args.new_tokens),
                                   c_sample["compiled"].as_text())
      compile_report[source]["sampler_s"] = compile_s[source]["sampler"] - med["sample_s"]
      device["sampler_bytes"] = c_sample["device_bytes"]
      phases.append({"source": source, **rec})
    rec = phase_record("teacher_scoring", med["teacher_s"], c_teacher, limits)
    if rec["x_bound"] > 1.5:
      rec["hot_ops"] = R.hot_ops(lambda: teacher_scores(teacher_params, batch),
                                 c_teacher["compiled"].as_text())
    phases.append({"source": source, **rec})
    rec = phase_record("update", med["step_s"] - med["teacher_s"], c_update, limits)
    if rec["x_bound"] > 1.5:
      compiled = c_step["compiled"]
      holder = {"state": state}

      def one_step():
        holder["state"], m = compiled(holder["state"], batch, teacher_params)
        return m
      rec["hot_ops"] = R.hot_ops(one_step, compiled.as_text())
      state = holder["state"]
    phases.append({"source": source, **rec, **device})

  seconds = [r["sample_s"] + r["step_s"] for r in per_step]
  record = {
      "impl": "gkd-jax", "label": args.label, **host, "batch": args.batch,
      "new_tokens": args.new_tokens, "lmbda": args.lmbda, "chunk": args.chunk,
      "student": args.student, "dtype": args.dtype,
      "seconds_per_step": statistics.median(seconds), "step_seconds": [round(s, 3) for s in seconds],
      "generated_tokens_per_step": statistics.median(
          [r["response_tokens"] for r in per_step if r["source"] == "student"] or [0]),
      "sources": [r["source"] for r in per_step], "limits": limits, "phases": phases,
      "compile_s": compile_report, "peak_rss_bytes": rss_steps,
      "peak_rss_bytes_with_analysis": R.peak_rss_bytes(), "peak_rss_bytes_by_stage": rss,
      "prompt_len": int(prompt_tokens.shape[1]), "steps": per_step,
      "load_avg_1m_end": os.getloadavg()[0]}
  print_table(record)
  if args.out:
    with open(args.out, "a") as f:
      f.write(json.dumps(record) + "\n")
  else:
    print(json.dumps(record))


def print_table(rec):
  lim = rec["limits"]
  err = functools.partial(print, file=sys.stderr)
  err(f"{rec['cpu_model']} x{rec['cpu_count']}, load {rec['load_avg_1m']:.2f}; matmul "
      f"{lim['matmul_flops_per_s'] / 1e9:.0f} GFLOP/s, bandwidth "
      f"{lim['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s, exp {lim['exp_per_s'] / 1e9:.2f} G/s")
  err(f"batch {rec['batch']}, λ={rec['lmbda']}, chunk {rec['chunk']}: {rec['seconds_per_step']:.2f} "
      f"s/step (median), peak RSS {rec['peak_rss_bytes'] / 2**30:.2f} GiB")
  err(f"{'source':<8}{'phase':<16}{'s':>7}{'GFLOP':>8}{'GB':>7}{'Gexp':>7}{'bound s':>9}"
      f"{'x bound':>9}{'x (+exp)':>9}")
  for p in rec["phases"]:
    err(f"{p['source']:<8}{p['phase']:<16}{p['s']:>7.3f}{p['flops'] / 1e9:>8.1f}{p['bytes'] / 1e9:>7.2f}"
        f"{p['transcendentals'] / 1e9:>7.3f}{p['bound_s']:>9.3f}{p['x_bound']:>9.2f}"
        f"{p['x_bound_with_exp']:>9.2f}")
    if "hot_ops" in p:
      err(f"{'':<10}time by kind: " + ", ".join(f"{k} {v:.0%}" for k, v in p["hot_ops"]["by_kind"].items()))
      for op in p["hot_ops"]["top"]:
        err(f"{'':<10}hot: {op['op']} {op['s']:.3f}s ({op['share']:.0%}) {op['computes']}")
  err(f"compile: {json.dumps(rec['compile_s'])}")


if __name__ == "__main__":
  main()
