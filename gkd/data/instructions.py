"""Instruction following: requests with checkable answers, for chat-templated models.

Three sources, mixed by a seeded draw per example:
  - templated instructions over a fixed word list and small numbers (reverse a word, spell
    it, count letters, sort numbers, ...), graded by exact match (or numerically);
  - the testbed arithmetic problems phrased as requests, graded numerically;
  - Shakespeare continuation requests (shorter passages), graded by ROUGE-L.
The arithmetic and Shakespeare prompts of split S come from split S of those tasks, so
the held-out problems and plays stay held out. The loader adds the chat template
(`chat_template=True`); prompts here are the user message only.
"""

from __future__ import annotations

import functools

import numpy as np

from gkd.data import reasoning, shakespeare, splits
from gkd.errors import ConfigError

DEFAULTS = (("seed", 0), ("num_train", 5000), ("num_validation", 200), ("num_test", 500))

WORDS = (
    "apple", "river", "castle", "garden", "silver", "candle", "thunder", "window", "forest",
    "honey", "marble", "pepper", "rocket", "shadow", "ticket", "violet", "wander", "yellow",
    "anchor", "bridge", "copper", "dragon", "engine", "falcon", "ginger", "harbor", "island",
    "jungle", "kettle", "lemon", "mirror", "needle", "orange", "pillow", "quartz", "rabbit",
    "saddle", "tunnel", "velvet", "walnut", "crown", "sword", "ghost", "storm", "tiger",
    "music", "paper", "stone", "cloud", "dream", "king", "queen", "night", "light", "heart")


def _templated(rng: np.random.Generator) -> dict:
  word = str(rng.choice(WORDS))
  nums = [int(x) for x in rng.integers(0, 100, size=int(rng.integers(3, 6)))]
  kind = int(rng.integers(0, 8))
  if kind == 0:
    prompt, answer, grader = f"Reverse the word '{word}'.", word[::-1], "exact"
  elif kind == 1:
    prompt, answer, grader = f"Write the word '{word}' in capital letters.", word.upper(), "exact"
  elif kind == 2:
    prompt = f"How many letters are in the word '{word}'?"
    answer, grader = str(len(word)), "numeric"
  elif kind == 3:
    prompt = f"Sort these numbers from smallest to largest: {', '.join(map(str, nums))}."
    answer, grader = ", ".join(map(str, sorted(nums))), "exact"
  elif kind == 4:
    prompt = f"What is the largest of these numbers: {', '.join(map(str, nums))}?"
    answer, grader = str(max(nums)), "numeric"
  elif kind == 5:
    n = int(rng.integers(2, 5))
    prompt = f"Repeat the word '{word}' {n} times, separated by spaces."
    answer, grader = " ".join([word] * n), "exact"
  elif kind == 6:
    prompt = f"Spell the word '{word}' with a dash between letters."
    answer, grader = "-".join(word), "exact"
  else:
    letter = word[int(rng.integers(0, len(word)))]
    prompt = f"How many times does the letter '{letter}' appear in '{word}'?"
    answer, grader = str(word.count(letter)), "numeric"
  return {"prompt": prompt, "response": answer, "answer": answer, "grader": grader}


@functools.lru_cache(maxsize=4)
def _passages(split: str, seed: int):
  return shakespeare.generate(split, seed=seed, prompt_chars=192, response_chars=96,
                              num_validation_plays=3, num_test_plays=4, num_train=0,
                              num_validation=0, num_test=0)


def _draw_split(split: str, n: int, seed: int, seen: set) -> tuple:
  split_seed = splits.split_seed(seed, split)
  arith_index = passage_index = 0
  examples, index, limit = [], 0, 20 * n + 1000
  while len(examples) < n:
    if index >= limit:
      raise ConfigError(f"Could draw only {len(examples)} distinct instructions for {split}.")
    rng = np.random.default_rng([split_seed, index])
    index += 1
    source = rng.random()
    if source < 0.6:
      example = _templated(rng)
    elif source < 0.8:
      arith = None
      while arith is None:  # the testbed stream skips over-long problems
        arith = reasoning.testbed_example(split_seed, arith_index, reasoning.stream_size(n))
        arith_index += 1
      example = dict(arith, prompt=f"Solve {arith['prompt'][:-1]} and show your steps.")
    else:
      passages = _passages(split, seed)
      if not passages:
        continue
      p = passages[passage_index % len(passages)]
      passage_index += 1
      example = dict(p, prompt=f"Continue this passage from Shakespeare:\n\n{p['prompt']}")
    if example["prompt"] in seen:
      continue
    seen.add(example["prompt"])
    examples.append(example)
  return tuple(examples)


@functools.lru_cache(maxsize=8)
def _all_splits(seed: int, num_train: int, num_validation: int, num_test: int):
  seen: set[str] = set()
  sizes = {"test": num_test, "validation": num_validation, "train": num_train}
  return {split: _draw_split(split, n, seed, seen) for split, n in sizes.items()}


def generate(split: str, *, seed: int, num_train: int, num_validation: int,
             num_test: int) -> list[dict]:
  return [dict(e) for e in _all_splits(seed, num_train, num_validation, num_test)[split]]
