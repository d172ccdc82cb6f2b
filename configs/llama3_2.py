"""Llama-3.2-3B-Instruct → Llama-3.2-1B-Instruct, mixed on-policy, from Hugging Face dirs.

  python -m gkd.main --config=configs/llama3_2.py:teacher=/models/Llama-3.2-3B-Instruct,student=/models/Llama-3.2-1B-Instruct \\
      --workdir=runs/llama3_2
  python -m gkd.train.memory --config=configs/llama3_2.py   # what it needs, per device

Both directories are Hugging Face checkpoints of the Llama 3.2 family (llama3 RoPE scaling,
tied embeddings, a 128,256-token vocabulary and one tokenizer, checked token for token).
Without paths both models are randomly initialized at the released shapes (`llama.PRESETS`, no
tokenizer): enough for `gkd.train.memory`, not for training. Llama 3.x chat templates write
today's date into the system header, so prompts rendered on different days differ by it.

Half the steps train on the student's own samples and half on the dataset's answers (λ = 0.5),
with JSD(0.5), on GSM8K-style prompts in the chat template, 256 + 256 tokens, batch 32 (4
micro-batches of 8). Mixed precision: a bf16 teacher; a bf16 student over float32 master
weights and Adam state; the head and loss in sequence chunks of 64.

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
  for role, path, preset in (("teacher", arg.teacher, "llama3.2-3b"),
                             ("student", arg.student, "llama3.2-1b")):
    if path:
      c[role].update(source="pretrained", path=path, dtype="bfloat16")
    else:
      c[role].update(source="init", preset=preset, dtype="bfloat16")
  c.data.update(task="gsm8k", chat_template=True, max_prompt_len=256, max_response_len=256)
  c.mix.update(dataset=0.5, teacher=0.0, student=0.5)
  c.objective.update(divergence="generalized_jsd", divergence_kw={"beta": 0.5}, chunk_size=64)
  c.optim.update(learning_rate=1e-5, warmup_steps=20, weight_decay=0.01, grad_accum_steps=4)
  c.train.update(batch_size=arg.batch, num_steps=arg.steps, log_every=10, checkpoint_every=100)
  c.eval.update(every=250, at_start=True, num_examples=256, batch_size=32, max_new_tokens=256)
  return c
