"""Universal Logit Distillation (gkd.teachers.uld): NumPy references, invariants, errors, a training run."""

import jax.numpy as jnp
import numpy as np
import pytest
import tokenizers
from flax import nnx

from gkd import models
from gkd.data import tasks
from gkd.data.tasks import TESTBED_ALPHABET
from gkd.models import llama
from gkd.models import tokenizer as tok
from gkd.objectives import Objective
from gkd.objectives import uld as uld_loss
from gkd.teachers import build as build_models
from gkd.teachers import uld
from gkd.train import loop, validate
from tests import helpers

pytestmark = pytest.mark.usefixtures("shared_data_dir")




def _numpy_uld(zs, zt, temperature=1.0):
  """Σ_i |sort↓(p_s)_i − sort↓(p_t)_i| with the smaller vocabulary padded with zeros."""
  ps, pt = helpers.softmax64(zs / temperature), helpers.softmax64(zt / temperature)
  v = max(ps.shape[-1], pt.shape[-1])
  pad = lambda p: np.concatenate([p, np.zeros(p.shape[:-1] + (v - p.shape[-1],))], -1)  # noqa: E731
  return np.abs(-np.sort(-pad(ps), -1) - (-np.sort(-pad(pt), -1))).sum(-1)


RNG = np.random.default_rng(0)


@pytest.mark.parametrize("vs, vt", [(5, 8), (8, 5), (6, 6)])
def test_uld_distance_matches_numpy_across_vocabulary_sizes(vs, vt):
  zs, zt = RNG.normal(size=(2, 3, vs)) * 2, RNG.normal(size=(2, 3, vt)) * 3
  for temperature in (1.0, 1.5):
    got = uld_loss.uld_distance(student_logits=jnp.asarray(zs, jnp.float32),
                           teacher_logits=jnp.asarray(zt, jnp.float32), temperature=temperature)
    np.testing.assert_allclose(got, _numpy_uld(zs, zt, temperature), rtol=1e-5, atol=1e-6)


def test_uld_is_zero_for_one_distribution_up_to_permutation_and_zero_padding():
  zs = RNG.normal(size=(4, 6)) * 3
  permuted = zs[:, RNG.permutation(6)]
  padded = np.concatenate([permuted, np.full((4, 3), -np.inf)], -1)  # 3 tokens of probability 0
  for zt in (permuted, padded):
    got = uld_loss.uld_distance(student_logits=jnp.asarray(zs, jnp.float32),
                           teacher_logits=jnp.asarray(zt, jnp.float32))
    np.testing.assert_allclose(got, 0.0, atol=1e-6)
  other = uld_loss.uld_distance(student_logits=jnp.asarray(zs, jnp.float32),
                           teacher_logits=jnp.asarray(zs * 0.3, jnp.float32))
  assert np.all(np.asarray(other) > 1e-3)


def test_uld_loss_truncates_to_the_shorter_tokenization_and_adds_student_ce():
  zs, zt = RNG.normal(size=(2, 5, 6)), RNG.normal(size=(2, 4, 9))
  labels = RNG.integers(0, 6, (2, 5))
  s_mask = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], bool)  # 5 and 2 student tokens
  t_mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool)  # 3 and 4 teacher tokens
  loss, aux = uld_loss.uld_loss(jnp.asarray(zs, jnp.float32), jnp.asarray(zt, jnp.float32),
                           jnp.asarray(labels), jnp.asarray(s_mask), jnp.asarray(t_mask),
                           Objective(alpha=0.4, temperature=2.0))
  per = _numpy_uld(zs[:, :4], zt, 2.0)
  uld_mean = np.mean([per[0, :3].mean(), per[1, :2].mean()])  # aligned: min(5, 3), min(2, 4)
  ce = -np.log(np.take_along_axis(helpers.softmax64(zs), labels[..., None], -1)[..., 0])
  ce_mean = np.mean([ce[0].mean(), ce[1, :2].mean()])
  np.testing.assert_allclose(float(loss), 0.4 * 4.0 * uld_mean + 0.6 * ce_mean, rtol=1e-5)
  assert float(aux["aligned_tokens"]) == 5


def other_tokenizer() -> tok.Tokenizer:
  """A small BPE over the testbed's characters, numbered differently, with merged digit pairs."""
  vocab = {"<unk>": 0, "<bos>": 1, "<eos>": 2}
  for c in sorted(set(TESTBED_ALPHABET), reverse=True):
    vocab[c] = len(vocab)
  merges = [(a, b) for a in "0123456789" for b in "0123456789"] + [("A", "n"), ("An", "s")]
  for a, b in merges:
    vocab.setdefault(a + b, len(vocab))
  backend = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
  backend.add_special_tokens(["<unk>", "<bos>", "<eos>"])
  backend.decoder = tokenizers.decoders.Fuse()
  return tok.Tokenizer(backend, bos_id=1, eos_id=2, pad_id=2, unk_id=0)


