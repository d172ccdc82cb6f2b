"""The CPU testbed (v3): a char-level arithmetic teacher, a 7.7× smaller student that has only a
tenth of the labels, GKD between them.

The teacher is fine-tuned on all 20,000 training examples; the student's SFT and every
distillation run see only the first LABELLED = 2,000 of them. That is the setting where the
teacher knows what the student's data does not: trained on all the data, the same student
overtook the v2 teacher, so capacity alone left no gap to close. Three stages, each its own run
(the arg picks the stage); experiments/README.md gives what each costs and what it reached:
  python -m gkd.main --config=configs/testbed.py:stage=teacher --workdir=runs/testbed_v3/teacher
      4,000 SFT steps of a 1.59M-parameter model
  python -m gkd.main --config=configs/testbed.py:stage=student --workdir=runs/testbed_v3/student_n2000
      4,000 SFT steps of a 0.21M-parameter model on 2,000 examples
  python -m gkd.main --config=configs/testbed.py:stage=gkd     --workdir=runs/testbed_v3/gkd
      500 distillation steps from the SFT'd student and a final eval on 2,000 test examples
The gkd stage reads the first two stages' exports (teacher=..., student=... args to change).
`python -m gkd.sweep --config=configs/testbed.py:sweep=NAME --workdir=runs/testbed_v3/NAME`
runs get_sweep() (see there). `runlocal=true` shrinks everything to a seconds-long smoke run.
experiments/results/testbed_v3/launch.sh runs everything.
"""

from gkd.train.defaults import default_config, parse_arg

TEACHER = dict(dim=192, n_layers=4, n_heads=6, n_kv_heads=2, ffn_dim=512, max_seq_len=128)
STUDENT = dict(dim=96, n_layers=2, n_heads=3, n_kv_heads=1, ffn_dim=256, max_seq_len=128)
LABELLED = 2000  # training examples the student may use (its SFT and distillation prompts)
STORE = "runs/testbed_v3/store_k8"  # the teacher's top-8 on the LABELLED prompts (launch.sh)
TINY = dict(dim=32, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=64, max_seq_len=128)


def get_config(arg=None):
  arg = parse_arg(arg, stage="gkd", steps=0, runlocal=False, seed=0, sweep="grid", seeds=5,
                  teacher="runs/testbed_v3/teacher/export",
                  student="runs/testbed_v3/student_n2000/export")
  c = default_config()
  c.seed = arg.seed
  c.tokenizer = "testbed"
  c.data.update(task="arithmetic", max_prompt_len=24, max_response_len=56)  # <1% of responses cut
  c.optim.update(learning_rate=2e-3, warmup_steps=50, weight_decay=0.01, schedule="cosine")
  c.train.update(batch_size=32, log_every=25, checkpoint_every=200)
  # Stages that choose things (teacher, student, run lengths) evaluate on validation; distillation
  # runs, the compared results, on 2,000 held-out test examples. experiments/README.md lists the
  # choices that were made after seeing test results.
  c.eval.update(every=0, num_examples=500, batch_size=100)
  if arg.stage in ("teacher", "student"):  # supervised fine-tuning from scratch on the references
    c.mode = "sft"
    c.student.llama.update(TEACHER if arg.stage == "teacher" else STUDENT)
    c.train.num_steps = 4000
    if arg.stage == "student":
      c.data.num_train_examples = LABELLED
  elif arg.stage == "gkd":  # start from the SFT'd student, as the GKD paper does
    c.teacher.update(source="pretrained", path=arg.teacher)
    c.student.update(source="pretrained", path=arg.student)
    c.optim.update(learning_rate=5e-4, warmup_steps=10)
    c.mix.update(dataset=0.0, teacher=0.0, student=1.0)
    c.objective.divergence = "generalized_jsd"  # β = 0.5, the default
    c.train.num_steps = 500
    c.data.num_train_examples = LABELLED
    c.eval.update(split="test", num_examples=2000)
    # With teacher.source='self' (on-policy self-distillation) the student's weights read the
    # reference solution before the prompt: 72 tokens hold nearly every reference with its
    # prompt, and 72 + 56 fits the models' 128 positions.
    c.teacher.update(self_template="{reference}\n{prompt}", self_prompt_len=72)
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


