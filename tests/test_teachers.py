"""Several teachers (gkd.teachers.ensemble): both losses against NumPy, one-teacher equivalence, a run."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gkd import divergences, sharding, teachers
from gkd.objectives import Objective
from gkd.teachers import build as build_models
from gkd.teachers import ensemble
from gkd.train import defaults, loop, validate
from tests import helpers

pytestmark = pytest.mark.usefixtures("shared_data_dir")




def _kl(p, q):
  return np.sum(p * (np.log(p) - np.log(q)), -1)


# Hand-made logits: 3 teachers, batch 2, 4 positions, vocabulary 5; one row half masked.
RNG = np.random.default_rng(0)
STUDENT = RNG.normal(size=(2, 4, 5)) * 2
TEACHERS = [RNG.normal(size=(2, 4, 5)) * 3 for _ in range(3)]
WEIGHTS = (0.5, 0.3, 0.2)
LABELS = RNG.integers(0, 5, (2, 4))
MASK = np.array([[1, 1, 1, 1], [1, 1, 0, 0]], bool)


def _reference(per_position, alpha, temperature):
  """α·T²·mean-per-sequence(div) + (1−α)·mean-per-sequence(CE at T=1), as float64 NumPy."""
  ps = helpers.softmax64(STUDENT)
  ce = -np.log(np.take_along_axis(ps, LABELS[..., None], -1)[..., 0])
  def seq_mean(v):
    return np.mean([v[b][MASK[b]].mean() for b in range(2)])
  return alpha * temperature**2 * seq_mean(per_position) + (1 - alpha) * seq_mean(ce)


def _loss(combine, name, alpha=0.7, temperature=2.0):
  objective = Objective(divergence=divergences.get(name), alpha=alpha, temperature=temperature)
  loss, metrics = ensemble.combined_loss(
      jnp.asarray(STUDENT, jnp.float32), [jnp.asarray(t, jnp.float32) for t in TEACHERS],
      jnp.asarray(LABELS), jnp.asarray(MASK), objective, weights=WEIGHTS, combine=combine)
  return float(loss), metrics


def test_mixture_logits_average_the_probabilities():
  m = ensemble.mixture_logits([jnp.asarray(t, jnp.float32) for t in TEACHERS], WEIGHTS, 2.0)
  expected = sum(w * helpers.softmax64(t / 2.0) for w, t in zip(WEIGHTS, TEACHERS))
  np.testing.assert_allclose(helpers.softmax64(np.asarray(m) / 2.0), expected, rtol=1e-5)


@pytest.mark.parametrize("name", ["forward_kl", "reverse_kl"])
def test_mixture_loss_matches_numpy(name):
  t = 2.0
  q = helpers.softmax64(STUDENT / t)
  pbar = sum(w * helpers.softmax64(z / t) for w, z in zip(WEIGHTS, TEACHERS))
  div = _kl(pbar, q) if name == "forward_kl" else _kl(q, pbar)
  np.testing.assert_allclose(_loss("mixture", name)[0], _reference(div, 0.7, t), rtol=1e-5)


@pytest.mark.parametrize("name", ["forward_kl", "reverse_kl"])
def test_sum_loss_matches_numpy(name):
  t = 2.0
  q = helpers.softmax64(STUDENT / t)
  divs = [_kl(helpers.softmax64(z / t), q) if name == "forward_kl" else _kl(q, helpers.softmax64(z / t))
          for z in TEACHERS]
  loss, metrics = _loss("sum", name)
  np.testing.assert_allclose(loss, _reference(sum(w * d for w, d in zip(WEIGHTS, divs)), 0.7, t),
                             rtol=1e-5)
  np.testing.assert_allclose(float(metrics["divergence/teacher_1"]), _reference(divs[1], 1.0, 1.0),
                             rtol=1e-5)


def test_forward_kl_sum_and_mixture_have_the_same_gradient():
  # Σ_k w_k KL(p_k‖q) = KL(p̄‖q) + a constant in q: the two losses differ, their gradients do not.
  def grad(combine):
    objective = Objective(divergence=divergences.get("forward_kl"), alpha=1.0)
    return jax.grad(lambda s: ensemble.combined_loss(
        s, [jnp.asarray(t, jnp.float32) for t in TEACHERS], jnp.asarray(LABELS),
        jnp.asarray(MASK), objective, weights=WEIGHTS, combine=combine)[0])(
            jnp.asarray(STUDENT, jnp.float32))
  np.testing.assert_allclose(grad("sum"), grad("mixture"), atol=1e-6)
  assert _loss("sum", "forward_kl")[0] > _loss("mixture", "forward_kl")[0]  # Jensen


def _smoke(**teacher_list):
  c = helpers.smoke_gkd_config()
  c.mesh.num_devices = 1
  c.train.update(num_steps=3, checkpoint_every=0, progress_bar=False)
  c.update(teacher_list)
  return c


def _two_teachers(combine="mixture"):
  base = _smoke().teacher
  c = _smoke(teachers=[defaults.model_config(**base, weight=2.0),
                       defaults.model_config(**base, weight=1.0)])
  c.objective.multi_teacher = combine
  return c


def test_a_list_of_one_teacher_builds_the_single_teacher_run():
  # teachers=[t] must be teacher=t: the same weights (seed + 1) and the plain single-teacher
  # graph, hence the same jitted step on the same inputs (the slow test below trains both).
  built = {}
  for name, c in {"single": _smoke(),
                  "list": _smoke(teachers=[defaults.model_config(**_smoke().teacher, weight=3.0)])
                  }.items():
    built[name] = teachers.from_config(c, build_models.build(c), sharding.make_mesh(c))
  (g1, p1), (g2, p2) = built["single"], built["list"]
  assert isinstance(g2, teachers.Live) and g1 == g2
  jax.tree.map(np.testing.assert_array_equal, p1, p2)


@pytest.mark.slow
def test_a_list_of_one_teacher_trains_exactly_as_the_single_teacher(tmp_path):
  runs = {}
  for name, c in {"single": _smoke(),
                  "list": _smoke(teachers=[defaults.model_config(**_smoke().teacher, weight=3.0)])
                  }.items():
    run = loop.Run(c, str(tmp_path / name))
    losses = []
    for step in range(2):
      run.state, metrics = run.train_step(run.state, run.make_batch(step, "student"),
                                          run.teacher_params)
      losses.append(float(metrics["loss"]))
    runs[name] = losses, jax.tree.leaves(run.state.params)
  assert runs["list"][0] == runs["single"][0]
  for a, b in zip(runs["list"][1], runs["single"][1]):
    np.testing.assert_array_equal(a, b)


@pytest.mark.e2e
def test_two_teachers_score_on_policy_samples_and_eval_reports_each(tmp_path):
  run = loop.Run(_two_teachers(), str(tmp_path))
  assert isinstance(run.teacher, ensemble.Ensemble) and len(run.teacher_params) == 2
  run.state, metrics = run.train_step(run.state, run.make_batch(0, "student"), run.teacher_params)
  assert np.isfinite(float(metrics["loss"])) and float(metrics["divergence"]) > 0
  final = run.evaluate().metrics
  kls = [final["forward_kl/teacher_0"], final["forward_kl/teacher_1"]]
  assert all(np.isfinite(kls)) and kls[0] != kls[1]  # two teachers (seeds seed+1, seed+2)
  assert 0 < final["forward_kl"] < max(kls)  # the mixture sits between them (convexity)


@pytest.mark.slow
@pytest.mark.parametrize("combine", ["mixture", "sum"])
def test_two_teachers_distil_end_to_end(tmp_path, combine):
  c = _two_teachers(combine)
  c.mix.update(dataset=0.0, teacher=0.5, student=0.5)  # SeqKD from the first teacher, on-policy
  final = loop.train(c, str(tmp_path))
  assert np.isfinite(final["forward_kl/teacher_0"]) and np.isfinite(final["forward_kl/teacher_1"])


@pytest.mark.parametrize("change, message", [
    ({"objective.multi_teacher": "vote"}, "objective.multi_teacher='vote'"),
    ({"teachers.0.weight": 0.0}, "teachers[0].weight=0.0"),
    ({"teachers.1.source": "derive"}, "teachers[1].source='derive'"),
    ({"objective.chunk_size": 16}, "objective.chunk_size=16 takes a single teacher"),
])
def test_bad_teacher_lists_fail_clearly(change, message):
  c = _smoke(teachers=[defaults.model_config(weight=1.0), defaults.model_config(weight=1.0)])
  (key, value), = change.items()
  node, *path = key.split(".")
  target = c[node]
  for part in path[:-1]:
    target = target[int(part)] if part.isdigit() else target[part]
  target[path[-1]] = value
  with pytest.raises(validate.ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
    validate.validate(c)
