"""experiments/opsd_reads_reference.py: its NLL of a reference against a per-example NumPy
log-softmax of the unpadded sequence, whatever the batch size."""

import importlib.util
import os

import numpy as np
import pytest

from tests import helpers

PATH = os.path.join(helpers.ROOT, "experiments", "opsd_reads_reference.py")


@pytest.fixture(scope="module")
def script():
  spec = importlib.util.spec_from_file_location("opsd_reads_reference", PATH)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_reference_nll_matches_each_unpadded_sequence_scored_alone(script):
  from gkd.teachers.build import build_models
  c = helpers.smoke_gkd_config()
  c.mesh.num_devices = 1
  _, _, student = build_models(c)
  rng = np.random.default_rng(0)
  prompts = [rng.integers(1, 50, n) for n in (3, 7, 5)]
  lengths = (4, 2, 6)
  tokens = rng.integers(1, 50, (3, 6)).astype(np.int32)
  mask = np.arange(6)[None] < np.array(lengths)[:, None]
  prompt_tokens, prompt_mask = helpers.left_pad(prompts, 8)
  got = [script.reference_nll(student, {"prompt_tokens": prompt_tokens, "prompt_mask": prompt_mask},
                              {"response_tokens": tokens, "response_mask": mask}, batch_size=b)
         for b in (1, 2, 3)]
  total = 0.0
  for p, t, n in zip(prompts, tokens, lengths):
    seq = np.concatenate([p, t[:n]])[None].astype(np.int32)
    logits = np.asarray(helpers.forward(student, seq))[0]
    logp = np.log(helpers.softmax64(logits))
    total -= sum(logp[len(p) - 1 + i, t[i]] for i in range(n))
  np.testing.assert_allclose(got, total / sum(lengths), rtol=2e-5)
