"""A teacher that only scores: per-token log-probs from a server (`teacher.source = "scorer"`).

The sampled-token estimator (gkd.objectives.sampled_token) needs one number per response token
from the teacher, log p_T(y_t | y_<t, x), so the teacher can be a model behind an inference
server that the run never loads. `TokenScorer` is what such a teacher must answer;
`CompletionsScorer` asks an OpenAI-compatible completions endpoint as vLLM serves it: POST
`{teacher.url}/v1/completions` with the prompt + response as a list of token ids, `echo=true`,
`logprobs=1` and `max_tokens=1`, and reads `choices[i].logprobs.token_logprobs` (the log-prob
of each echoed token given the ones before it; the first is null and the generated token is
dropped). The server must use the student's tokenizer: ids are sent as they are. (Old vLLM
versions returned wrong prompt log-probs with prefix caching on; serve with it off.)

The scores are fetched on the host in `prepare`, once per step for the whole global batch
(`teacher.max_prompts` sequences per request), and enter the jitted step as the batch key
"teacher_token_logprobs". A request that times out, cannot connect or gets an HTTP 5xx/429 is
retried `teacher.retries` times with exponential back-off from `teacher.backoff_s`. When every
try fails, or the server answers something that is not the expected JSON, a `ScorerError`
names the URL and what was wrong, in one line; the training loop then stops at a checkpoint of
the last finished step, and rerunning the command resumes exactly.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import math
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from gkd import scoring, sharding
from gkd.errors import ServiceError
from gkd.teachers.base import Teacher

SCORES = "teacher_token_logprobs"  # the batch key of the server's scores [B, R]


class ScorerError(ServiceError):
  """The scoring server could not be reached or answered malformed data."""


class TokenScorer(Protocol):
  def score(self, sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
    """For each token-id sequence t, float32[len(t) − 1]: log p(t_i | t_<i) for i ≥ 1."""


@dataclasses.dataclass(frozen=True)
class CompletionsScorer:
  """A `TokenScorer` over an OpenAI-compatible /v1/completions endpoint (see the module doc)."""

  url: str
  model: str
  timeout_s: float = 60.0
  retries: int = 3
  backoff_s: float = 1.0
  max_prompts: int = 64

  @property
  def endpoint(self) -> str:
    base = self.url.rstrip("/")
    if base.endswith("/completions"):
      return base
    return base + ("/completions" if base.endswith("/v1") else "/v1/completions")

  def _error(self, what: str) -> ScorerError:
    return ScorerError(f"teacher.url={self.url}: {what}")

  def score(self, sequences):
    out = []
    for start in range(0, len(sequences), self.max_prompts):
      chunk = [[int(t) for t in seq] for seq in sequences[start:start + self.max_prompts]]
      answer = self._post({"model": self.model, "prompt": chunk, "echo": True, "logprobs": 1,
                           "max_tokens": 1, "temperature": 0.0})
      out += self._parse(answer, chunk)
    return out

  def _post(self, body: dict) -> dict:
    """The server's JSON answer, retrying what may pass (no connection, time-outs, 5xx, 429)."""
    data, last = json.dumps(body).encode(), ""
    for attempt in range(self.retries + 1):
      if attempt:
        time.sleep(self.backoff_s * 2 ** (attempt - 1))
      request = urllib.request.Request(self.endpoint, data=data, method="POST",
                                       headers={"Content-Type": "application/json"})
      try:
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
          raw = response.read()
      except urllib.error.HTTPError as e:
        last = f"HTTP {e.code} {e.reason}"
        if e.code < 500 and e.code != 429:  # the request itself is wrong: a retry cannot help
          detail = e.read()[:200].decode("utf-8", "replace").replace("\n", " ")
          raise self._error(f"{last} from {self.endpoint}: {detail}") from None
        continue
      except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException,
              OSError) as e:
        reason = getattr(e, "reason", e)
        last = f"{type(reason).__name__}: {reason}".replace("\n", " ")
        continue
      try:
        return json.loads(raw)
      except ValueError:
        raise self._error(f"{self.endpoint} answered with something that is not JSON: "
                          f"{raw[:80]!r}") from None
    raise self._error(f"no answer from {self.endpoint} after {self.retries + 1} tries, "
                      f"{self.timeout_s:g} s each (last: {last}).")

  def _parse(self, answer, sequences) -> list[np.ndarray]:
    """Each sequence's echoed log-probs from a completions answer, checked."""
    choices = answer.get("choices") if isinstance(answer, dict) else None
    if not isinstance(choices, list) or len(choices) != len(sequences):
      raise self._error(f"expected an answer with {len(sequences)} choices, got "
                        f"{_shape_of(choices)} in {json.dumps(answer)[:120]}.")
    by_index = {}
    for position, choice in enumerate(choices):
      index = choice.get("index", position) if isinstance(choice, dict) else position
      by_index[index] = choice
    out = []
    for i, seq in enumerate(sequences):
      choice = by_index.get(i)
      logprobs = (choice or {}).get("logprobs") or {}
      values = logprobs.get("token_logprobs") if isinstance(logprobs, dict) else None
      if not isinstance(values, list) or len(values) < len(seq):
        raise self._error(f"choice {i} holds {_shape_of(values)} token_logprobs for a "
                          f"{len(seq)}-token prompt; is echo with logprobs supported?")
      echoed = values[1:len(seq)]
      if not all(isinstance(v, (int, float)) and math.isfinite(v) and v <= 1e-3 for v in echoed):
        bad = next(v for v in echoed if not (isinstance(v, (int, float)) and math.isfinite(v)
                                              and v <= 1e-3))
        raise self._error(f"choice {i} has a token log-prob {bad!r}, not a finite number <= 0.")
      out.append(np.asarray(echoed, np.float32))
    return out


