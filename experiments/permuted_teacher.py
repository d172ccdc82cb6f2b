"""Writes a copy of a char-level testbed teacher whose tokenizer numbers its tokens differently.

The copy computes exactly the teacher's distributions, with the vocabulary permuted (embedding
rows and, for untied heads, output columns follow their tokens). So it is a teacher with
"another tokenizer" whose only difference is token identity: token-level KD must refuse it
(gkd checks the tokenizers token for token), and ULD (objective.cross_tokenizer='uld') sees it
exactly as it sees the original, since ULD compares sorted probabilities.

  python experiments/permuted_teacher.py --teacher=runs/testbed_v2/teacher/export \
      --out=runs/uld/permuted_teacher
"""

import argparse

import numpy as np
import tokenizers

from gkd import models
from gkd.models import llama, tokenizer as tok


def permuted(model: llama.Llama, tokenizer: tok.Tokenizer, seed: int = 0):
  """(model, tokenizer) with token i renumbered perm[i]; special tokens keep their ids."""
  vocab = tokenizer.backend.get_vocab(with_added_tokens=True)
  specials = {tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id, tokenizer.unk_id} - {None}
  movable = np.array(sorted(set(range(len(vocab))) - specials))
  perm = np.arange(len(vocab))
  perm[movable] = np.random.default_rng(seed).permutation(movable)  # old id -> new id
  new_vocab = {token: int(perm[i]) for token, i in vocab.items()}
  backend = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=new_vocab, merges=[],
                                                       unk_token=tok.UNK))
  backend.add_special_tokens([tok.PAD, tok.BOS, tok.EOS, tok.UNK])
  backend.decoder = tokenizers.decoders.Fuse()
  new_tok = tok.Tokenizer(backend, bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id,
                          pad_id=tokenizer.pad_id, unk_id=tokenizer.unk_id)
  flat = dict(llama.flat_params(model))
  inverse = np.argsort(perm)  # new id -> old id
  flat["embed.embedding"] = np.asarray(flat["embed.embedding"])[inverse]
  if "lm_head.kernel" in flat:
    flat["lm_head.kernel"] = np.asarray(flat["lm_head.kernel"])[:, inverse]
  return llama.from_flat_params(model.config, flat), new_tok


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--teacher", required=True, help="a Hugging Face dir with a char tokenizer")
  parser.add_argument("--out", required=True)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  model, tokenizer = models.load_pretrained(args.teacher)
  model, tokenizer = permuted(model, tokenizer, args.seed)
  models.save_pretrained(model, tokenizer, args.out)
  print(f"wrote {args.out}: {tokenizer.vocab_size} tokens, e.g. '7' is id "
        f"{tokenizer.encode('7')[0]} (was {models.load_pretrained(args.teacher)[1].encode('7')[0]})")


if __name__ == "__main__":
  main()
