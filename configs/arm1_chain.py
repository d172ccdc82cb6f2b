"""Arm 1 of the on-policy evidence: sums of 4-6 terms added in an order drawn per example
(task `chain_orders`), where several solution paths are valid and the first steps decide what
follows. The testbed's two char-level architectures (configs/testbed.py): a 1.59M teacher and a
0.21M student, both fine-tuned on `labelled` training examples. Stages (costs on the shared
2-core dev CPU: experiments/README.md, arm 1):
  python -m gkd.main --config=configs/arm1_chain.py:stage=teacher --workdir=runs/arm1_chain/teacher
  python -m gkd.main --config=configs/arm1_chain.py:stage=student --workdir=runs/arm1_chain/student
  python -m gkd.eval.gate --config=configs/arm1_chain.py --out=runs/arm1_chain/methods
  python -m gkd.sweep --config=configs/arm1_chain.py:sweep=methods --workdir=runs/arm1_chain/methods
The gkd stage distils the teacher's export into the student's for 500 steps and ends with a
greedy eval on the 2,000 test examples; the stages choose on the 500 validation examples.
`order=left` keeps each expression's own order (one path: the control). `runlocal=true` is a
seconds-long smoke run with tiny random models. experiments/results/arm1_chain/launch.sh runs it
all and skips what is finished.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import testbed  # noqa: E402
from gkd.data import tasks  # noqa: E402
from gkd.train.defaults import default_config, parse_arg  # noqa: E402

ROOT = "runs/arm1_chain"


def _args(arg):  # get_config and get_sweep take the same arg string
  return parse_arg(arg, stage="gkd", steps=0, seed=0, seeds=5, runlocal=False, sweep="methods",
                   order="random", labelled=20000, teacher=f"{ROOT}/teacher/export",
                   student=f"{ROOT}/student/export")


def get_config(arg=None):
  arg = _args(arg)
  c = default_config()
  c.seed = arg.seed
  c.tokenizer = "testbed"
  c.data.update(task="chain_orders", max_prompt_len=24, max_response_len=96)  # longest: 19, 82
  c.data.task_kwargs = tasks.default_kwargs("chain_orders")
  c.data.task_kwargs.order = arg.order
  c.data.num_train_examples = arg.labelled
  c.optim.update(learning_rate=2e-3, warmup_steps=50, weight_decay=0.01, schedule="cosine")
  c.train.update(batch_size=32, log_every=25, checkpoint_every=200)
  c.eval.update(every=0, num_examples=500, batch_size=100)  # validation: where choices are made
  if arg.stage in ("teacher", "student"):  # supervised fine-tuning from scratch on the references
    c.mode = "sft"
    c.student.llama.update(testbed.TEACHER if arg.stage == "teacher" else testbed.STUDENT)
    c.train.num_steps = 4000
    c.eval.every = 500
  elif arg.stage == "gkd":  # from the SFT'd student, as the GKD paper does
    c.teacher.update(source="pretrained", path=arg.teacher)
    c.student.update(source="pretrained", path=arg.student)
    c.optim.update(learning_rate=5e-4, warmup_steps=10)
    c.mix.update(dataset=0.0, teacher=0.0, student=1.0)
    c.objective.divergence = "generalized_jsd"  # β = 0.5, the default; each method sets its own
    c.train.num_steps = 500
    c.eval.update(split="test", num_examples=2000)
  else:
    raise ValueError(f"stage={arg.stage!r}; expected teacher, student or gkd.")
  if arg.runlocal:  # a smoke run: tiny random models, a handful of steps
    for role in ("teacher", "student"):
      c[role].update(source="init", path="")
      c[role].llama.update(testbed.TINY)
    c.data.num_train_examples = 64
    c.train.update(batch_size=8, num_steps=4, log_every=1, checkpoint_every=2)
    c.eval.update(num_examples=8, batch_size=8, max_new_tokens=8)
  if arg.steps:
    c.train.num_steps = arg.steps
  return c


# The methods compared (experiments/results/arm1_chain/plan.md), as config overrides. SeqKD draws
# fresh teacher samples every step (the same number of generations as on-policy), not one cached
# generation per prompt.
M = testbed.METHODS
METHODS = {
    "sft": M["sft"],
    "supervised_kd": M["supervised_kd"],
    "seq_kd": {**M["seq_kd"], "sampling.cache_teacher_samples": False},
    "gkd_fkl": M["gkd_fkl"],
    "gkd_rkl": M["gkd_rkl"],
    "gkd_jsd0.9": {**testbed.DIVERGENCES["JSD(0.9)"], **testbed.on_policy(1.0)},
    "mixed_jsd0.9": {**testbed.DIVERGENCES["JSD(0.9)"], **testbed.on_policy(0.5)},
    # The plan's secondary comparisons, added once the methods were on main (plan.md). OPSD's
    # teacher reads the default template (the reference, then the prompt) cut to its last 32
    # tokens: the models' 128 positions minus the 96 response ones. What is cut is the start;
    # the reference's answer and the prompt stay.
    "gkd_rkl_sampled": {**M["gkd_rkl"], "objective.estimator": "sampled_token"},
    "opsd_jsd0.9": {**testbed.DIVERGENCES["JSD(0.9)"], **testbed.on_policy(1.0),
                    "teacher.source": "self", "teacher.self_prompt_len": 32},
}

# The plan's comparisons, each a method minus another (compare.py beside the results); arm 2
# makes the same ones.
HYPOTHESES = {"H1": ("gkd_jsd0.9", "seq_kd"), "H2": ("gkd_jsd0.9", "supervised_kd")}
SECONDARY = [("gkd_fkl", "seq_kd"), ("gkd_fkl", "supervised_kd"), ("gkd_rkl", "seq_kd"),
             ("gkd_rkl", "supervised_kd"), ("mixed_jsd0.9", "gkd_jsd0.9")] + [
    (m, "sft") for m in ("supervised_kd", "seq_kd", "gkd_fkl", "gkd_rkl", "gkd_jsd0.9",
                         "mixed_jsd0.9")]
AMENDED = [("gkd_rkl_sampled", "gkd_rkl"), ("gkd_rkl_sampled", "seq_kd"), ("opsd_jsd0.9", "sft"),
           ("opsd_jsd0.9", "gkd_jsd0.9")]  # the amendment's two methods, secondary


def get_sweep(arg=None):
  """`sweep=methods`: the nine METHODS × `seeds` seeds, seed-major (SFT continued first: the
  paired baseline), 500 steps each. `sweep=teacher_check`: on-policy JSD(0.9), seed 0 alone (run
  again on a retrained teacher export, plan.md). With `runlocal=true`, supervised KD and
  on-policy JSD(0.9)."""
  arg = _args(arg)
  if arg.runlocal:
    return [{**METHODS["supervised_kd"], "seed": 0}, {**METHODS["gkd_jsd0.9"], "seed": 0}]
  if arg.sweep == "teacher_check":  # plan.md, amendment of 2026-12-03
    return [{**METHODS["gkd_jsd0.9"], "seed": 0}]
  if arg.sweep != "methods":
    raise ValueError(f"sweep={arg.sweep!r}; expected methods or teacher_check.")
  return [{**p, "seed": seed} for seed in range(arg.seeds) for p in METHODS.values()]