def test_retokenize_keeps_the_text_and_the_eos():
  student, teacher = tasks.testbed_tokenizer(), other_tokenizer()
  prompt, response = student.encode("12+345=", add_bos=True), student.encode("357. Answer: 357")
  rows = {"prompt_tokens": np.array([[0] * 2 + prompt], np.int32),
          "prompt_mask": np.array([[False] * 2 + [True] * len(prompt)]),
          "response_tokens": np.array([response + [student.eos_id] + [0] * 3], np.int32),
          "response_mask": np.array([[True] * (len(response) + 1) + [False] * 3])}
  view = uld.retokenize(rows, student, teacher, prompt_len=6, response_len=20)
  p = view["teacher_prompt_tokens"][0][view["teacher_prompt_mask"][0]]
  r = view["teacher_response_tokens"][0][view["teacher_response_mask"][0]]
  assert p[0] == teacher.bos_id and teacher.decode(p) == "12+345="  # 6 teacher tokens fit
  assert r[-1] == teacher.eos_id and teacher.decode(r) == "357. Answer: 357"
  assert len(r) < len(response) + 1  # merged digit pairs: the two tokenizations differ


@pytest.fixture(scope="module")
def other_teacher(tmp_path_factory):
  """A tiny random teacher exported with `other_tokenizer` (a Hugging Face directory)."""
  path = str(tmp_path_factory.mktemp("other_teacher"))
  t = other_tokenizer()
  model = llama.Llama(llama.LlamaConfig(vocab_size=t.vocab_size, dim=32, n_layers=1, n_heads=2,
                                        n_kv_heads=1, ffn_dim=64, max_seq_len=128),
                      rngs=nnx.Rngs(1))
  models.save_pretrained(model, t, path)
  return path


def uld_config(teacher_path, **objective):
  c = helpers.smoke_gkd_config()
  c.mesh.num_devices = 1
  c.teacher.update(source="pretrained", path=teacher_path)
  c.objective.update({"cross_tokenizer": "uld", "alpha": 0.5, **objective})
  c.mix.update(dataset=0.5, teacher=0.0, student=0.5)
  c.train.update(num_steps=3, checkpoint_every=0, progress_bar=False)
  return c


def test_a_teacher_with_another_tokenizer_needs_uld(other_teacher):
  c = uld_config(other_teacher, cross_tokenizer="")
  with pytest.raises(validate.ConfigError, match="objective.cross_tokenizer='uld'"):
    build_models.build_models(c)
  # One vocabulary size, other token ids: refused too, token for token.
  same_size = tok.char_tokenizer(TESTBED_ALPHABET)
  backend = same_size.backend
  vocab = backend.get_vocab(with_added_tokens=True)
  swapped = {**vocab, "a": vocab["b"], "b": vocab["a"]}
  swapped_tok = tok.Tokenizer(tokenizers.Tokenizer(tokenizers.models.BPE(
      vocab=swapped, merges=[], unk_token=tok.UNK)), bos_id=1, eos_id=2, pad_id=0, unk_id=3)
  with pytest.raises(validate.ConfigError, match="objective.cross_tokenizer='uld'"):
    build_models.check_same_tokenizer(same_size, {"teacher": swapped_tok})
  build_models.check_same_tokenizer(same_size, {"teacher": tasks.testbed_tokenizer(), "student": None})


@pytest.mark.parametrize("change, message", [
    ({"alpha": 1.0}, "needs objective.alpha < 1"),
    ({"cross_tokenizer": "align"}, "objective.cross_tokenizer='align'"),
    ({"chunk_size": 8}, "objective.chunk_size=8"),
])
def test_bad_uld_configs_fail_clearly(other_teacher, change, message):
  with pytest.raises(validate.ConfigError, match=message):
    validate.validate(uld_config(other_teacher, **change))
  c = uld_config(other_teacher)
  c.teacher.source = "init"
  with pytest.raises(validate.ConfigError, match="ships its own tokenizer"):
    validate.validate(c)


@pytest.mark.e2e
def test_uld_trains_a_testbed_student_under_a_teacher_with_another_tokenizer(other_teacher, tmp_path):
  c = uld_config(other_teacher)
  c.optim.update(learning_rate=1e-2, warmup_steps=0, schedule="constant")
  run = loop.Run(c, str(tmp_path / "fixed"))
  assert run.tokenizer.vocab_size != run.teacher.teacher_tokenizer.vocab_size
  batch = run.make_batch(0, "student")  # on-policy samples, re-tokenized for the teacher
  losses = []
  for _ in range(8):
    run.state, metrics = run.train_step(run.state, batch, run.teacher_params)
    losses.append(float(metrics["loss"]))
  assert 0 < float(metrics["aligned_tokens"]) <= float(metrics["response_tokens"])
  assert losses[-1] < losses[0] and np.all(np.isfinite(losses))


@pytest.mark.slow
def test_uld_runs_end_to_end(other_teacher, tmp_path):
  final = loop.train(uld_config(other_teacher), str(tmp_path))  # data and on-policy steps, export
  assert np.isfinite(final["nll"]) and "forward_kl" not in final
