"""Qwen3-1.7B → Qwen3-0.6B, fully on-policy, from Hugging Face directories you downloaded.

  python -m gkd.main --config=configs/qwen3.py:teacher=/models/Qwen3-1.7B,student=/models/Qwen3-0.6B \\
      --workdir=runs/qwen3
  python -m gkd.train.memory --config=configs/qwen3.py   # what it needs, per device

The two directories are Hugging Face checkpoints (config.json, *.safetensors, tokenizer.json and
the chat template); gkd checks them against each other token for token (the two models share
Qwen3's tokenizer). Without paths both models are randomly initialized at the released shapes
(`llama.PRESETS`, no tokenizer), which is enough for `gkd.train.memory` but not for training.

The student learns on its own samples only (λ = 1) with reverse KL, the mode-seeking
divergence of on-policy distillation, on GSM8K-style prompts in Qwen3's chat template (thinking
on, as the template's default), 256 prompt + 512 response tokens, batch 32 (4 micro-batches of
8). Mixed precision: the teacher is stored and run in bf16; the student computes in bf16 over
float32 master weights and Adam state; the head and loss run in sequence chunks of 64 over the
151,936-token vocabulary.

Memory (XLA's buffer assignment from abstract shapes, checked by tests/test_family_configs.py):
at most MEMORY_GIB = 80 GiB per device (the measured figure is in the README's table of configs
sized for one accelerator), so one 80 GB accelerator (A100-80G, H100). Activations of
the micro-batch dominate: raise optim.grad_accum_steps to fit a smaller one.
"""

from gkd.train.defaults import default_config, parse_arg

MEMORY_GIB = 80  # the claim tests/test_family_configs.py checks


def get_config(arg=None):
  arg = parse_arg(arg, teacher="", student="", steps=1000, batch=32)
  c = default_config()
  for role, path, preset in (("teacher", arg.teacher, "qwen3-1.7b"),
                             ("student", arg.student, "qwen3-0.6b")):
    if path:
      c[role].update(source="pretrained", path=path, dtype="bfloat16")
    else:
      c[role].update(source="init", preset=preset, dtype="bfloat16")
  c.data.update(task="gsm8k", chat_template=True, max_prompt_len=256, max_response_len=512)
  c.mix.update(dataset=0.0, teacher=0.0, student=1.0)
  c.objective.update(divergence="reverse_kl", chunk_size=64)
  c.optim.update(learning_rate=1e-5, warmup_steps=20, weight_decay=0.0, grad_accum_steps=4)
  c.train.update(batch_size=arg.batch, num_steps=arg.steps, log_every=10, checkpoint_every=100)
  c.eval.update(every=250, at_start=True, num_examples=256, batch_size=32, max_new_tokens=512)
  return c
