"""A tiny stand-in for a vLLM server, for the scorer teacher's tests: POST /v1/completions with
`echo` and `logprobs` answers as vLLM does (one choice per prompt of token ids, token_logprobs
with a null first entry, then one generated token), computed by a gkd model, so the log-probs
are checkable. It can be told to fail: after some requests, for a number of them, and how."""

from __future__ import annotations

import http.server
import json
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

WIDTH = 256  # sequences are right-padded to this many tokens (causal: padding changes nothing)


class FakeVLLM:
  """Serves a model (graphdef, params) on 127.0.0.1 at `url` while open (a context manager).

  failure: None, or how requests fail once `ok_requests` have been answered: "503" (HTTP 503),
  "400" (HTTP 400), "sleep" (answers after `sleep_s`), "garbage" (not JSON), "no_choices",
  "short" (too few token_logprobs), "positive" (a log-prob above 0); `failures` of them (None:
  all that follow).
  """

  def __init__(self, graph, params, *, failure=None, ok_requests=0, failures=None, sleep_s=1.0):
    self.model = nnx.merge(graph, params)
    self.failure, self.ok_requests, self.failures, self.sleep_s = (failure, ok_requests,
                                                                   failures, sleep_s)
    self.requests = 0
    self._logprobs = jax.jit(lambda tokens: jax.nn.log_softmax(
        self.model(tokens).astype(jnp.float32), axis=-1))
    server = self

    class Handler(http.server.BaseHTTPRequestHandler):
      def log_message(self, *args):  # quiet
        pass

      def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        status, payload = server.answer(self.path, body)
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

  def __enter__(self):
    threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
    return self

  def __exit__(self, *exc):
    self.httpd.shutdown()
    self.httpd.server_close()

  def _failing(self) -> bool:
    n = self.requests - self.ok_requests  # this request's place among those after the ok ones
    return self.failure is not None and n >= 1 and (self.failures is None or n <= self.failures)

  def answer(self, path: str, body: dict):
    self.requests += 1
    if path != "/v1/completions":
      return 404, {"error": f"no route {path}"}
    if self._failing():
      if self.failure == "503":
        return 503, {"error": "overloaded"}
      if self.failure == "400":
        return 400, {"error": "bad request"}
      if self.failure == "sleep":
        time.sleep(self.sleep_s)
      if self.failure == "garbage":
        return 200, b"<html>gateway</html>"
      if self.failure == "no_choices":
        return 200, {"object": "text_completion"}
    choices = []
    for i, ids in enumerate(body["prompt"]):
      tokens = np.zeros((1, WIDTH), np.int32)
      tokens[0, :len(ids)] = ids
      lp = np.asarray(self._logprobs(jnp.asarray(tokens)))[0]
      values = [None] + [float(lp[t - 1, ids[t]]) for t in range(1, len(ids))]
      nxt = int(np.argmax(lp[len(ids) - 1]))
      values.append(float(lp[len(ids) - 1, nxt]))  # the one generated token (max_tokens=1)
      if self._failing() and self.failure == "short":
        values = values[:len(ids) // 2]
      if self._failing() and self.failure == "positive":
        values[1] = 0.5
      choices.append({"index": i, "text": "", "finish_reason": "length",
                      "logprobs": {"token_logprobs": values, "tokens": [str(t) for t in ids]}})
    return 200, {"object": "text_completion", "model": body.get("model"), "choices": choices}
