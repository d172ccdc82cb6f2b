"""Chat templates of Hugging Face tokenizers, rendered with Jinja the way transformers renders them.

transformers compiles a model's template in a sandboxed Jinja environment with trim_blocks and
lstrip_blocks, the loop-control extension and `{% generation %}` blocks (which mark assistant
text and render as their body), a `tojson` filter that keeps non-ASCII characters, and the
globals `raise_exception` and `strftime_now`. The template sees `messages` (each message's
reasoning under `reasoning_content` too, whichever of the usual names it came under),
`add_generation_prompt`, `tools` and `documents`, the special tokens by name (`bos_token`,
`eos_token`, ...) and any extra keyword, such as Qwen3's `enable_thinking`. Doing the same here
keeps a prompt gkd builds equal, token for token, to the one the model was trained on.
"""

from __future__ import annotations

import datetime
import functools
import json

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

_REASONING = ("reasoning_content", "thinking", "reasoning")


class _Generation(jinja2.ext.Extension):
  """`{% generation %}...{% endgeneration %}`: renders the enclosed text unchanged."""

  tags = {"generation"}

  def parse(self, parser):
    lineno = next(parser.stream).lineno
    body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
    return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

  def _body(self, caller):
    return caller()


def _raise(message):
  raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
  return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                    sort_keys=sort_keys)


@functools.lru_cache(maxsize=16)
def compile_template(source: str) -> jinja2.Template:
  """The compiled template (cached: a data pipeline renders one template many times)."""
  env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                      extensions=[_Generation, jinja2.ext.loopcontrols])
  env.filters["tojson"] = _tojson
  env.globals["raise_exception"] = _raise
  env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
  try:
    return env.from_string(source)
  except jinja2.exceptions.TemplateSyntaxError as e:
    raise ValueError(f"The chat template is not valid Jinja (line {e.lineno}): {e.message}") from e


def _with_reasoning_aliases(message: dict) -> dict:
  reasoning = next((message[k] for k in _REASONING if message.get(k) is not None), None)
  if reasoning is None:
    return dict(message)
  return {"thinking": reasoning, **message, "reasoning_content": reasoning}


def render(source: str, messages, *, add_generation_prompt: bool, special_tokens: dict,
           **kwargs) -> str:
  """The prompt text of `messages` under the Jinja template `source`.

  `special_tokens`: {"bos_token": "<s>", ...} for the tokens the tokenizer defines; keywords
  override them. A template's own `raise_exception` (e.g. roles that do not alternate)
  becomes a ValueError with its message.
  """
  try:
    return compile_template(source).render(
        messages=[_with_reasoning_aliases(m) for m in messages], tools=None, documents=None,
        add_generation_prompt=add_generation_prompt, **{**special_tokens, **kwargs})
  except jinja2.exceptions.TemplateError as e:
    raise ValueError(f"The chat template refused these messages: {e}") from e