def _shape_of(value) -> str:
  return f"{len(value)}" if isinstance(value, list) else f"no list ({type(value).__name__})"


@dataclasses.dataclass(frozen=True)
class Scorer(Teacher):
  """A teacher behind a scoring server (host side: its `TokenScorer` client)."""

  client: TokenScorer = dataclasses.field(compare=False, default=None)

  kind = "scorer"
  scores_tokens = True
  calls_service = True

  @classmethod
  def check(cls, config) -> list[str]:
    t = config.teacher
    if config.mode != "gkd" or t.source != "scorer":
      return []
    why = "teacher.source='scorer'"
    problems = [
        (not str(t.get("url", "")).startswith(("http://", "https://")),
         f"{why} needs teacher.url, the server's http(s):// address (got {t.get('url')!r})."),
        (not t.get("served_model", ""), f"{why} needs teacher.served_model, the model name the "
         "server serves."),
        (config.objective.get("estimator", "full") != "sampled_token", f"{why} gives one log-prob "
         "per token, not distributions: set objective.estimator='sampled_token'."),
        (bool(list(config.get("teachers", None) or [])) or bool(config.get("teacher_store", "")),
         f"{why} is the one teacher: leave config.teachers and teacher_store empty."),
        (config.mix.teacher > 0, f"{why} does not generate: set mix.teacher=0."),
        (not (t.get("timeout_s", 0) > 0 and t.get("retries", -1) >= 0
              and t.get("backoff_s", -1) >= 0 and t.get("max_prompts", 0) >= 1),
         "teacher.timeout_s must be > 0, retries and backoff_s >= 0, max_prompts >= 1."),
    ]
    return [message for bad, message in problems if bad]

  @classmethod
  def build(cls, config, built, mesh):
    del built, mesh
    t = config.teacher
    return cls(CompletionsScorer(t.url, t.served_model, timeout_s=float(t.timeout_s),
                                 retries=int(t.retries), backoff_s=float(t.backoff_s),
                                 max_prompts=int(t.max_prompts))), None

  def prepare(self, batch: dict, keys, mesh) -> dict:
    """The server's log-probs of every row's response tokens ([B, R], 0 off the mask)."""
    del keys
    rows = {k: sharding.fetch(batch[k]) for k in scoring.BATCH_KEYS}
    prompts = [p[m] for p, m in zip(rows["prompt_tokens"], rows["prompt_mask"])]
    responses = [r[m] for r, m in zip(rows["response_tokens"], rows["response_mask"])]
    scored = [b for b, r in enumerate(responses) if len(r)]
    scores = self.client.score([np.concatenate([prompts[b], responses[b]]) for b in scored])
    out = np.zeros(rows["response_tokens"].shape, np.float32)
    for b, values in zip(scored, scores):
      n, start = len(responses[b]), len(prompts[b]) - 1  # values[i] scores token i + 1
      out[b, np.flatnonzero(rows["response_mask"][b])] = values[start:start + n]
    return sharding.place_rows(mesh, {SCORES: out})

  def token_logprobs(self, params, batch, student=None):
    del params, student
    return batch[SCORES]

  def describe(self) -> str:
    return f"a scoring server ({self.client.endpoint})"
