"""Speculative KD's sampler against plain sampling and a step-by-step full-forward reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gkd import sampling
from gkd.models import llama
from gkd.sampling.speculative import SpeculativeOutput, SpeculativeSampler
from tests import helpers

TINY = llama.PRESETS["tiny"].replace(init_std=0.2)
V = TINY.vocab_size
NO_EOS = V - 1
ROWS = [[5, 17, 33], [9, 8, 7, 6, 5, 4, 3, 2], [100, 101, 102, 103, 104]]


@pytest.fixture(scope="module")
def models():
  return llama.init_model(TINY, seed=0), llama.init_model(TINY, seed=1)  # student, teacher




def _speculate(models, topk, *, eos=NO_EOS, teacher_temperature=1.0, rng=0, n=6):
  (sg, ss), (tg, ts) = (nnx.split(m) for m in models)
  spec = SpeculativeSampler(sg, tg, topk=topk, eos_id=eos, teacher_temperature=teacher_temperature)
  return spec(ss, ts, *helpers.left_pad(ROWS, 8), rng=jax.random.key(rng), max_new_tokens=n)


def test_topk_of_the_whole_vocabulary_replaces_nothing_and_equals_student_sampling(models):
  out = _speculate(models, V)
  plain = sampling.sample(models[0], *helpers.left_pad(ROWS, 8), rng=jax.random.key(0),
                          max_new_tokens=6, eos_id=NO_EOS)
  np.testing.assert_array_equal(out.tokens, plain.tokens)
  np.testing.assert_array_equal(out.mask, plain.mask)
  assert not out.replaced.any() and float(out.replacement_rate()) == 0.0


def test_top1_with_a_greedy_teacher_decodes_the_teachers_argmax(models):
  out = _speculate(models, 1, teacher_temperature=0.0)
  greedy = sampling.sample(models[1], *helpers.left_pad(ROWS, 8), rng=jax.random.key(5),
                           temperature=0.0, max_new_tokens=6, eos_id=NO_EOS)
  np.testing.assert_array_equal(out.tokens, greedy.tokens)
  assert out.replaced.any()  # two different random models disagree somewhere


def test_each_token_matches_a_full_forward_replay_of_propose_then_verify(models):
  """Replays every decode step from one cache-free forward pass per model over the final
  sequence (causal: position p+t-1 sees exactly the prefix of step t): the student's proposal
  from its logits and the sampler's key schedule, kept iff it is in the teacher's top-K."""
  k = V // 2  # two unrelated random models: about half the proposals survive
  out = _speculate(models, k, rng=3)
  prompt, pmask = helpers.left_pad(ROWS, 8)
  seq = jnp.concatenate([prompt, out.tokens], axis=1)
  smask = jnp.concatenate([pmask, out.mask], axis=1)
  s_all, t_all = (helpers.forward(m, seq, attention_mask=smask)[:, 7:-1] for m in models)
  rng = jax.random.key(3)
  plain = sampling.SamplerSettings(1)
  for t in range(out.tokens.shape[1]):
    rng, key = jax.random.split(rng)
    proposal = np.asarray(sampling.choose(s_all[:, t], key, plain)[0])
    drawn = np.asarray(sampling.choose(t_all[:, t], jax.random.fold_in(key, 1), plain)[0])
    t_logits = np.asarray(t_all[:, t])
    kth = np.sort(t_logits, axis=-1)[:, -k]
    outside = t_logits[np.arange(len(ROWS)), proposal] < kth
    np.testing.assert_array_equal(np.asarray(out.replaced[:, t]), outside)
    np.testing.assert_array_equal(np.asarray(out.tokens[:, t]), np.where(outside, drawn, proposal))
  assert out.mask.all() and 0 < float(out.replacement_rate()) < 1


def test_replacement_rate_counts_real_tokens_only():
  mask = jnp.asarray([[True, True, True, False], [True, True, False, False]])
  replaced = jnp.asarray([[True, False, True, False], [False, False, False, False]])
  out = SpeculativeOutput(jnp.zeros((2, 4), jnp.int32), mask, replaced)
  assert float(out.replacement_rate()) == pytest.approx(2 / 5)


def test_eos_from_either_model_ends_the_row(models):
  first = _speculate(models, 1, teacher_temperature=0.0)
  eos = int(first.tokens[0, 2])  # row 0's third token becomes EOS
  out = _speculate(models, 1, eos=eos, teacher_temperature=0.0)
  stop = int(np.argmax(np.asarray(out.tokens[0]) == eos))
  assert stop <= 2 and out.mask[0, :stop + 1].all() and not out.mask[0, stop + 1:].any()
  assert not out.replaced[0, stop + 1:].any()


def test_topk_below_one_is_refused(models):
  with pytest.raises(ValueError, match="speculative_topk must be >= 1"):
    _speculate(models, 0)



@pytest.mark.e2e
def test_a_testbed_run_with_speculative_kd_trains_and_logs_the_replacement_rate(tmp_path, shared_data_dir):
  from gkd.rundir import read_jsonl
  from gkd.train import loop
  from tests.helpers import smoke_gkd_config
  c = smoke_gkd_config()
  c.mix.update(dataset=0.5, teacher=0.0, student=0.5)
  c.sampling.speculative_topk = 4
  c.train.update(num_steps=4, checkpoint_every=0, progress_bar=False)
  c.mesh.num_devices = 1
  final = loop.train(c, str(tmp_path))
  rows = [r for r in read_jsonl(str(tmp_path / "metrics.jsonl")) if "loss" in r]
  on_policy = [r for r in rows if r["source"] == "student"]
  assert on_policy and all(0 <= r["skd_replacement_rate"] <= 1 for r in on_policy)
  assert not any("skd_replacement_rate" in r for r in rows if r["source"] != "student")
  assert np.isfinite([r["loss"] for r in rows]).all() and "accuracy" in final


@pytest.mark.parametrize("overrides, message", [
    ({"mix.student": 0.0, "mix.dataset": 1.0}, "needs K > 0, mode='gkd' and mix.student > 0"),
    ({"sampling.top_k": 5}, "leave sampling.top_k=0"),
    ({"objective.cross_tokenizer": "uld", "objective.alpha": 0.5, "teacher.source": "pretrained",
      "teacher.path": "any", "student.source": "init"},
     "cannot be combined with objective.cross_tokenizer"),
])
def test_speculative_kd_config_errors(overrides, message):
  from gkd.train import validate
  from tests.helpers import apply_overrides, smoke_gkd_config
  c = smoke_gkd_config()
  c.sampling.speculative_topk = 4
  with pytest.raises(validate.ConfigError, match=message):
    validate.validate(apply_overrides(c, overrides))
