"""An offline teacher store: one teacher pass, written to disk, serves a whole sweep.

    python -m gkd.teacher_store --config=configs/X.py[:ARG] --out=DIR [--kind=teacher] [--topk=64]

writes, for every prompt of the config's training split (its first data.num_train_examples),
one response per sample key and, at each response position, the teacher's top-k log-probs
(at objective.temperature) and token ids:

  kind="dataset"  the dataset's responses, scored by the teacher: supervised (top-k) KD
  kind="teacher"  the teacher's own generations (sampling.teacher_temperature, top_k, top_p;
                  sampling.num_samples per prompt), scored by it: sequence-level KD
  kind="import"   responses from a teacher we cannot run (gkd.teachers.blackbox: a JSONL of prompt →
                  response, optionally with the API's per-token top-n log-probs)

A run reads it with `config.teacher_store=DIR` instead of building a teacher; eval then has no
teacher KLs. The format, the reader and the loss are in gkd.teachers.store. A shard holds the keys
of `shard_examples` consecutive examples; a killed writer resumes at the first missing shard,
and `--repair` rewrites the shards that no longer read back (and only those).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gkd import divergences, sampling, scoring
from gkd.data.pipeline import loader_for_config
from gkd.errors import ConfigError, UserError
from gkd.teachers.store import (
  FORMAT,
  check_shards,
  data_fingerprint,
  done_shards,
  encode_record,
  write_meta,
  write_shard,
)


@functools.partial(jax.jit, static_argnames=("graph", "k", "temperature"))
def _teacher_topk(params, batch, *, graph, k: int, temperature: float):
  logits = scoring.response_logits(nnx.merge(graph, params), batch)
  return divergences.teacher_topk(logits, k, temperature)


def write(config, out: str, *, kind: str, topk: int, shard_examples: int = 1024,
          batch_size: int = 32, repair: bool = False) -> dict:
  """Writes (or continues) the store of `config`'s teacher; returns its store.json contents.

  Batch b covers examples [b·batch_size, (b+1)·batch_size) in split order; its sampling key
  is folded from (seed, b), so a resumed writer draws what an uninterrupted one would, and
  `repair` (which first reads every record back and removes the shards that fail) rewrites
  exactly the shards it removed. Without it a damaged complete shard is a StoreError.
  """
  from gkd.teachers.build import build_all  # the training stack, only when writing

  if kind not in ("dataset", "teacher"):
    raise UserError(f"--kind={kind!r}; a teacher writes 'dataset' or 'teacher' stores "
                    "(imports: python -m gkd.blackbox).")
  if topk < 1 or batch_size < 1 or shard_examples % batch_size:
    raise UserError(f"need --topk >= 1 (got {topk}) and --shard_examples ({shard_examples}) a "
                    f"multiple of --batch_size ({batch_size}).")
  tokenizer, _, teacher, _ = build_all(config)
  if teacher is None:
    raise ConfigError("the config has no teacher to write a store of (mode must be 'gkd').")
  graph, params = nnx.split(teacher)
  params = params.to_pure_dict()
  n = int(config.sampling.num_samples) if kind == "teacher" else 1
  loader = loader_for_config(config, tokenizer, split="train", batch_size=batch_size,
                             shuffle=False, num_epochs=1,
                             num_examples=config.data.num_train_examples)
  num_examples = loader.num_examples
  meta = {"format": FORMAT, "kind": kind, "topk": topk, "samples_per_prompt": n,
          "temperature": float(config.objective.temperature), "vocab_size": teacher.config.vocab_size,
          "num_examples": num_examples, "shard_examples": shard_examples,
          "data": data_fingerprint(config), "seed": int(config.seed),
          "teacher": config.teacher.to_dict()}
  write_meta(out, meta)
  check_shards(out, kind, repair=repair)
  s = config.sampling
  sampler = sampling.Sampler(graph, temperature=s.teacher_temperature, top_k=s.top_k, top_p=s.top_p,
                             eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id)
  done, pending = done_shards(out), []
  per_shard = shard_examples // batch_size
  for b, local in enumerate(loader):
    shard = b // per_shard
    if shard in done:
      continue
    real = local["example_id"] >= 0
    batch = {k: jnp.asarray(np.repeat(local[k], n, axis=0)) for k in scoring.BATCH_KEYS}
    if kind == "teacher":
      key = jax.random.fold_in(jax.random.key(config.seed ^ 0x5701), b)
      gen = sampler(params, batch["prompt_tokens"], batch["prompt_mask"], rng=key,
                    max_new_tokens=batch["response_tokens"].shape[1])
      batch = dict(batch, response_tokens=gen.tokens, response_mask=gen.mask)
    lp, idx = jax.device_get(_teacher_topk(params, batch, graph=graph, k=topk,
                                           temperature=float(config.objective.temperature)))
    tokens, mask = np.asarray(batch["response_tokens"]), np.asarray(batch["response_mask"])
    for row in range(len(tokens)):
      example = int(local["example_id"][row // n])
      if not real[row // n]:
        continue
      length = int(mask[row].sum())
      prompt = local["prompt_tokens"][row // n][local["prompt_mask"][row // n]]
      pending.append((example * n + row % n,
                      encode_record(example * n + row % n, prompt, tokens[row, :length],
                                    lp[row, :length], idx[row, :length], meta["vocab_size"])))
    if (b + 1) % per_shard == 0 or (b + 1) * batch_size >= num_examples:
      write_shard(out, shard, pending)
      print(f"{out}: shard {shard} written ({min((b + 1) * batch_size, num_examples)}/"
            f"{num_examples} examples)", flush=True)
      pending = []
  return meta


def main(argv):
  del argv
  from absl import flags
  f = flags.FLAGS
  write(f.config, f.out, kind=f.kind, topk=f.topk, shard_examples=f.shard_examples,
        batch_size=f.batch_size, repair=f.repair)


def cli():
  """The command line (`python -m gkd.teacher_store`; flags are defined here, not at import)."""
  from absl import flags
  from ml_collections import config_flags

  from gkd import cli

  config_flags.DEFINE_config_file("config", None, "The teacher's run config (configs/NAME.py[:ARG]).")
  flags.DEFINE_string("out", None, "The store's directory (created; a partial one is continued).")
  flags.DEFINE_enum("kind", "teacher", ["dataset", "teacher"],
                    "dataset: score the dataset's responses; teacher: the teacher's generations.")
  flags.DEFINE_integer("topk", 64, "How many of the teacher's most likely tokens to keep.")
  flags.DEFINE_integer("shard_examples", 1024, "Examples per shard (a multiple of batch_size).")
  flags.DEFINE_integer("batch_size", 32, "Prompts per teacher batch.")
  flags.DEFINE_bool("repair", False, "Read every shard back first; rewrite those that fail.")
  flags.mark_flags_as_required(["config", "out"])
  cli.run(main)


if __name__ == "__main__":
  cli()
