"""Black-box teachers (gkd.teachers.blackbox): an API-style JSONL import equals the live teacher's top-k,
mismatches are reported by line, and a run trains on the import."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from gkd.data import pipeline
from gkd.teachers import blackbox, store
from gkd.teachers import build as build_models
from gkd.train import loop
from tests import helpers

pytestmark = pytest.mark.usefixtures("shared_data_dir")
K = 3


def _config(**overrides):
  return helpers.offline_kd_config("teacher", 16, **overrides)


def _api_lines(config):
  """What an API would return for the split's prompts: the reference responses, scored by the
  teacher in OpenAI's logprobs form (token strings, the end token scored last)."""
  tokenizer, teacher, _ = build_models.build_models(config)
  special = {tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id, tokenizer.unk_id}
  loader = pipeline.loader_for_config(config, tokenizer, split="train", batch_size=16,
                                      shuffle=False, num_epochs=1, num_examples=16)
  batch = next(loader)
  logits = helpers.forward(
      teacher, jnp.concatenate([batch["prompt_tokens"], batch["response_tokens"]], 1),
      attention_mask=jnp.concatenate([batch["prompt_mask"], batch["response_mask"]], 1))
  p = batch["prompt_tokens"].shape[1]
  logp = np.log(helpers.softmax64(np.asarray(logits)[:, p - 1:-1]))
  name = lambda i: tokenizer.backend.id_to_token(i) if i in special else tokenizer.decode([i])
  lines = []
  for ex, row in zip(pipeline.eval_examples_for_config(config, "train", 16), range(16)):
    n = int(batch["response_mask"][row].sum())
    content = []
    for t in range(n):
      token = int(batch["response_tokens"][row, t])
      top = np.argsort(-logp[row, t])[:K]
      content.append({"token": name(token), "logprob": float(logp[row, t, token]),
                      "top_logprobs": [{"token": name(int(i)), "logprob": float(logp[row, t, i])}
                                       for i in top]})
    lines.append({"prompt": ex["prompt"], "response": ex["response"], "logprobs": content})
  return lines, batch, logp


def _write(path, lines):
  path.write_text("".join(json.dumps(line) + "\n" for line in lines))
  return str(path)


def test_an_api_import_holds_the_teachers_scored_tokens(tmp_path):
  config = _config()
  lines, batch, logp = _api_lines(config)
  blackbox.import_jsonl(config, _write(tmp_path / "api.jsonl", lines), str(tmp_path / "s"))
  opened = store.TeacherStore(str(tmp_path / "s"))
  rows = opened.lookup(batch["example_id"], batch["prompt_tokens"], batch["prompt_mask"],
                      batch["response_tokens"].shape[1])
  np.testing.assert_array_equal(rows["response_mask"], batch["response_mask"])
  for b in range(16):
    n = int(batch["response_mask"][b].sum())
    for t in range(n):  # each position: the top 3 and the chosen token, by log-prob
      chosen = int(batch["response_tokens"][b, t])
      want = sorted(set(np.argsort(-logp[b, t])[:K].tolist()) | {chosen}, key=lambda i: -logp[b, t, i])
      got = rows["teacher_topk_indices"][b, t][rows["teacher_topk_logprobs"][b, t] > -np.inf]
      np.testing.assert_array_equal(got, want)
      np.testing.assert_allclose(rows["teacher_topk_logprobs"][b, t, :len(want)],
                                 logp[b, t, want], rtol=1e-6)
  assert opened.topk == K + 1  # a chosen token outside the top 3 somewhere makes 4 distinct


def test_mismatches_are_reported_by_line_and_nothing_is_written(tmp_path):
  config = _config()
  lines, _, _ = _api_lines(config)
  bad = [dict(lines[0]), dict(lines[1], prompt="no such prompt"), dict(lines[2]),
         dict(lines[3]), {"prompt": lines[4]["prompt"]}]
  bad[2]["logprobs"] = [dict(e) for e in lines[2]["logprobs"]]
  bad[2]["logprobs"][1]["token"] = "Q" * 3  # three tokens of ours, not one
  bad[3]["response"] = lines[3]["response"] + "7"  # the API's tokens no longer spell it
  with pytest.raises(ValueError) as error:
    blackbox.import_jsonl(config, _write(tmp_path / "bad.jsonl", bad), str(tmp_path / "s"))
  message = str(error.value)
  assert "4 problem(s)" in message
  assert "line 2: prompt 'no such prompt' is not in" in message
  assert "line 3: token 'QQQ' (position 1) is not one token" in message
  assert "line 4: the tokens do not spell the response" in message
  assert "line 5: needs string fields 'prompt' and 'response'" in message
  assert not (tmp_path / "s").exists()
  uneven = [lines[0], lines[0], lines[1]]
  with pytest.raises(ValueError, match="line 3: its prompt has 1 responses; most prompts have 2"):
    blackbox.import_jsonl(config, _write(tmp_path / "uneven.jsonl", uneven), str(tmp_path / "s"))


@pytest.mark.e2e
def test_runs_train_on_imports_with_and_without_logprobs(tmp_path):
  config = _config()
  lines, _, _ = _api_lines(config)
  blackbox.import_jsonl(config, _write(tmp_path / "a.jsonl", lines), str(tmp_path / "topk"))
  text_only = [{"prompt": x["prompt"], "response": x["response"]} for x in lines]
  blackbox.import_jsonl(config, _write(tmp_path / "b.jsonl", text_only), str(tmp_path / "text"))
  assert store.TeacherStore(str(tmp_path / "text")).topk == 0
  final = loop.train(_config(teacher_store=str(tmp_path / "topk")), str(tmp_path / "run_topk"))
  assert np.isfinite(final["nll"])
  with pytest.raises(ValueError, match="set objective.alpha=0"):
    loop.train(_config(teacher_store=str(tmp_path / "text")), str(tmp_path / "run_text"))
  final = loop.train(_config(**{"teacher_store": str(tmp_path / "text"), "objective.alpha": 0.0}),
                     str(tmp_path / "run_text"))
  assert np.isfinite(final["nll"])
