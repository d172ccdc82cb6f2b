"""The gate (gkd.eval.gate): each measure against a hand-computed case on tiny models.

A student that is its teacher must agree everywhere and never diverge. A student whose head has
the columns of two tokens a and b swapped computes the teacher's logits with a and b exchanged,
so its greedy path leaves the teacher's exactly at the first position where the teacher's greedy
token is a or b: the histogram must show those positions and nothing else.
"""

import gzip
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from gkd import sampling
from gkd.data import pipeline
from gkd.data import tasks
from gkd.eval import gate
from gkd.models import llama
from tests.helpers import ROOT, smoke_gkd_config

NUM = 16


def test_first_divergence_by_hand():
  a = np.array([[1, 2, 3, 0], [1, 2, 3, 0], [1, 2, 0, 0], [5, 6, 7, 8]])
  am = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1]], bool)
  b = np.array([[1, 2, 3, 0], [1, 9, 3, 0], [1, 2, 3, 0], [5, 6, 7, 9]])
  bm = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]], bool)
  # Same through EOS; a token differs at 1; one ended (EOS 0 at 2) while the other goes on; last.
  np.testing.assert_array_equal(gate.first_divergence(a, am, b, bm), [-1, 1, 2, 3])
  # Tokens after a row's mask ends do not count.
  np.testing.assert_array_equal(gate.first_divergence(a[2:3], am[2:3], a[2:3] + 4 * ~am[2:3], am[2:3]), [-1])


def test_extend_prompts_left_pads_prompt_and_prefix():
  prompt = np.array([[0, 0, 7, 8], [0, 5, 6, 7]], np.int32)
  pmask = np.array([[0, 0, 1, 1], [0, 1, 1, 1]], bool)
  prefix = np.array([[1, 2, 3], [4, 5, 6]], np.int32)
  tokens, mask = gate.extend_prompts(prompt, pmask, prefix, np.array([2, 0]), pad_id=0)
  np.testing.assert_array_equal(tokens, [[0, 0, 0, 7, 8, 1, 2], [0, 0, 0, 0, 5, 6, 7]])
  np.testing.assert_array_equal(mask, [[0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1, 1]])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  os.environ["GKD_DATA_DIR"] = str(tmp_path_factory.getbasetemp() / "tfds")
  c = smoke_gkd_config()
  c.data.max_response_len = 24
  tok = tasks.testbed_tokenizer()
  cfg = llama.LlamaConfig(vocab_size=tok.vocab_size, dim=32, n_layers=1, n_heads=2, n_kv_heads=1,
                          ffn_dim=64, max_seq_len=64, tie_embeddings=False)
  teacher = llama.Llama(cfg, rngs=nnx.Rngs(3))
  return c, tok, teacher


def run_gate(setup, student, **sampling_config):
  c, tok, teacher = setup
  c = c.copy_and_resolve_references()
  c.sampling.update(sampling_config)
  g = gate.Gate(c, tok, teacher, student, prefix_lengths=(2, 4, 8))
  rows = g.run(NUM, batch_size=8)
  return rows, gate.summarize(rows, (2, 4, 8), max_position=c.data.max_response_len)


def swapped_head(model, a: int, b: int):
  """A copy of `model` whose output head has token a's and token b's columns exchanged."""
  graph, state = nnx.split(model)
  state = jax.tree.map(lambda x: x, state)
  kernel = np.array(state["lm_head"]["kernel"][...])
  kernel[:, [a, b]] = kernel[:, [b, a]]
  state["lm_head"]["kernel"] = nnx.Param(kernel)
  return nnx.merge(graph, state)


def test_a_student_that_is_its_teacher_never_diverges(setup):
  _, _, teacher = setup
  rows, m = run_gate(setup, teacher)
  assert m["num_examples"] == NUM
  assert m["agreement"]["exact"] == 1.0 and m["agreement"]["token"] == 1.0
  assert m["first_divergence"]["never"] == 1.0 and sum(m["first_divergence"]["histogram"]) == 0
  assert all(r["teacher"] == r["student"] for r in rows)
  # Continuing its own prefix, the teacher writes what it wrote from scratch.
  for r in rows:
    for score in r["from_prefix"].values():
      assert score == r["teacher_score"]
  assert m["recovery"]["pooled_prefixes"] == 0
  assert m["verdict"] == "cannot_rank" and "same_path" in m["reasons"]
  assert "too_few_divergences" in m["reasons"]


def teacher_greedy_paths(setup):
  """The teacher's greedy tokens and masks on the gate's batches, sampled directly."""
  c, tok, teacher = setup
  loader = pipeline.loader_for_config(c, tok, split="validation", batch_size=8, shuffle=False,
                                      num_epochs=1, num_examples=NUM)
  outs = [sampling.sample(teacher, b["prompt_tokens"], b["prompt_mask"], rng=jax.random.key(0),
                          max_new_tokens=c.data.max_response_len, temperature=0.0,
                          eos_id=tok.eos_id, pad_id=tok.pad_id) for b in loader]
  return (np.concatenate([np.asarray(o.tokens) for o in outs]),
          np.concatenate([np.asarray(o.mask) for o in outs]))


