"""The scorer teacher (gkd.teachers.scorer) against a live local server (tests/fake_vllm.py): its
log-probs are the model's, failures give one clear line naming the URL, failed requests are
retried, and a run whose server goes down stops at a checkpoint and resumes exactly."""

import socket

import jax
import numpy as np
import pytest
from flax import nnx

from gkd import hosts, sharding, teachers
from gkd.errors import ServiceError, UserError
from gkd.models import llama
from gkd.teachers import build as models_lib
from gkd.teachers.scorer import CompletionsScorer, Scorer, ScorerError
from gkd.train import loop, validate
from tests import helpers
from tests.fake_vllm import FakeVLLM
from tests.test_resume import final_state

V = 40


@pytest.fixture(scope="module")
def model():
  cfg = llama.LlamaConfig(vocab_size=V, dim=32, n_layers=2, n_heads=2, n_kv_heads=1,
                          ffn_dim=64, max_seq_len=64)
  graph, state = nnx.split(llama.Llama(cfg, rngs=nnx.Rngs(3)))
  return graph, state.to_pure_dict()


def batch():
  rng = np.random.default_rng(0)
  prompts, prompt_mask = helpers.left_pad([[1, 5, 7], [1, 9], [1, 4, 4, 2]], 5)
  tokens = rng.integers(3, V, (3, 6)).astype(np.int32)
  mask = np.arange(6)[None] < np.array([[6], [2], [0]])  # the last row has no response
  return {"prompt_tokens": np.asarray(prompts), "prompt_mask": np.asarray(prompt_mask),
          "response_tokens": tokens, "response_mask": mask}


def scorer(url, **kw):
  return CompletionsScorer(url, "tiny", **{"timeout_s": 5.0, "retries": 1, "backoff_s": 0.01,
                                           **kw})


def test_the_servers_logprobs_are_the_models(model):
  graph, params = model
  mesh = jax.make_mesh((1, 1), ("data", "fsdp"), devices=jax.devices()[:1])
  rows = batch()
  with FakeVLLM(graph, params) as server:
    teacher = Scorer(scorer(server.url, max_prompts=1))  # one request per scored row
    prepared = teacher.prepare(sharding.global_batch(mesh, rows), None, mesh)
    assert server.requests == 2  # the row without response tokens is not sent
  got = np.asarray(teacher.token_logprobs(None, prepared))
  want = np.asarray(teachers.Live(graph).token_logprobs(params, rows))
  mask = rows["response_mask"]
  np.testing.assert_allclose(got[mask], want[mask], atol=2e-5)
  assert np.all(got[~mask] == 0)


def one_line_error(fn, *match):
  with pytest.raises(ScorerError) as info:
    fn()
  message = str(info.value)
  assert "\n" not in message and isinstance(info.value, UserError)
  for m in match:
    assert m in message, message
  return message


def test_a_server_that_is_down_gives_one_line_naming_the_url():
  with socket.socket() as s:  # a port nobody listens on
    s.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{s.getsockname()[1]}"
  one_line_error(lambda: scorer(url).score([[1, 2, 3]]), f"teacher.url={url}", "no answer",
                 "2 tries", "Connection")


@pytest.mark.parametrize("failure, match", [
    ("garbage", "not JSON"),
    ("no_choices", "expected an answer with 1 choices"),
    ("short", "token_logprobs for a 3-token prompt"),
    ("positive", "not a finite number <= 0"),
    ("400", "HTTP 400"),
])
def test_malformed_answers_give_one_line(model, failure, match):
  with FakeVLLM(*model, failure=failure) as server:
    one_line_error(lambda: scorer(server.url).score([[1, 2, 3]]), server.url, match)
    assert server.requests == 1  # what a retry cannot fix is not retried


def test_a_slow_server_times_out_and_is_retried(model):
  with FakeVLLM(*model, failure="sleep", sleep_s=1.0) as server:
    one_line_error(lambda: scorer(server.url, timeout_s=0.2).score([[1, 2, 3]]), "timed out")
    assert server.requests == 2