def divergence(name: str, beta: float | None = None) -> dict:
  """Overrides selecting a divergence (and generalized JSD's β) under the config schema."""
  kw = {} if beta is None else {"beta": beta}
  return {"objective.divergence": name, "objective.divergence_kw": kw}


def on_policy(lam: float) -> dict:
  """λ = the student-sample fraction; the rest is the dataset's references (the paper's mix)."""
  return {"mix.student": lam, "mix.dataset": 1.0 - lam}


DIVERGENCES = {"FKL": divergence("forward_kl"), "RKL": divergence("reverse_kl"),
               "JSD(0.1)": divergence("generalized_jsd", 0.1),
               "JSD(0.5)": divergence("generalized_jsd", 0.5),
               "JSD(0.9)": divergence("generalized_jsd", 0.9)}

METHODS = {  # the GKD paper's comparison (Agarwal et al., 2024, Fig. 4), as config overrides
    "sft": {"mode": "sft", "mix.dataset": 1.0, "mix.student": 0.0},
    "supervised_kd": {**DIVERGENCES["FKL"], **on_policy(0.0)},
    "seq_kd": {**DIVERGENCES["FKL"], "mix.dataset": 0.0, "mix.teacher": 1.0, "mix.student": 0.0},
    "gkd_fkl": {**DIVERGENCES["FKL"], **on_policy(1.0)},
    "gkd_rkl": {**DIVERGENCES["RKL"], **on_policy(1.0)},
    "gkd_jsd0.5": {**DIVERGENCES["JSD(0.5)"], **on_policy(1.0)},
    "mixed_jsd0.5": {**DIVERGENCES["JSD(0.5)"], **on_policy(0.5)},
}


def _paper_points() -> list[dict]:
  """SFT and SeqKD, then divergence × λ, the most informative first (the sweep's first point is
  the paired-difference baseline): SFT, supervised KD, SeqKD, on-policy per divergence, mixed,
  then the rest of the λ=0 row."""
  first = [METHODS["sft"], METHODS["supervised_kd"], METHODS["seq_kd"]]
  grid = [{**d, **on_policy(lam)} for lam in (1.0, 0.5, 0.0) for d in DIVERGENCES.values()]
  return first + [p for p in grid if p not in first]


