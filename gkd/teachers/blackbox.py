"""Black-box teachers: responses of a model we cannot run (an API), imported as a teacher store.

    python -m gkd.teachers.blackbox --config=configs/X.py[:ARG] --jsonl=FILE --out=DIR

FILE holds one line per response: {"prompt": str, "response": str}, optionally with
"logprobs" in the per-token form APIs return (OpenAI's `logprobs.content`): a list over the
response's tokens of {"token": str, "logprob": float, "top_logprobs": [{"token": str,
"logprob": float}, ...]}. A prompt may have several lines (several samples); every prompt then
needs the same number n, and the run sets sampling.num_samples=n.

The import writes a `gkd.teachers.store_writer` store of kind "import" that a run reads with
`teacher_store=DIR` and mix.teacher=1 (sequence-level KD on the imported responses):

  * Prompts are matched by their text to the config's training split (its first
    data.num_train_examples); every split example with that prompt gets the response(s).
  * Without log-probs the store has k = 0 and the run trains on the hard CE (objective.alpha=0).
  * With log-probs each API token must be one token of the run's tokenizer, and the chosen
    tokens must spell the run's tokenization of the response. k is the largest number of
    distinct tokens seen at a position (the chosen one and its alternatives); a position with
    fewer leaves its other slots absent (−inf, see divergences.topk_bucket_logprobs). The
    response's EOS position has targets only if the API scored an end token (its last
    token is the tokenizer's EOS); otherwise only the hard CE applies there.

Any mismatch (unknown prompt, a token that is not one of ours, a misspelt response, a line
without "prompt" or "response", a log-prob that is not a finite number <= 0, an uneven number
of samples) is reported by line, in line order, in one message, and nothing is written.
"""

from __future__ import annotations

import collections
import json
import math

import numpy as np

from gkd.data.pipeline import encode_example, eval_examples_for_config
from gkd.errors import DataError, MissingFile
from gkd.teachers import store

MAX_REPORTED = 20


def _token_id(tokenizer, text: str, specials: dict) -> int | None:
  """Our id of one API token string, or None when it is not exactly one of our tokens.
  Special tokens (BOS, EOS, ...) go by their names in `specials`, as APIs print them."""
  if text in specials:
    return specials[text]
  try:
    ids = tokenizer.encode(text)
  except ValueError:
    return None
  return ids[0] if len(ids) == 1 else None


def _targets(tokenizer, logprobs, ours: list[int], specials):
  """(per-position {id: logprob} for the response positions the API scored, problem or None).
  `ours` is the run's tokenization of the whole response, without EOS."""
  if not isinstance(logprobs, list):
    return None, "'logprobs' must be a list with one entry per response token."
  chosen = [_token_id(tokenizer, e.get("token", ""), specials) if isinstance(e, dict) else None
            for e in logprobs]
  if None in chosen:
    bad = logprobs[chosen.index(None)].get("token")
    return None, f"token {bad!r} (position {chosen.index(None)}) is not one token of this tokenizer."
  scored_eos = chosen[len(ours):] == [tokenizer.eos_id]
  if chosen[:len(ours)] != ours or len(chosen) not in (len(ours), len(ours) + scored_eos):
    first = next((i for i, (a, b) in enumerate(zip(chosen, ours)) if a != b), min(len(chosen), len(ours)))
    return None, (f"the tokens do not spell the response as this tokenizer splits it (first "
                  f"difference at position {first}: {len(chosen)} API tokens, {len(ours)} ours).")
  targets = []
  for position, (entry, token) in enumerate(zip(logprobs, chosen)):
    try:
      seen = {token: float(entry["logprob"])}
      for alt in entry.get("top_logprobs") or []:
        alt_id = _token_id(tokenizer, alt["token"], specials)
        if alt_id is not None:  # an alternative we cannot name only leaves mass in the tail
          seen[alt_id] = max(seen.get(alt_id, -np.inf), float(alt["logprob"]))
    except (KeyError, TypeError, ValueError, AttributeError):
      return None, (f"logprobs[{position}] is malformed: expected {{'token', 'logprob', "
                    "'top_logprobs': [{'token', 'logprob'}, ...]}.")
    bad = [lp for lp in seen.values() if not (math.isfinite(lp) and lp <= 0)]
    if bad:
      return None, (f"logprobs[{position}] holds the log-prob {bad[0]}; a log-prob is a finite "
                    "number <= 0.")
    targets.append(seen)
  return targets, None


def _lines(path: str):
  """(line number, text) of FILE's non-blank lines; a DataError names the file or the line
  that cannot be read."""
  try:
    with open(path, "rb") as f:
      data = f.read()
  except FileNotFoundError:
    raise MissingFile(f"--jsonl={path}: no such file.") from None
  except OSError as e:
    raise DataError(f"--jsonl={path}: cannot read it ({e.strerror or e}).") from None
  for number, raw in enumerate(data.splitlines(), start=1):
    try:
      text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
      raise DataError(f"{path}:{number}: not valid UTF-8 ({e.reason}); save the file as "
                      "UTF-8.") from None
    if text.strip():
      yield number, text


