"""Tests for gkd.scoring's per-token log-probabilities."""

import jax
import jax.numpy as jnp
import numpy as np

from gkd import scoring


def _numpy_label_logprobs(logits, labels):
  z = np.asarray(logits, np.float64)
  top = z.max(axis=-1, keepdims=True)
  logp = z - top - np.log(np.exp(z - top).sum(axis=-1, keepdims=True))
  return np.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]


def test_label_logprobs_match_numpy_and_their_gradient_is_onehot_minus_softmax():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 5, 700)).astype(np.float32) * 30  # spans ±100: needs the max shift
  logits[0, :, 10:] = -np.inf  # a row restricted to 10 entries (top-k)
  labels = rng.integers(0, 10, size=(3, 5))
  got = scoring.label_logprobs(jnp.asarray(logits), jnp.asarray(labels))
  np.testing.assert_allclose(got, _numpy_label_logprobs(logits, labels), rtol=1e-5, atol=1e-5)
  assert np.isfinite(np.asarray(got)).all()

  z = jnp.asarray(logits[1:])
  grad = jax.grad(lambda z: scoring.label_logprobs(z, jnp.asarray(labels[1:])).sum())(z)
  want = np.eye(700)[labels[1:]] - np.asarray(jax.nn.softmax(z, axis=-1))
  np.testing.assert_allclose(grad, want, atol=1e-6)
