"""Scoring a batch's responses with a model: the hidden states and logits that predict them.

A batch holds left-padded prompts [B, P] and right-padded responses [B, R] (with boolean
masks). The model reads the concatenated sequence; logits at position t predict token t+1,
so the response tokens are predicted by the hidden states at [P-1, P+R-1). Only those
positions reach the vocabulary head. Used by the train step and the evaluator alike.
"""

import jax
import jax.numpy as jnp

# The arrays a train/eval batch carries into jitted code (loaders add host-side bookkeeping too).
BATCH_KEYS = ("prompt_tokens", "prompt_mask", "response_tokens", "response_mask")


def sequence_inputs(batch):
  """The inputs that predict the response: prompt and response concatenated, without the
  response's last token, which predicts nothing (tokens, attention mask: [B, P+R−1])."""
  tokens = jnp.concatenate([batch["prompt_tokens"], batch["response_tokens"][:, :-1]], axis=1)
  mask = jnp.concatenate([batch["prompt_mask"], batch["response_mask"][:, :-1]], axis=1)
  return tokens, mask


def response_layers(model, batch):
  """(final hidden, each block's output), all [B, R, D] at the positions predicting the response."""
  tokens, mask = sequence_inputs(batch)
  return model.hidden_states(tokens, attention_mask=mask,
                             keep_from=batch["prompt_tokens"].shape[1] - 1)


def response_hidden(model, batch):
  """Final hidden states at the positions that predict the response tokens: [B, R, D]."""
  return response_layers(model, batch)[0]


def head(hidden, kernel):
  """Logits [B, R, V] in float32 from hidden states of any dtype."""
  return jnp.einsum("btd,dv->btv", hidden, kernel.astype(hidden.dtype),
                    preferred_element_type=jnp.float32)


def response_logits(model, batch):
  """The model's logits [B, R, V] for each response position (float32)."""
  return head(response_hidden(model, batch), model.unembed_kernel())


def token_scores(model, batch):
  """Per-response-token log-probabilities log p(y_t | y_<t, x) under `model`: [B, R] float32."""
  return label_logprobs(response_logits(model, batch), batch["response_tokens"])


def label_logprobs(logits, labels):
  """log softmax(logits)[label] [...] from logits [..., V], as z[label] − logsumexp(z).

  A full log-softmax would write a [..., V] array only to read one entry per position; at a
  large vocabulary skipping it shows in the teacher's scoring time (experiments/README.md,
  "Figures behind code choices").
  """
  label_logits = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
  return label_logits - jax.nn.logsumexp(logits, axis=-1)
