"""Mixed precision: float32 master weights and optimizer state, bf16 compute, float32 loss."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gkd import models
from gkd.data import tasks
from gkd.models import llama
from gkd.teachers import build as bm
from gkd.train import loop
from tests.helpers import apply_overrides, forward, smoke_gkd_config

BF16 = {"student.dtype": "bfloat16", "teacher.dtype": "bfloat16"}


pytestmark = pytest.mark.usefixtures("shared_data_dir")


def smoke_config(**overrides):
  c = smoke_gkd_config()
  # Dataset responses only: both precisions then train on identical tokens, so the loss
  # curves are comparable step by step (sampled responses would diverge at the first token).
  c.mix.update(dataset=1.0, teacher=0.0, student=0.0)
  c.train.update(num_steps=4, checkpoint_every=0, progress_bar=False)
  c.optim.update(learning_rate=3e-3, warmup_steps=1)
  c.mesh.num_devices = 1
  return apply_overrides(c, overrides)


def _float_dtypes(tree):
  return {x.dtype for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)}


@pytest.mark.e2e
def test_bf16_run_keeps_float32_master_weights_and_optimizer_state(tmp_path):
  run = loop.Run(smoke_config(**BF16), str(tmp_path))
  assert run.student().config.dtype == "bfloat16"
  assert _float_dtypes(run.state.params) == {jnp.dtype(jnp.float32)}
  assert _float_dtypes(run.state.opt_state) == {jnp.dtype(jnp.float32)}
  assert _float_dtypes(run.teacher_params) == {jnp.dtype(jnp.bfloat16)}  # stored in bf16
  with jax.set_mesh(run.mesh):
    batch = run.make_batch(0, "dataset")
    state, metrics = run.train_step(run.state, batch, run.teacher_params)
  assert _float_dtypes(state.params) == _float_dtypes(state.opt_state) == {jnp.dtype(jnp.float32)}
  assert metrics["loss"].dtype == jnp.float32 and np.isfinite(float(metrics["loss"]))


def _train_steps(config, workdir, n):
  run = loop.Run(config, workdir)
  losses = []
  with jax.set_mesh(run.mesh):
    for step in range(n):
      run.state, metrics = run.train_step(run.state, run.make_batch(step, "dataset"), run.teacher_params)
      losses.append(float(metrics["loss"]))
  return losses, jax.device_get(run.state.params["student"])


@pytest.mark.e2e
def test_bf16_compute_tracks_float32_over_a_few_steps(tmp_path):
  """Same float32 weights (float32 storage for both models here, so the inits are identical),
  same dataset batches; only the compute dtype differs. Over 4 steps the bf16 loss stays
  within 1% of float32's and the weight updates within 10% of the updates' own size. bf16 keeps
  8 mantissa bits (relative rounding 2^-9 ≈ 0.2% per op); a few layers and the vocabulary-wide
  head compound that, but the float32 softmax and divergences keep it well under 1%."""
  mixed = dict(BF16, **{"teacher.param_dtype": "float32"})
  hard = {"objective.alpha": 0.5}  # half hard-label CE: a loss of order 1, not a tiny JSD alone
  f32, p32 = _train_steps(smoke_config(**hard), str(tmp_path / "f32"), 4)
  b16, p16 = _train_steps(smoke_config(**hard, **mixed), str(tmp_path / "bf16"), 4)
  assert len(set(f32)) == 4  # the loss moves: the comparison is not of a constant
  np.testing.assert_allclose(b16, f32, rtol=1e-2)
  vocab = tasks.testbed_tokenizer().vocab_size
  start = bm._load(smoke_config().student, "student", seed=0, vocab_size=vocab)[0]
  p0 = jax.tree.map(np.asarray, jax.tree.leaves(nnx.state(start, nnx.Param)))
  for a, b, c in zip(p0, jax.tree.leaves(p32), jax.tree.leaves(p16), strict=True):
    assert b.dtype == c.dtype == np.float32
    assert np.linalg.norm(c - b) <= 0.1 * np.linalg.norm(b - a) + 1e-7


def test_loaders_keep_float32_storage_under_bf16_compute(tmp_path):
  model = llama.init_model(llama.PRESETS["tiny"], seed=0)
  models.save_pretrained(model, tasks.testbed_tokenizer(), str(tmp_path))
  student, _ = models.load_pretrained(str(tmp_path), dtype="bfloat16", param_dtype="float32")
  teacher, _ = models.load_pretrained(str(tmp_path), dtype="bfloat16")
  assert _float_dtypes(llama.flat_params(student)) == {jnp.dtype(jnp.float32)}
  assert _float_dtypes(llama.flat_params(teacher)) == {jnp.dtype(jnp.bfloat16)}
  tokens = jnp.arange(12, dtype=jnp.int32).reshape(2, 6) % 200
  ref = forward(model, tokens)
  for m in (student, teacher):  # bf16 compute: float32 logits close to the float32 model's
    out = forward(m, tokens)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, ref, atol=0.05 * float(jnp.abs(ref).max()))


def test_derived_student_gets_float32_master_weights_from_a_bf16_teacher():
  c = smoke_config(**{"teacher.dtype": "bfloat16", "student.source": "derive",
                      "student.derive_every_k": 1, "student.dtype": "bfloat16"})
  _, teacher, student = bm.build_models(c)
  assert teacher.config.param_dtype == "bfloat16" and student.config.param_dtype == "float32"
  assert student.config.dtype == "bfloat16"
  t, s = llama.flat_params(teacher), llama.flat_params(student)
  np.testing.assert_array_equal(np.asarray(s["embed.embedding"]),
                                np.asarray(t["embed.embedding"], np.float32))


def test_sft_of_a_derived_student_reads_the_teacher_only_for_its_layers():
  c = smoke_config(**{"mode": "sft", "student.source": "derive", "student.derive_every_k": 1})
  _, teacher, student = bm.build_models(c)
  assert teacher is None  # SFT trains on the references: no teacher forward passes
  ref = smoke_config(**{"student.source": "derive", "student.derive_every_k": 1})
  _, gkd_teacher, _ = bm.build_models(ref)
  np.testing.assert_array_equal(np.asarray(llama.flat_params(student)["embed.embedding"]),
                                np.asarray(llama.flat_params(gkd_teacher)["embed.embedding"]))
