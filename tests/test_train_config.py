"""Config validation, the per-step source coin, parameter sharding rules and the teacher cache."""

import collections

import numpy as np
import pytest

from gkd import sharding, sources
from gkd.sources.teacher import TeacherCache
from gkd.teachers import build
from gkd.train import defaults, validate
from tests.helpers import apply_overrides


def config(**overrides):
  return apply_overrides(defaults.default_config(), overrides)


def test_default_config_is_valid():
  validate.validate(config(), num_devices=8)


@pytest.mark.parametrize("overrides, message", [
    ({"objective.divergence": "kl_forward"}, "objective.divergence='kl_forward' is unknown"),
    ({"mix.student": 1.5, "mix.dataset": -0.5}, "mix.dataset=-0.5 must lie in [0, 1]"),
    ({"mix.student": 0.5}, "must sum to 1, got 1.5"),
    ({"objective.divergence_kw": {"beta": 1.2}}, "beta must lie in [0, 1], got 1.2"),
    ({"objective.divergence": "forward_kl", "objective.divergence_kw": {"beta": 0.5}},
     "divergence 'forward_kl' takes parameters none, got ['beta']"),
    ({"objective.temperature": 0.0}, "temperature must be a finite number > 0, got 0.0"),
    ({"objective.reduction": "mean"}, "reduction must be one of"),
    ({"train.batch_size": 12}, "train.batch_size=12 must be divisible by devices × grad_accum_steps = 8 × 1"),
    ({"optim.grad_accum_steps": 2, "train.batch_size": 8}, "= 8 × 2"),
    ({"mesh.fsdp": 3}, "mesh.fsdp=3 must divide the device count 8"),
    ({"teacher.source": "hub"}, "teacher.source='hub'"),
    ({"student.source": "pretrained"}, "student.source='pretrained' needs student.path"),
    ({"student.source": "derive"}, "needs exactly one of derive_every_k, derive_layers"),
    ({"mode": "sft", "mix.dataset": 0.0, "mix.student": 1.0}, "mode='sft' trains on the dataset only"),
    ({"train.keep_checkpoints": 0}, "train.keep_checkpoints=0 must be >= 1"),
    ({"optim.warmup_steps": -1}, "optim.warmup_steps=-1 must be >= 0"),
    ({"train.log_every": 0}, "train.log_every=0 must be >= 1"),
    ({"train.checkpoint_every": -1}, "train.checkpoint_every=-1 must be >= 0"),
])
def test_bad_configs_fail_clearly(overrides, message):
  with pytest.raises(validate.ConfigError) as e:
    validate.validate(config(**overrides), num_devices=8)
  assert message in str(e.value)


def test_sequence_lengths_must_fit_the_models():
  c = config(**{"data.max_prompt_len": 32, "data.max_response_len": 64})
  validate.check_lengths(c, {"student": 96, "teacher": 2048})
  with pytest.raises(validate.ConfigError, match=r"max_prompt_len \+ data.max_response_len = 32 \+ 64 "
                     "exceeds the student's max_seq_len=95"):
    validate.check_lengths(c, {"student": 95, "teacher": 2048})
  c.eval.max_new_tokens = 100
  with pytest.raises(validate.ConfigError, match="eval.max_new_tokens = 32 \\+ 100 exceeds the teacher's"):
    validate.check_lengths(c, {"student": 2048, "teacher": 128})


def test_vocab_mismatch_fails_clearly():
  with pytest.raises(validate.ConfigError, match="student vocab_size=100 differs from the teacher's 120"):
    build.check_vocab(120, 100, 90)
  with pytest.raises(validate.ConfigError, match="tokenizer has 130 tokens but the models only 120"):
    build.check_vocab(120, 120, 130)


def test_source_coin_is_deterministic_and_matches_the_mix():
  mix = {"dataset": 0.2, "teacher": 0.3, "student": 0.5}
  draws = [sources.source_for_step(0, s, mix) for s in range(1500)]
  assert draws == [sources.source_for_step(0, s, mix) for s in range(1500)]  # resumable
  counts = collections.Counter(draws)
  for name, p in mix.items():  # binomial: 4 standard deviations
    assert abs(counts[name] / 1500 - p) < 4 * np.sqrt(p * (1 - p) / 1500), (name, counts)
  assert draws != [sources.source_for_step(1, s, mix) for s in range(1500)]  # the seed matters


@pytest.mark.parametrize("lam, expected", [(0.0, {"dataset"}), (1.0, {"student"})])
def test_source_coin_extremes(lam, expected):
  mix = {"dataset": 1 - lam, "teacher": 0.0, "student": lam}
  assert {sources.source_for_step(3, s, mix) for s in range(200)} == expected


def test_fsdp_spec_splits_the_largest_divisible_dim():
  assert sharding.param_spec((576, 49152), 4) == sharding.P(None, "fsdp")
  assert sharding.param_spec((49152, 576), 4) == sharding.P("fsdp", None)
  assert sharding.param_spec((1536, 576), 1) == sharding.P()  # data parallel: replicated
  assert sharding.param_spec((576,), 4) == sharding.P()  # small: replicated
  assert sharding.param_spec((577, 131), 4) == sharding.P()  # nothing divides


def test_teacher_cache_keeps_first_generation_and_round_trips():
  cache = TeacherCache()
  cache.add([5, 7], np.array([[1, 2], [3, 4]]), np.array([[1, 1], [1, 0]], bool))
  cache.add([7, 9], np.array([[9, 9], [5, 6]]), np.array([[1, 1], [1, 1]], bool))
  assert not cache.missing([9, 5]) and cache.missing([5, 8])
  tokens, mask = cache.lookup([7, 9])
  np.testing.assert_array_equal(tokens, [[3, 4], [5, 6]])  # 7 kept its first generation
  restored = TeacherCache()
  restored.load_state_dict(cache.state_dict())
  np.testing.assert_array_equal(restored.lookup([5, 7, 9])[1], cache.lookup([5, 7, 9])[1])


def test_parse_arg():
  arg = defaults.parse_arg("steps=5,lam=0.5,runlocal=true", steps=100, lam=1.0, runlocal=False)
  assert (arg.steps, arg.lam, arg.runlocal) == (5, 0.5, True)
  with pytest.raises(ValueError, match="expected key=value"):
    defaults.parse_arg("nope=1", steps=1)