def test_a_failed_request_is_retried(model):
  with FakeVLLM(*model, failure="503", failures=2) as server:
    got = scorer(server.url, retries=2).score([[1, 2, 3], [1, 4]])
    assert server.requests == 3 and [len(g) for g in got] == [2, 1]
  with FakeVLLM(*model, failure="503") as server:
    one_line_error(lambda: scorer(server.url, retries=2).score([[1, 2]]), "HTTP 503", "3 tries")


def run_config(**overrides):
  c = helpers.smoke_gkd_config()
  c.objective.update(estimator="sampled_token", divergence="reverse_kl")
  c.mesh.num_devices = 2
  # Only the last step is checkpointed: a failing server forces the one save of the step it
  # stops at (with the data iterator put back to before that step's batch).
  c.train.update(checkpoint_every=0, progress_bar=False)
  return helpers.apply_overrides(c, overrides)


def scorer_config(url, **overrides):
  return run_config(**{"teacher.source": "scorer", "teacher.url": url,
                       "teacher.served_model": "teacher", "teacher.retries": 1,
                       "teacher.backoff_s": 0.01, **overrides})


@pytest.mark.parametrize("overrides, message", [
    ({"teacher.url": ""}, "teacher.url"),
    ({"teacher.served_model": ""}, "teacher.served_model"),
    ({"objective.estimator": "full"}, "set objective.estimator='sampled_token'"),
    ({"teacher.timeout_s": 0.0}, "teacher.timeout_s must be > 0"),
])
def test_config_errors_name_the_field(overrides, message):
  from gkd.errors import ConfigError
  with pytest.raises(ConfigError, match=message):
    validate.validate(scorer_config("http://localhost:8000", **overrides))
  assert teachers.kind_of(scorer_config("http://localhost:8000")) == "scorer"


@pytest.mark.e2e
def test_runs_with_a_server_match_the_live_teacher_and_resume_after_it_fails(tmp_path,
                                                                            shared_data_dir):
  """The run's teacher (a random model) served by the fake server: the scorer run ends where a
  live-teacher run with the sampled-token estimator does; a run whose server fails from the
  third request on stops at step 2 with one line, and rerun against a working server ends with
  exactly the straight scorer run's state."""
  live = run_config()
  loop.train(live, str(tmp_path / "live"))
  teacher = models_lib.build(live).teachers[0]
  graph, state = nnx.split(teacher)
  with FakeVLLM(graph, state.to_pure_dict()) as server:
    loop.train(scorer_config(server.url), str(tmp_path / "scorer"))
  for a, b in zip(final_state(tmp_path / "live"), final_state(tmp_path / "scorer"), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)

  with FakeVLLM(graph, state.to_pure_dict(), failure="503", ok_requests=2) as down:
    with pytest.raises(ServiceError) as info:
      loop.train(scorer_config(down.url), str(tmp_path / "resumed"))
  assert "Saved step 2" in str(info.value) and "\n" not in str(info.value)
  with FakeVLLM(graph, state.to_pure_dict()) as server:
    loop.train(scorer_config(server.url), str(tmp_path / "resumed"))
  for a, b in zip(final_state(tmp_path / "scorer"), final_state(tmp_path / "resumed"),
                  strict=True):
    np.testing.assert_array_equal(a, b)


@pytest.mark.e2e
def test_a_failure_on_another_process_stops_this_one_at_the_same_step(tmp_path, shared_data_dir,
                                                                       monkeypatch):
  """Processes of a multi-host run ask the server on their own; when another process's request
  failed (hosts.all_agree says so), this one puts its data back and stops too, instead of going
  on to a collective the other never reaches."""
  teacher = models_lib.build(run_config()).teachers[0]
  graph, state = nnx.split(teacher)
  with FakeVLLM(graph, state.to_pure_dict()) as server:
    run = loop.Run(scorer_config(server.url), str(tmp_path / "run"))
    before = run.loader.get_state()
    monkeypatch.setattr(hosts, "all_agree", lambda ok: False)
    with pytest.raises(ServiceError, match="another process"):
      run.make_batch(0, "student")
  assert run.loader.get_state() == before
