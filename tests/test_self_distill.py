"""On-policy self-distillation (gkd.teachers.self_distill): the privileged prompt, a loss of 0
when nothing is privileged, gradients through the student's side only, the three weight
choices, the config's checks and an exact resume of the EMA teacher."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from gkd import divergences, objectives, scoring, teachers
from gkd.data import pipeline, tasks
from gkd.errors import ConfigError
from gkd.models import llama
from gkd.objectives import Objective
from gkd.teachers import self_distill
from gkd.train import checkpoint, loop, validate
from gkd.train import step as step_lib
from tests import helpers
from tests.test_resume import cut, final_state

EXAMPLES = [{"prompt": "12+30=", "response": "12+30=42. Answer: 42", "answer": "42"},
            {"prompt": "7-5=", "response": "7-5=2. Answer: 2", "answer": "2"}]
P, R = 8, 6


def student_batch(tokenizer, rng):
  """The student's rows of EXAMPLES: its own prompts, random responses (as samples would be)."""
  rows = [pipeline.encode_example(tokenizer, e["prompt"], "", max_prompt_len=P,
                                  max_response_len=R) for e in EXAMPLES]
  tokens = rng.integers(3, tokenizer.vocab_size, (len(EXAMPLES), R)).astype(np.int32)
  return {"prompt_tokens": np.stack([r["prompt_tokens"] for r in rows]),
          "prompt_mask": np.stack([r["prompt_mask"] for r in rows]),
          "response_tokens": tokens, "response_mask": np.arange(R)[None] < np.array([[R], [3]])}


def setup(template, weights="current", length=64):
  tokenizer = tasks.testbed_tokenizer()
  cfg = llama.LlamaConfig(vocab_size=tokenizer.vocab_size, dim=32, n_layers=2, n_heads=2,
                          n_kv_heads=1, ffn_dim=64, max_seq_len=128)
  graph, state = nnx.split(llama.Llama(cfg, rngs=nnx.Rngs(0)))
  # Spread the random model's logits (scaled embeddings) so that its divergences are not tiny.
  params = jax.tree.map(lambda x: 4 * x if x.shape[0] == tokenizer.vocab_size else x,
                        state.to_pure_dict())
  prompts = self_distill.PrivilegedPrompts(template, EXAMPLES, tokenizer, length=length,
                                           chat_template=False)
  batch = student_batch(tokenizer, np.random.default_rng(0))
  batch.update(prompts.batch([0, 1]))
  copy = None if weights == "current" else jax.tree.map(jnp.copy, params)
  teacher = self_distill.SelfDistill(weights, None if weights == "current" else graph, 0.9,
                                     prompts)
  return tokenizer, graph, params, batch, teacher, copy


@functools.partial(jax.jit, static_argnames=("graph", "teacher", "divergence"))
def loss_and_grad(graph, params, teacher_params, batch, teacher, divergence="generalized_jsd"):
  objective = Objective(divergence=divergences.get(divergence))
  def loss(p):
    return step_lib.loss_terms({"student": p}, teacher_params, batch, 2.0, student_graph=graph,
                               teacher=teacher, objective=objective)[0]
  return jax.value_and_grad(loss)(params)


def test_the_teachers_prompt_holds_the_reference_and_the_students_does_not():
  tokenizer, _, _, batch, _, _ = setup("Reference solution: {reference}\n{prompt}")
  for b, example in enumerate(EXAMPLES):
    student = tokenizer.decode(batch["prompt_tokens"][b][batch["prompt_mask"][b]])
    teacher = tokenizer.decode(batch["teacher_prompt_tokens"][b][batch["teacher_prompt_mask"][b]])
    assert teacher == f"Reference solution: {example['response']}\n{example['prompt']}"
    assert student == example["prompt"] and example["response"] not in student
  # {answer} and a cut: a prompt longer than the budget keeps BOS and its end.
  _, _, _, batch, _, _ = setup("{answer}|{prompt}", length=6)
  row = batch["teacher_prompt_tokens"][0]
  assert row[0] == tokenizer.bos_id and tokenizer.decode(row[1:]) == "2+30="  # of 42|12+30=


@pytest.mark.parametrize("divergence", ["generalized_jsd", "reverse_kl"])
def test_nothing_privileged_and_current_weights_give_zero_loss_and_gradient(divergence):
  _, graph, params, batch, teacher, _ = setup("{prompt}")
  value, grads = loss_and_grad(graph, params, None, batch, teacher, divergence)
  assert abs(float(value)) < 1e-9
  assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads)) < 1e-7
  # The check can fail: with the reference in the teacher's prompt neither is 0.
  _, graph, params, batch, teacher, _ = setup("{reference} {prompt}")
  value, grads = loss_and_grad(graph, params, None, batch, teacher, divergence)
  assert float(value) > 1e-5
  assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads)) > 1e-4