def test_a_swapped_head_diverges_where_the_teacher_writes_either_token(setup):
  c, tok, teacher = setup
  tokens, mask = teacher_greedy_paths(setup)
  # a: a token on some but not all of the teacher's paths; b: another ordinary character.
  written = [set(t[m].tolist()) for t, m in zip(tokens, mask)]
  ordinary = [i for i in range(4, tok.vocab_size)]
  a = max(ordinary, key=lambda i: (sum(i in w for w in written) < NUM, sum(i in w for w in written)))
  b = next(i for i in tok.encode("#Qz") if i != a)
  hits = np.isin(tokens, [a, b]) & mask
  expected = np.where(hits.any(-1), hits.argmax(-1), -1)
  assert (expected >= 0).any() and (expected < 0).any()  # both kinds of row occur
  rows, m = run_gate(setup, swapped_head(teacher, a, b))
  np.testing.assert_array_equal([r["first_divergence"] for r in rows], expected)
  np.testing.assert_array_equal(
      m["first_divergence"]["histogram"],
      np.bincount(expected[expected >= 0], minlength=c.data.max_response_len))
  assert m["agreement"]["exact"] == m["first_divergence"]["never"] == np.mean(expected < 0)
  # Teacher-forced on the teacher's path, the student's argmax differs exactly at a and b.
  assert m["agreement"]["token"] == pytest.approx(1 - hits.sum() / mask.sum())
  # A prefix that has not left the teacher's path is continued as the teacher would; the
  # diverged ones are what recovery pools.
  diverged = 0
  for r, e in zip(rows, expected):
    for k, score in r["from_prefix"].items():
      if e < 0 or e >= int(k):
        assert score == r["teacher_score"]
      else:
        diverged += 1
  assert m["recovery"]["pooled_prefixes"] == diverged


def test_student_sample_nll_of_a_uniform_student_is_log_v(setup):
  """A zero head makes every next-token distribution uniform (at any temperature): each sampled
  token costs log V nats, and the greedy path (token 0 every step) is never sampled."""
  _, tok, teacher = setup
  graph, state = nnx.split(teacher)
  state = jax.tree.map(lambda x: x, state)
  state["lm_head"]["kernel"] = nnx.Param(np.zeros_like(state["lm_head"]["kernel"][...]))
  uniform = nnx.merge(graph, state)
  log_v = np.log(teacher.config.vocab_size)
  for temperature in (1.0, 0.5):
    rows, m = run_gate(setup, uniform, temperature=temperature)
    s = m["student_samples"]
    assert s["nll_per_token"] == pytest.approx(log_v, rel=1e-5)
    assert s["nll_per_sequence"] == pytest.approx(np.mean([r["sample_tokens"] for r in rows]) * log_v,
                                                  rel=1e-5)
    assert s["equals_greedy"] == 0.0


def test_almost_greedy_sampling_is_near_deterministic(setup):
  _, _, teacher = setup
  _, m = run_gate(setup, teacher, temperature=1e-4)
  assert m["student_samples"]["equals_greedy"] == 1.0
  assert "near_deterministic" in m["reasons"]


def test_verdict_thresholds():
  m = {"agreement": {"exact": 0.5}, "student_samples": {"equals_greedy": 0.5},
       "recovery": {"rate": 0.5, "pooled_prefixes": 100}}
  assert gate.verdict(m)["verdict"] == "can_rank"
  m["recovery"]["rate"] = 0.1
  assert gate.verdict(m)["reasons"] == ["unrecoverable"]
  m["agreement"]["exact"], m["student_samples"]["equals_greedy"] = 0.95, 0.9
  assert gate.verdict(m)["reasons"] == ["same_path", "near_deterministic", "unrecoverable"]
  assert gate.verdict(m)["thresholds"] == gate.THRESHOLDS


@pytest.mark.e2e  # drives the command line
def test_cli_writes_gate_json(tmp_path, shared_data_dir):
  out = tmp_path / "sweep"
  env = dict(os.environ, PYTHONPATH=ROOT, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  proc = subprocess.run(
      [sys.executable, "-m", "gkd.eval.gate", "--config=configs/testbed.py:stage=gkd,runlocal=true",
       f"--out={out}", "--num_examples=4", "--prefix_lengths=2,4",
       "--config.data.max_response_len=8"], cwd=ROOT, env=env, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-2000:]
  report = json.loads((out / "gate.json").read_text())
  assert report["split"] == "validation" and report["num_examples"] == 4
  assert report["verdict"] in ("can_rank", "cannot_rank") and report["thresholds"] == gate.THRESHOLDS
  assert set(report["recovery"]["by_prefix_length"]) == {"2", "4"}
  assert report["setting"]["task"] == "arithmetic"
  with gzip.open(out / "gate_examples.jsonl.gz", "rt") as f:
    assert len(f.readlines()) == 4
  assert "gate.json" in proc.stdout
