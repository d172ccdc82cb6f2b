"""The RL + GKD term (gkd.objectives.policy_gradient): advantages, the loss against NumPy, the step's wiring,
grading, config errors and a CI-sized run."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gkd import divergences, teachers
from gkd.data import tasks
from gkd.objectives import Objective, policy_gradient
from gkd.train import loop, validate
from gkd.train import step as step_lib
from tests import helpers
from tests.test_train_step import batch, tiny  # noqa: F401  (the fixture)

pytestmark = pytest.mark.usefixtures("shared_data_dir")


def test_leave_one_out_advantages_by_hand():
  got = policy_gradient.leave_one_out([1.0, 0.0, 1.0, 0.5], [True, True, True, False])
  # baselines: (2−1)/2, (2−0)/2, (2−1)/2; the unsampled row gets 0
  np.testing.assert_allclose(got, [0.5, -1.0, 0.5, 0.0])
  np.testing.assert_array_equal(policy_gradient.leave_one_out([1.0, 0.0], [True, False]), [0, 0])
  np.testing.assert_allclose(policy_gradient.leave_one_out([0.3] * 3, [True] * 3), 0, atol=1e-7)


@pytest.mark.parametrize("reduction", ["sequence", "token"])
def test_loss_matches_numpy(reduction):
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 4, 6)).astype(np.float32)
  tokens = rng.integers(0, 6, (3, 4)).astype(np.int32)
  mask = np.array([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], bool)
  adv = np.array([1.0, -0.5, 2.0], np.float32)
  logp = np.log(helpers.softmax64(logits))
  token_logp = np.take_along_axis(logp, tokens[..., None], -1)[..., 0]
  if reduction == "sequence":
    total = sum(-adv[b] * token_logp[b][mask[b]].mean() for b in range(2))
  else:
    total = sum(-adv[b] * token_logp[b][mask[b]].sum() for b in range(2))
  batch_ = {"response_tokens": tokens, "response_mask": mask, "rl_advantage": adv}
  got = policy_gradient.loss(jnp.asarray(logits), batch_, 2.0, reduction)
  np.testing.assert_allclose(got, total / 2.0, rtol=1e-5)


def test_the_step_adds_the_weighted_term(batch):  # noqa: F811
  student, teacher = tiny(0), tiny(1)
  sg, ss = nnx.split(student)
  tg, ts = nnx.split(teacher)
  params = {"student": ss.to_pure_dict()}
  with_adv = dict(batch, rl_advantage=np.array([1.0, -1.0, 0.5, 0.0], np.float32))

  def loss(weight, b):
    objective = Objective(divergence=divergences.get("forward_kl"), rl_weight=weight)
    return step_lib.loss_terms(params, ts.to_pure_dict(), b, 3.0, student_graph=sg,
                               teacher=teachers.Live(tg), objective=objective)

  base, _ = loss(0.0, batch)
  total, metrics = loss(0.7, with_adv)
  from gkd import scoring
  pg = policy_gradient.loss(scoring.response_logits(student, with_adv), with_adv, 3.0, "sequence")
  assert abs(float(pg)) > 1e-3
  np.testing.assert_allclose(metrics["pg_loss"], pg, rtol=1e-5)
  np.testing.assert_allclose(total, base + 0.7 * pg, rtol=1e-5)


def test_samples_are_graded_against_their_examples():
  tokenizer = tasks.testbed_tokenizer()
  examples = [{"prompt": "1+5=", "response": "1+5=6. Answer: 6", "answer": "6", "grader": "numeric"},
              {"prompt": "2+2=", "response": "2+2=4. Answer: 4", "answer": "4", "grader": "numeric"}]
  texts = ["1+5=6. Answer: 6", "2+2=5. Answer: 5", "2+2=4. Answer: 4"]
  rows = [tokenizer.encode(t) + [tokenizer.eos_id] for t in texts]
  width = max(map(len, rows)) + 2
  tokens = np.array([r + [tokenizer.pad_id] * (width - len(r)) for r in rows])
  mask = np.array([[i < len(r) for i in range(width)] for r in rows])
  rewarder = policy_gradient.Rewarder(tokenizer, examples)
  got = rewarder.rewards([0, 1, 1], tokens, mask, np.array([True, True, False]))
  np.testing.assert_array_equal(got, [1.0, 0.0, 0.0])  # the third is not a sample: not graded
  with pytest.raises(ValueError, match="graded examples"):
    policy_gradient.Rewarder(tokenizer, [dict(examples[0], grader="none")])


def test_config_errors():
  c = helpers.smoke_gkd_config()
  c.objective.rl_weight = 1.0
  c.mix.update(dataset=1.0, student=0.0)
  with pytest.raises(validate.ConfigError, match="mix.student > 0"):
    validate.validate(c)
  with pytest.raises(ValueError, match="rl_weight must be >= 0"):
    Objective(rl_weight=-1.0)


@pytest.mark.e2e
def test_a_run_logs_rewards_and_the_term(tmp_path):
  c = helpers.smoke_gkd_config()
  c.objective.rl_weight = 1.0
  c.train.update(num_steps=3, checkpoint_every=0)
  final = loop.train(c, str(tmp_path / "run"))
  assert np.isfinite(final["nll"])
  with open(os.path.join(tmp_path / "run", "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f if "pg_loss" in line]
  assert len(rows) == 3 and all(0.0 <= r["rl_reward"] <= 1.0 and np.isfinite(r["pg_loss"])
                                for r in rows)
