"""The CPU testbed: a char-level arithmetic teacher, a 7.7× smaller student, and GKD between them.

Three stages, each its own run (the arg picks the stage):
  python -m gkd.main --config=configs/testbed.py:stage=teacher --workdir=runs/testbed/teacher
  python -m gkd.main --config=configs/testbed.py:stage=student --workdir=runs/testbed/student_sft
  python -m gkd.main --config=configs/testbed.py:stage=gkd     --workdir=runs/testbed/gkd
The gkd stage reads the first two stages' exports (teacher=..., student=... args to change).
`python -m gkd.sweep --config=configs/testbed.py --workdir=runs/testbed/sweep` runs get_sweep().
`runlocal=true` shrinks everything to a seconds-long smoke run (used by the tests).
"""

from gkd.train.defaults import default_config, parse_arg

TEACHER = dict(dim=192, n_layers=4, n_heads=6, n_kv_heads=2, ffn_dim=512, max_seq_len=128)
STUDENT = dict(dim=96, n_layers=2, n_heads=3, n_kv_heads=1, ffn_dim=256, max_seq_len=128)
TINY = dict(dim=32, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=64, max_seq_len=128)


def get_config(arg=None):
  arg = parse_arg(arg, stage="gkd", steps=0, runlocal=False, seed=0, sweep="grid",
                  teacher="runs/testbed/teacher/export", student="runs/testbed/student_sft/export")
  c = default_config()
  c.seed = arg.seed
  c.tokenizer = "testbed"
  c.data.update(task="arithmetic", max_prompt_len=24, max_response_len=56)  # <1% of responses cut
  c.optim.update(learning_rate=2e-3, warmup_steps=50, weight_decay=0.01, schedule="cosine")
  c.train.update(batch_size=32, log_every=25, checkpoint_every=200)
  c.eval.update(every=0, num_examples=128, batch_size=64)
  if arg.stage in ("teacher", "student"):  # supervised fine-tuning from scratch on the references
    c.mode = "sft"
    c.student.llama.update(TEACHER if arg.stage == "teacher" else STUDENT)
    c.train.num_steps = 1500 if arg.stage == "teacher" else 600
  elif arg.stage == "gkd":  # start from the SFT'd student, as the GKD paper does
    c.teacher.update(source="pretrained", path=arg.teacher)
    c.student.update(source="pretrained", path=arg.student)
    c.optim.update(learning_rate=5e-4, warmup_steps=10)
    c.mix.update(dataset=0.0, teacher=0.0, student=1.0)
    c.objective.divergence = "generalized_jsd"  # β = 0.5, the default
    c.train.num_steps = 200
  else:
    raise ValueError(f"stage={arg.stage!r}; expected teacher, student or gkd.")
  if arg.runlocal:  # a smoke run: tiny random models, a handful of steps
    for role in ("teacher", "student"):
      c[role].update(source="init", path="")
      c[role].llama.update(TINY)
    c.data.num_train_examples = 64
    c.train.update(batch_size=8, num_steps=4, log_every=1, checkpoint_every=2)
    c.eval.update(num_examples=8, batch_size=8, max_new_tokens=8)
  if arg.steps:
    c.train.num_steps = arg.steps
  return c


METHODS = {  # the GKD paper's comparison (Agarwal et al., 2024, Fig. 4), as config overrides
    "sft": {"mode": "sft", "mix.dataset": 1.0, "mix.student": 0.0},
    "supervised_kd": {"objective.divergence": "forward_kl", "mix.dataset": 1.0, "mix.student": 0.0},
    "seq_kd": {"objective.divergence": "forward_kl", "mix.dataset": 0.0, "mix.teacher": 1.0,
               "mix.student": 0.0},
    "gkd_fkl": {"objective.divergence": "forward_kl", "mix.dataset": 0.0, "mix.student": 1.0},
    "gkd_rkl": {"objective.divergence": "reverse_kl", "mix.dataset": 0.0, "mix.student": 1.0},
    "gkd_jsd0.5": {"objective.divergence": "generalized_jsd", "objective.divergence_kw": {"beta": 0.5},
                   "mix.dataset": 0.0, "mix.student": 1.0},
    "mixed_jsd0.5": {"objective.divergence": "generalized_jsd", "objective.divergence_kw": {"beta": 0.5},
                     "mix.dataset": 0.5, "mix.student": 0.5},
}


def get_sweep(arg=None):
  """Two sweeps, by `sweep=`:

  grid     (default) the GKD paper's ablation: divergence × on-policy fraction λ × 3 seeds (45 runs);
  methods  SFT, supervised KD, SeqKD, on-policy GKD per divergence and mixed λ=0.5, × 3 seeds.
  With `runlocal=true` (the CI smoke form) two points: supervised KD and on-policy JSD(0.5).
  """
  arg = parse_arg(arg, stage="gkd", steps=0, runlocal=False, seed=0, teacher="", student="",
                  sweep="grid")
  seeds = (0, 1, 2)
  if arg.runlocal:
    return [{**METHODS["supervised_kd"], "seed": 0}, {**METHODS["gkd_jsd0.5"], "seed": 0}]
  if arg.sweep == "methods":
    return [{**overrides, "seed": seed} for overrides in METHODS.values() for seed in seeds]
  if arg.sweep != "grid":
    raise ValueError(f"sweep={arg.sweep!r}; expected grid or methods.")
  divergences = [("forward_kl", {}), ("reverse_kl", {}), ("generalized_jsd", {"beta": 0.1}),
                 ("generalized_jsd", {"beta": 0.5}), ("generalized_jsd", {"beta": 0.9})]
  return [{"objective.divergence": d, "objective.divergence_kw": kw, "mix.student": lam,
           "mix.dataset": 1.0 - lam, "seed": seed}
          for d, kw in divergences for lam in (0.0, 0.5, 1.0) for seed in seeds]
