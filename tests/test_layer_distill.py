"""Intermediate-layer distillation: parsing, the loss against NumPy, the layers it reads, a run."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gkd import scoring
from gkd.models import llama
from gkd.objectives import layer_distill
from tests import helpers


def test_parse_and_check():
  assert layer_distill.parse("0:1, 1:3") == ((0, 1), (1, 3))
  assert layer_distill.parse("") == ()
  with pytest.raises(ValueError, match="item '0-1'"):
    layer_distill.parse("0-1")
  with pytest.raises(ValueError, match="the student has blocks 0..1 and the teacher 0..3"):
    layer_distill.check(((2, 0),), 2, 4)
  with pytest.raises(ValueError, match="appears twice"):
    layer_distill.check(((0, 1), (0, 2)), 2, 4)


def _np_pair_total(hs, ht, mask, kind, proj):
  hs = hs @ proj if proj is not None else hs
  if kind == "mse":
    per = np.mean((hs - ht) ** 2, axis=-1)
  else:
    per = 1 - np.sum(hs * ht, -1) / (np.linalg.norm(hs, axis=-1) * np.linalg.norm(ht, axis=-1))
  seq = (per * mask).sum(1) / np.maximum(mask.sum(1), 1)  # "sequence": mean per sequence ...
  return seq[mask.any(1)].sum()  # ... summed over the sequences that have tokens


@pytest.mark.parametrize("kind", ["mse", "cosine"])
@pytest.mark.parametrize("widths", [(6, 6), (4, 6)])
def test_layer_loss_matches_numpy(kind, widths):
  ds, dt = widths
  rng = np.random.default_rng(0)
  s_layers = [rng.normal(size=(3, 5, ds)).astype(np.float32) for _ in range(2)]
  t_layers = [rng.normal(size=(3, 5, dt)).astype(np.float32) for _ in range(4)]
  mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], bool)
  pairs = ((0, 1), (1, 3))
  proj = layer_distill.init_projections(pairs, ds, dt, seed=0)
  assert (proj is None) == (ds == dt)
  got = layer_distill.layer_loss(s_layers, t_layers, jnp.asarray(mask), pairs, kind=kind,
                                 projections=proj)
  want = np.mean([_np_pair_total(s_layers[s], t_layers[t], mask, kind,
                                 None if proj is None else np.asarray(proj[i]))
                  for i, (s, t) in enumerate(pairs)])
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_response_layers_are_each_blocks_output_at_the_response_positions():
  model = llama.init_model(llama.PRESETS["tiny"].replace(n_layers=3), seed=0)
  rng = np.random.default_rng(1)
  batch = {"prompt_tokens": jnp.asarray(rng.integers(1, 200, (2, 4)), jnp.int32),
           "prompt_mask": jnp.ones((2, 4), bool),
           "response_tokens": jnp.asarray(rng.integers(1, 200, (2, 3)), jnp.int32),
           "response_mask": jnp.ones((2, 3), bool)}
  final, layers = nnx.jit(scoring.response_layers)(model, batch)
  assert len(layers) == 3 and final.shape == layers[0].shape == (2, 3, model.config.dim)

  @nnx.jit
  def by_hand(model, tokens):  # the blocks one at a time over prompt + response
    positions = jnp.broadcast_to(jnp.arange(7), (2, 7))
    causal = jnp.tril(jnp.ones((7, 7), bool))[None]
    x, outputs = model.embed_tokens(tokens), []
    for block in model.layers:
      x, _ = block(x, positions, causal)
      outputs.append(x)
    return model.final_norm(x), outputs

  tokens = jnp.concatenate([batch["prompt_tokens"], batch["response_tokens"]], axis=1)
  want_final, outputs = by_hand(model, tokens)
  for got, x in zip(layers, outputs):  # positions 3..5 are the response's
    np.testing.assert_allclose(got, x[:, 3:6], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(final, want_final[:, 3:6], rtol=1e-5, atol=1e-5)



def _config(**overrides):
  c = helpers.smoke_gkd_config()
  c.teacher.llama.update(n_layers=2)
  c.student.llama.update(dim=16)  # narrower than the teacher's 32: learned projections
  c.objective.update(layer_map="0:1", hidden_loss="cosine", hidden_weight=0.5)
  c.train.update(num_steps=3, checkpoint_every=0, progress_bar=False)
  c.optim.warmup_steps = 0  # the first step already moves the parameters
  c.mesh.num_devices = 1
  return helpers.apply_overrides(c, overrides)


@pytest.mark.e2e
def test_a_run_with_a_layer_map_trains_its_projection_and_exports_a_plain_student(tmp_path, shared_data_dir):
  from gkd.models import load_pretrained
  from gkd.rundir import read_jsonl
  from gkd.train import loop
  run = loop.Run(_config(), str(tmp_path / "a"))
  before = np.asarray(run.state.params["layer_projections"][0])
  assert before.shape == (16, 32) and "projection" not in run.state.params
  batch = run.make_batch(0, "dataset")
  state, metrics = run.train_step(run.state, batch, run.teacher_params)
  assert float(metrics["hidden_loss"]) > 0
  assert not np.allclose(state.params["layer_projections"][0], before)  # it is trained
  final = loop.train(_config(), str(tmp_path / "b"))
  rows = [r for r in read_jsonl(str(tmp_path / "b" / "metrics.jsonl")) if "loss" in r]
  assert rows and all(np.isfinite(r["hidden_loss"]) for r in rows) and "accuracy" in final
  student, _ = load_pretrained(str(tmp_path / "b" / "export"))
  assert student.config.dim == 16  # the projection stays behind


def test_layer_map_errors(tmp_path, shared_data_dir):
  from gkd.train import loop, validate
  with pytest.raises(validate.ConfigError, match="needs mode='gkd' and objective.hidden_loss"):
    validate.validate(_config(**{"objective.hidden_loss": ""}))
  with pytest.raises(ValueError, match="the student has blocks 0..0 and the teacher 0..1"):
    loop.Run(_config(**{"objective.layer_map": "1:0"}), str(tmp_path))