def import_jsonl(config, path: str, out: str, *, repair: bool = False) -> dict:
  """Imports FILE into the store DIR (see the module docstring); returns its store.json
  contents. `repair` rewrites a damaged shard of an earlier import of the same file."""
  from gkd.teachers.build import build_all  # the model stack, only when importing

  importing = config.copy_and_resolve_references()
  importing.teacher_store = out  # the tokenizer and the student only: no teacher model to load
  tokenizer, _, _, student = build_all(importing)
  d = config.data
  examples = eval_examples_for_config(config, "train", d.num_train_examples or None)
  by_prompt = collections.defaultdict(list)
  for i, ex in enumerate(examples):
    by_prompt[ex["prompt"]].append(i)
  specials = {tokenizer.backend.id_to_token(i): i for i in
              (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id, tokenizer.unk_id) if i is not None}

  problems, lines = [], collections.defaultdict(list)  # [(line, text)], prompt -> [(line, record)]
  for number, text in _lines(path):
    try:
      record = json.loads(text)
    except json.JSONDecodeError as e:
      problems.append((number, f"not JSON ({e.msg})."))
      continue
    if not isinstance(record, dict) or not isinstance(record.get("prompt"), str) \
        or not isinstance(record.get("response"), str):
      problems.append((number, "needs string fields 'prompt' and 'response'."))
    elif record["prompt"] not in by_prompt:
      problems.append((number, f"prompt {record['prompt'][:60]!r} is not in {d.task}/train "
                               f"(first {len(examples)} examples)."))
    else:
      lines[record["prompt"]].append((number, record))
  counts = collections.Counter(len(v) for v in lines.values())
  n = counts.most_common(1)[0][0] if counts else 1
  for prompt, entries in lines.items():
    if len(entries) != n:
      problems.append((entries[0][0], f"its prompt has {len(entries)} responses; most prompts "
                                      f"have {n} (every prompt needs the same number)."))

  rows = []  # (key, prompt ids, response ids as the run cuts them, targets per position or None)
  with_logprobs = any("logprobs" in r for entries in lines.values() for _, r in entries)
  for prompt, entries in lines.items():
    for sample, (number, record) in enumerate(entries):
      targets = None
      if with_logprobs:  # against the whole response: the cut to max_response_len comes after
        targets, problem = _targets(tokenizer, record.get("logprobs"),
                                    tokenizer.encode(record["response"]), specials)
        if problem:
          problems.append((number, problem))
          continue
      for example in by_prompt[prompt]:
        messages = examples[example].get("messages")
        row = encode_example(tokenizer, prompt, record["response"], max_prompt_len=d.max_prompt_len,
                             max_response_len=d.max_response_len, chat_template=d.chat_template,
                             messages=json.loads(messages) if messages else None,
                             source=f"{path}:{number}")
        rows.append((example * n + sample, row["prompt_tokens"][row["prompt_mask"]],
                     row["response_tokens"][row["response_mask"]], targets))
  if problems:
    problems.sort(key=lambda p: p[0])
    more = f"; ... and {len(problems) - MAX_REPORTED} more" if len(problems) > MAX_REPORTED else ""
    raise DataError(f"{path}: {len(problems)} problem(s), nothing imported: "
                    + "; ".join(f"line {n}: {what.rstrip('.')}" for n, what in
                                problems[:MAX_REPORTED]) + more + ".")

  k = max((len(t) for *_, targets in rows for t in targets or []), default=0)
  records = [(key, store.encode_record(key, prompt, response, *_arrays(targets, len(response), k),
                                               student.config.vocab_size))
             for key, prompt, response, targets in rows]
  meta = {"format": store.FORMAT, "kind": "import", "topk": k, "samples_per_prompt": n,
          "temperature": 1.0, "vocab_size": student.config.vocab_size, "num_examples": len(examples),
          "data": store.data_fingerprint(config), "source": path}
  store.write_meta(out, meta)
  store.check_shards(out, "import", repair=repair)
  if not store.done_shards(out):
    store.write_shard(out, 0, records)
  covered = len({key // n for key, *_ in rows})
  print(f"{out}: imported {len(lines)} prompts × {n} responses, covering {covered} of "
        f"{len(examples)} training examples; top-k size {k}.", flush=True)
  return meta


def _arrays(targets, length: int, k: int):
  """(log-probs f32[length, k], ids int32[length, k]) sorted by log-prob; absent slots −inf."""
  logprobs, ids = np.full((length, k), -np.inf, np.float32), np.zeros((length, k), np.int32)
  for position, seen in enumerate((targets or [])[:length]):
    ranked = sorted(seen.items(), key=lambda item: -item[1])
    ids[position, :len(ranked)] = [i for i, _ in ranked]
    logprobs[position, :len(ranked)] = [lp for _, lp in ranked]
  return logprobs, ids


def main(argv):
  del argv
  from absl import flags
  import_jsonl(flags.FLAGS.config, flags.FLAGS.jsonl, flags.FLAGS.out, repair=flags.FLAGS.repair)


def cli():
  """The command line (`python -m gkd.blackbox`; flags are defined here, not at import)."""
  from absl import flags
  from ml_collections import config_flags

  from gkd import cli

  config_flags.DEFINE_config_file("config", None, "The run's config (data, tokenizer, student).")
  flags.DEFINE_string("jsonl", None, "The teacher's responses: one JSON line per response.")
  flags.DEFINE_string("out", None, "The store's directory.")
  flags.DEFINE_bool("repair", False, "Rewrite a damaged shard of an earlier import.")
  flags.mark_flags_as_required(["config", "jsonl", "out"])
  cli.run(main)


if __name__ == "__main__":
  cli()