def get_sweep(arg=None):
  """Sweeps, by `sweep=`; all seed-major (every method at seed 0, then seed 1, ...) so that an
  interrupted sweep has whole paired comparisons:

  curves       SFT, supervised KD and on-policy JSD(0.9) for 1,000 steps with a validation eval
               every 250 (seed 0): how long distillation runs must be.
  paper        SFT, supervised KD, SeqKD and divergence (FKL, RKL, JSD 0.1/0.5/0.9) ×
               λ ∈ {0, 0.5, 1}: 17 methods × 5 seeds. Baseline: SFT.
  temperature  on-policy JSD(0.9) with the student sampled at T ∈ {1, 0.25, 0.5, 1.5} × 5 seeds, on
               the 20,000 prompts, where on-policy distillation moves the student (moved there
               after the 2,000-prompt run's test results were seen:
               experiments/results/testbed_v3/temperature_2000_prompts).
  prompts      on-policy JSD(0.9) on 2,000 / 20,000 / 5,000 training prompts × 5 seeds: on-policy
               distillation needs prompts, not labels, so it may use prompts the student has no
               labels for (the student's SFT still saw only the first 2,000). SeqKD on the
               20,000 prompts (the teacher's generations as labels) is the other label-free
               method, the fair comparison for the 20,000-prompt point.
  beyond       methods after GKD against on-policy JSD(0.9) (the baseline) × 5 seeds, all on the
               20,000 training prompts, where the prompts sweep shows on-policy distillation
               moving the student (moved there after a first seed on the 2,000 labelled prompts
               could not separate the methods): speculative KD with K=1 (the teacher replaces
               every token that is not its own argmax; larger K replaces almost nothing here).
               And intermediate layers: student blocks 0, 1 matched to teacher blocks 1, 3
               (cosine, weight 1, learned 96→192 projections). And RL + GKD: a REINFORCE term
               on the graded samples at rl_weight=0.1 (set a priori, not tuned). And a LoRA
               student (rank 8, alpha 16, every kernel; the learning rate is the full model's). And
               DistiLLM's adaptive off-policy replay at the baseline's p = λ = 1 (1,000 rows; the
               fresh share decays to 0 over the run; p is adapted every 50 steps on 256
               validation references): fewer generations for the same on-policy fraction.
  after_gkd    the on-policy methods of 2025-26 against on-policy JSD(0.9) (the baseline, the
               prompts sweep's points) × 3 seeds on the 20,000 prompts, pre-registered in
               experiments/results/testbed_v3/after_gkd/plan.md: on-policy reverse KL (full),
               the sampled-token estimator of it (Thinking Machines, 2025), and on-policy
               self-distillation (OPSD: the student reading its reference solution is the
               teacher; current weights, JSD(0.9)).
  store        supervised top-8 KD (forward KL on the dataset's responses) with the live teacher
               against the same from an offline teacher store (written by launch.sh to
               runs/testbed_v3/store_k8) × 3 seeds: the store must train as the teacher does.
  grid, methods  the v1 sweeps (3 seeds); their superseded results are described in
               experiments/README.md.
  With `runlocal=true` (the CI smoke form) two points: supervised KD and on-policy JSD(0.5).
  """
  arg = parse_arg(arg, stage="gkd", steps=0, runlocal=False, seed=0, teacher="", student="",
                  sweep="grid", seeds=5)
  if arg.runlocal:
    return [{**METHODS["supervised_kd"], "seed": 0}, {**METHODS["gkd_jsd0.5"], "seed": 0}]
  if arg.sweep in ("grid", "methods"):
    seeds = (0, 1, 2)
    if arg.sweep == "methods":
      return [{**overrides, "seed": seed} for overrides in METHODS.values() for seed in seeds]
    return [{**divergence(d, b), **on_policy(lam), "seed": seed}
            for d, b in [("forward_kl", 0.5), ("reverse_kl", 0.5), ("generalized_jsd", 0.1),
                         ("generalized_jsd", 0.5), ("generalized_jsd", 0.9)]
            for lam in (0.0, 0.5, 1.0) for seed in seeds]
  best = {**DIVERGENCES["JSD(0.9)"], **on_policy(1.0)}
  if arg.sweep == "curves":  # learning curves on validation (choices are made there), seed 0
    curve = {"train.num_steps": 1000, "eval.every": 250, "eval.split": "validation",
             "eval.num_examples": 500}
    return [{**m, **curve, "seed": 0} for m in (METHODS["sft"], METHODS["supervised_kd"], best)]
  if arg.sweep == "paper":
    points = _paper_points()
  elif arg.sweep == "temperature":
    points = [{**best, "sampling.temperature": t, "data.num_train_examples": 20000}
              for t in (1.0, 0.25, 0.5, 1.5)]
  elif arg.sweep == "prompts":
    points = [{**best, "data.num_train_examples": n} for n in (LABELLED, 20000, 5000)]
    points.append({**METHODS["seq_kd"], "data.num_train_examples": 20000})  # also label-free
  elif arg.sweep == "beyond":
    layers = {"objective.layer_map": "0:1,1:3", "objective.hidden_loss": "cosine",
              "objective.hidden_weight": 1.0}
    base = {**best, "data.num_train_examples": 20000}
    points = [base, {**base, "sampling.speculative_topk": 1}, {**base, **layers},
              {**base, "objective.rl_weight": 0.1}, {**base, "lora.rank": 8},
              {**base, "mix.replay.capacity": 1000}]
  elif arg.sweep == "after_gkd":
    base = {**best, "data.num_train_examples": 20000}
    rkl = {**DIVERGENCES["RKL"], **on_policy(1.0), "data.num_train_examples": 20000}
    points = [base, rkl, {**rkl, "objective.estimator": "sampled_token"},
              {**base, "teacher.source": "self"}]
  elif arg.sweep == "store":
    top8 = {**METHODS["supervised_kd"], "objective.teacher_topk": 8}
    return [{**p, "seed": seed} for seed in range(3)
            for p in (top8, {**top8, "teacher_store": STORE})]
  else:
    raise ValueError(f"sweep={arg.sweep!r}; expected curves, paper, temperature, prompts, beyond, "
                     "after_gkd, store, grid or methods.")
  return [{**p, "seed": seed} for seed in range(arg.seeds) for p in points]