def test_gradients_flow_through_the_students_side_only():
  """The step's gradient equals that of the divergence to the teacher's logits taken as
  constants (computed apart from the same weights): nothing reaches the weights through the
  teacher's pass."""
  _, graph, params, batch, teacher, _ = setup("{reference} {prompt}")
  _, grads = loss_and_grad(graph, params, None, batch, teacher)
  view = {"prompt_tokens": batch["teacher_prompt_tokens"],
          "prompt_mask": batch["teacher_prompt_mask"],
          "response_tokens": batch["response_tokens"], "response_mask": batch["response_mask"]}
  fixed = jax.jit(lambda p: scoring.response_logits(nnx.merge(graph, p), view))(params)

  def student_only(p):
    logits = scoring.response_logits(nnx.merge(graph, p), batch)
    return objectives.distillation_loss(logits, fixed, batch["response_tokens"],
                                        batch["response_mask"], Objective(), weight=2.0)[0]
  expected = jax.jit(jax.grad(student_only))(params)
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


def test_a_frozen_copy_scores_with_its_own_weights():
  _, graph, params, batch, teacher, copy = setup("{reference} {prompt}", weights="initial")
  same, _ = loss_and_grad(graph, params, copy, batch, teacher)
  current = self_distill.SelfDistill("current", prompts=teacher.prompts)
  np.testing.assert_allclose(same, loss_and_grad(graph, params, None, batch, current)[0],
                             rtol=1e-5)
  moved = jax.tree.map(lambda x: x + 0.05, params)  # the student moved, the copy did not
  value, _ = loss_and_grad(graph, moved, copy, batch, teacher)
  assert abs(float(value) - float(loss_and_grad(graph, moved, None, batch, current)[0])) > 1e-5


def test_ema_follows_by_its_decay():
  teacher = self_distill.SelfDistill("ema", ema_decay=0.9)
  assert teacher.moves and not self_distill.SelfDistill("initial").moves
  ema, student = {"w": jnp.asarray([1.0, 2.0])}, {"w": jnp.asarray([3.0, 0.0])}
  np.testing.assert_allclose(teacher.follow(ema, student)["w"], [1.2, 1.8], rtol=1e-6)


def _config(**overrides):
  c = helpers.smoke_gkd_config()
  c.teacher.update(source="self", self_template="{answer}|{prompt}", self_prompt_len=32)
  c.mix.update(dataset=0.0, teacher=0.0, student=1.0)
  return helpers.apply_overrides(c, overrides)


@pytest.mark.parametrize("overrides, message", [
    ({"teacher.self_template": "{reference}"}, "must hold {prompt}"),
    ({"teacher.self_template": "{prompt} {solution}"}, "may hold only"),
    ({"teacher.self_template": "{prompt"}, "not a valid template"),
    ({"teacher.self_weights": "best"}, "self_weights='best'"),
    ({"teacher.self_ema_decay": 1.0}, "self_ema_decay"),
    ({"mix.teacher": 0.5, "mix.student": 0.5}, "does not generate"),
    ({"teacher.source": "mine"}, "teacher.source='mine'"),
])
def test_config_errors_name_the_field(overrides, message):
  with pytest.raises(ConfigError, match=message):
    validate.validate(_config(**overrides))


def test_the_kind_is_chosen_by_teacher_source():
  assert teachers.kind_of(_config()) == "self"
  validate.validate(_config())
  validate.validate(_config(**{"objective.estimator": "sampled_token",
                               "objective.divergence": "reverse_kl"}))


@pytest.mark.e2e
def test_an_ema_run_resumes_exactly(tmp_path, shared_data_dir):
  """Four steps with the EMA teacher, checkpointed every step; cut back to step 2 and resumed,
  the run ends with the same student and the same EMA (both in the train state)."""
  config = _config(**{"teacher.self_weights": "ema", "teacher.self_ema_decay": 0.5})
  config.train.update(num_steps=4, checkpoint_every=1, keep_checkpoints=10, progress_bar=False)
  config.mesh.num_devices = 2
  straight = tmp_path / "straight"
  loop.train(config, str(straight))
  resumed = cut(straight, tmp_path / "resumed", 2)
  loop.train(config, str(resumed))
  a, b = final_state(straight), final_state(resumed)
  for x, y in zip(a, b, strict=True):
    np.testing.assert_array_equal(x, y)
  ckpt = checkpoint.Checkpointer(str(straight), every=1, keep=None)
  saved = ckpt._manager.restore(4, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  ckpt.close()
  ema, student = saved["state"]["teacher"], saved["state"]["params"]["student"]
  assert jax.tree.structure(ema) == jax.tree.structure(student)  # the EMA is checkpointed
  assert any(not np.array_equal(e, s) for e, s in zip(jax.tree.leaves(ema),
                                                      jax.tree.leaves(student)))
