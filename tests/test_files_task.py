"""The `files` task: a researcher's own data from JSONL, CSV, Parquet, HF and TFDS directories."""

import json
import os

import ml_collections
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gkd.data import builders, files, pipeline, tasks
from gkd.train import defaults

ROWS = [{"q": f"What is {i} plus {i}?", "a": f"{i} + {i} = {2 * i}. Answer: {2 * i}",
         "n": 2 * i} for i in range(20)]
KW = dict(prompt_field="q", response_field="a", grader="numeric")


def _jsonl(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path)


def _gen(split, **kw):
  return tasks.get_task("files").generate(split, **{**KW, **kw})


@pytest.fixture
def jsonl(tmp_path):
  return _jsonl(tmp_path / "data.jsonl", ROWS)


@pytest.fixture(scope="module")
def tok():
  return tasks.testbed_tokenizer()


# -- splits ------------------------------------------------------------------------------------
def test_one_file_is_split_by_seed_into_disjoint_covering_splits(jsonl):
  got = {s: _gen(s, path=jsonl, validation_size=0.1, test_size=3) for s in tasks.SPLITS}
  assert [len(got[s]) for s in tasks.SPLITS] == [15, 2, 3]
  prompts = {s: [e["prompt"] for e in got[s]] for s in tasks.SPLITS}
  assert sorted(sum(prompts.values(), [])) == sorted(r["q"] for r in ROWS)
  assert prompts == {s: [e["prompt"] for e in _gen(s, path=jsonl, validation_size=0.1,
                                                   test_size=3)] for s in tasks.SPLITS}
  assert _gen("test", path=jsonl, seed=1, test_size=3) != got["test"]
  e = got["test"][0]
  i = next(i for i, r in enumerate(ROWS) if r["q"] == e["prompt"])
  assert e == {"prompt": ROWS[i]["q"], "response": ROWS[i]["a"], "answer": str(ROWS[i]["n"]),
               "grader": "numeric", "messages": "", "source": f"{jsonl}:{i + 1}"}


def test_repeated_prompts_are_reported_and_stay_in_train(tmp_path, caplog):
  repeated = ROWS + [dict(ROWS[3], a="another answer: 6"), ROWS[7]]  # lines 21 and 22
  path = _jsonl(tmp_path / "dup.jsonl", repeated)
  with caplog.at_level("WARNING"):
    got = {s: [e["source"] for e in _gen(s, path=path, validation_size=4, test_size=4)]
           for s in tasks.SPLITS}
  lines = {s: sorted(int(w.rsplit(":", 1)[1]) for w in got[s]) for s in tasks.SPLITS}
  assert {4, 8, 21, 22} <= set(lines["train"])  # every copy of a repeated prompt
  assert len(lines["validation"]) == len(lines["test"]) == 4
  assert sorted(sum(lines.values(), [])) == list(range(1, 23))
  warned = [r.getMessage() for r in caplog.records if "repeat the prompt" in r.getMessage()]
  assert len(warned) == 1 and f"{path}:21 repeats {path}:4" in warned[0] and "2 rows" in warned[0]
  # Without repeats the carve is the plain seeded one (the same rows as before repeats existed).
  plain = _jsonl(tmp_path / "plain.jsonl", ROWS)
  assert [e["prompt"] for e in _gen("test", path=plain, validation_size=4, test_size=4)] == \
      [ROWS[i]["q"] for i in files.splits.carve(20, 0, 4, 4)["test"]]


def test_separate_split_files(tmp_path):
  kw = dict(train_path=_jsonl(tmp_path / "t.jsonl", ROWS[:10]),
            validation_path=_jsonl(tmp_path / "v.jsonl", ROWS[10:13]),
            test_path=_jsonl(tmp_path / "e.jsonl", ROWS[13:]))
  got = {s: [e["prompt"] for e in _gen(s, **kw)] for s in tasks.SPLITS}
  assert got == {"train": [r["q"] for r in ROWS[:10]], "validation": [r["q"] for r in ROWS[10:13]],
                 "test": [r["q"] for r in ROWS[13:]]}
  # Only a test file: validation is carved out of train.
  kw.pop("validation_path")
  assert len(_gen("validation", validation_size=2, **kw)) == 2
  assert len(_gen("train", validation_size=2, **kw)) == 8


# -- formats -----------------------------------------------------------------------------------
def test_csv_with_multiline_cells_and_a_chat_column(tmp_path):
  chat = [{"role": "user", "content": 'Hi, "you"'}, {"role": "assistant", "content": "Hello"}]
  path = tmp_path / "d.csv"
  path.write_text('q,a,chat\n"line one\nline two","x, y","' + json.dumps(chat).replace('"', '""')
                  + '"\nsecond,b,[]\n')
  kw = dict(path=str(path), grader="none", validation_size=0, test_size=0)
  first, second = _gen("train", **kw)
  assert (first["prompt"], first["response"], first["source"]) == (
      "line one\nline two", "x, y", f"{path}:3")  # the row's last line
  assert second["source"] == f"{path}:4"
  with pytest.raises(ValueError, match=r"d\.csv:4: field 'chat' has no assistant"):
    _gen("train", **kw, messages_field="chat")


def test_parquet(tmp_path):
  path = str(tmp_path / "d.parquet")
  pq.write_table(pa.Table.from_pylist(ROWS), path)
  got = _gen("train", path=path, answer_field="n", validation_size=0, test_size=1)
  assert len(got) == 19 and all(e["answer"] == str(int(e["prompt"].split()[2]) * 2) for e in got)
  assert got[0]["source"] == f"{path} row 0"


def _save_hf(folder, rows):
  """The layout datasets' save_to_disk writes: Arrow stream files named in state.json."""
  os.makedirs(folder)
  table = pa.Table.from_pylist(rows)
  with pa.OSFile(os.path.join(folder, "data-00000-of-00001.arrow"), "wb") as sink:
    with pa.ipc.new_stream(sink, table.schema) as writer:
      writer.write_table(table)
  with open(os.path.join(folder, "state.json"), "w") as f:
    json.dump({"_data_files": [{"filename": "data-00000-of-00001.arrow"}], "_split": None}, f)
  with open(os.path.join(folder, "dataset_info.json"), "w") as f:
    json.dump({"features": {}}, f)


def test_hf_saved_dataset_and_dataset_dict(tmp_path):
  _save_hf(tmp_path / "one", ROWS)
  assert len(_gen("test", path=str(tmp_path / "one"), test_size=5)) == 5
  _save_hf(tmp_path / "dict" / "train", ROWS[:15])
  _save_hf(tmp_path / "dict" / "test", ROWS[15:])
  (tmp_path / "dict" / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
  kw = dict(path=str(tmp_path / "dict"), validation_size=3)
  got = {s: [e["prompt"] for e in _gen(s, **kw)] for s in tasks.SPLITS}
  assert got["test"] == [r["q"] for r in ROWS[15:]]  # the directory's own split
  assert len(got["train"]) == 12 and len(got["validation"]) == 3  # carved from its train


def test_prepared_tfds_directory(tmp_path):
  sizes = dict(num_train=12, num_validation=3, num_test=4)
  source = builders.prepare("arithmetic", str(tmp_path / "tfds"), **sizes)
  got = {s: _gen(s, path=source, prompt_field="prompt", response_field="response",
                 answer_field="answer") for s in tasks.SPLITS}
  for split in tasks.SPLITS:
    expected = tasks.get_task("arithmetic").generate(split, **sizes)
    assert [(e["prompt"], e["answer"]) for e in got[split]] == [
        (e["prompt"], e["answer"]) for e in expected]


# -- chat, few-shot, graders -------------------------------------------------------------------
def _chats(n):
  return [{"chat": [{"role": "system", "content": "Be brief."},
                    {"role": "user", "content": f"Double {i}?"},
                    {"role": "assistant", "content": f"Answer: {2 * i}"}]} for i in range(n)]


def test_messages_last_assistant_is_the_response(tmp_path, tok):
  path = _jsonl(tmp_path / "c.jsonl", _chats(10))
  kw = dict(path=path, messages_field="chat", grader="numeric", test_size=2, validation_size=2)
  e = tasks.get_task("files").generate("test", **kw)[0]
  chat = json.loads(e["messages"])
  assert [m["role"] for m in chat] == ["system", "user"] and e["response"].startswith("Answer: ")
  assert e["prompt"] == files.render_plain(chat) and e["answer"] == e["response"][8:]
  builders.prepare("files", str(tmp_path / "tfds"), **kw)
  batch = next(pipeline.make_loader(task="files", tokenizer=tok, split="test", batch_size=2,
                                    max_prompt_len=80, max_response_len=16, seed=0,
                                    chat_template=True, shuffle=False, num_epochs=1,
                                    data_dir=str(tmp_path / "tfds"), task_kwargs=kw))
  assert tok.decode(batch["prompt_tokens"][0][batch["prompt_mask"][0]]) == \
      tok.apply_chat_template(chat)


def test_fewshot_exemplars_are_fixed_and_leave_train(jsonl, tmp_path):
  kw = dict(path=jsonl, num_fewshot=2, validation_size=2, test_size=2)
  train, test = _gen("train", **kw), _gen("test", **kw)
  assert len(train) == 14  # 20 - 2 - 2 - the 2 exemplars
  shots = test[0]["prompt"].split("\n\n")[:2]
  assert all(e["prompt"].split("\n\n")[:2] == shots for e in train + test)
  assert {s[:s.index("?") + 1] for s in shots}.isdisjoint(
      e["prompt"].split("\n\n")[-1] for e in train)
  assert all(s.endswith(f"Answer: {int(s.split()[2]) * 2}") for s in shots)  # prompt + response
  templated = _gen("test", **kw, prompt_template="Q: {prompt}\nA: ", fewshot_separator="\n")[0]
  lines = templated["prompt"].split("\n")
  assert len(lines) == 6 and lines[0].startswith("Q: What is") and lines[1].startswith("A: ")
  assert lines[1].endswith("Answer: " + str(int(lines[0].split()[3]) * 2))
  row = next(r for r in ROWS if r["a"] == templated["response"])
  assert lines[4:] == ["Q: " + row["q"], "A: "]
  with pytest.raises(ValueError, match="lacks"):
    _gen("test", path=jsonl, prompt_template="Q: ")
  chat = _gen("test", path=_jsonl(tmp_path / "c.jsonl", _chats(10)), messages_field="chat",
              num_fewshot=2, validation_size=2, test_size=2)[0]
  roles = [m["role"] for m in json.loads(chat["messages"])]
  assert roles == ["system", "user", "assistant", "user", "assistant", "user"]


def test_graders_on_references(jsonl):
  for grader, kw in (("numeric", {}), ("numeric", {"answer_field": "n"}), ("exact", {}),
                     ("rouge", {}), ("bleu", {})):
    task = tasks.get_task("files")
    examples = task.generate("test", path=jsonl, **{**KW, **kw, "grader": grader})
    assert all(task.grade(e["response"], e) == pytest.approx(1.0) for e in examples), grader
  e = _gen("test", path=jsonl)[0]
  assert tasks.get_task("files").grade("Answer: 999", e) == 0.0


# -- bad input fails before training, naming the file, the line and the field ------------------
def test_bad_files_fail_with_path_line_and_field(tmp_path, jsonl):
  def prepare(**kw):  # every split is made (and checked) before TFDS writes anything
    builders.prepare("files", str(tmp_path / "tfds"), **{**KW, **kw})

  with pytest.raises(FileNotFoundError, match="nope.jsonl: no such file"):
    prepare(path=str(tmp_path / "nope.jsonl"))
  bad = list(ROWS)
  bad[4] = {"question": "x", "a": "y"}
  with pytest.raises(ValueError,
                     match=r"b\.jsonl:5: no field 'q' \(data\.task_kwargs\.prompt_field\)"):
    prepare(path=_jsonl(tmp_path / "b.jsonl", bad))
  bad[4] = {"q": 5, "a": "y"}
  with pytest.raises(ValueError, match=r"b2\.jsonl:5: field 'q' is not a string \(int\)"):
    prepare(path=_jsonl(tmp_path / "b2.jsonl", bad))
  (tmp_path / "u.jsonl").write_bytes(b'{"q": "a", "a": "1"}\n{"q": "caf\xe9", "a": "2"}\n')
  with pytest.raises(ValueError, match=r"u\.jsonl:2: not valid UTF-8"):
    prepare(path=str(tmp_path / "u.jsonl"))
  (tmp_path / "j.jsonl").write_text('{"q": "a", "a": "1"}\n{"q": "b",\n')
  with pytest.raises(ValueError, match=r"j\.jsonl:2: not valid JSON"):
    prepare(path=str(tmp_path / "j.jsonl"))
  (tmp_path / "empty.jsonl").write_text("\n")
  with pytest.raises(ValueError, match="validation split of the files task is empty.*empty.jsonl"):
    prepare(path=jsonl, validation_path=str(tmp_path / "empty.jsonl"))
  with pytest.raises(ValueError, match=r"n\.jsonl:3: no number in the response"):
    prepare(path=_jsonl(tmp_path / "n.jsonl", ROWS[:2] + [{"q": "x", "a": "none"}] + ROWS[2:]))
  with pytest.raises(ValueError, match="exactly one"):
    prepare(path=jsonl, train_path=jsonl)
  with pytest.raises(ValueError, match="exactly one"):
    prepare()
  with pytest.raises(ValueError, match="Unknown grader"):
    prepare(path=jsonl, grader="fuzzy")
  with pytest.raises(ValueError, match="has no parameters.*prompt_column"):
    prepare(path=jsonl, prompt_column="q")
  with pytest.raises(ValueError, match="Cannot carve"):
    prepare(path=jsonl, validation_size=10, test_size=10)
  assert not list((tmp_path / "tfds").rglob("*.array_record*"))


def test_too_long_prompt_fails_when_the_loader_is_made(jsonl, tmp_path, tok):
  kw = {**KW, "path": jsonl}
  with pytest.raises(ValueError, match=r"data\.jsonl:\d+\): field 'prompt' has \d+ tokens, more "
                     "than max_prompt_len=10"):
    pipeline.make_loader(task="files", tokenizer=tok, split="train", batch_size=2,
                         max_prompt_len=10, max_response_len=40, seed=0, truncation="error",
                         data_dir=str(tmp_path / "tfds"), task_kwargs=kw)


def test_a_changed_file_is_prepared_again_and_not_resumed_onto(tmp_path, tok):
  path = tmp_path / "d.jsonl"
  _jsonl(path, ROWS)
  kw = {**KW, "path": str(path)}
  loader = dict(task="files", tokenizer=tok, split="train", batch_size=2, max_prompt_len=24,
                max_response_len=40, seed=0, data_dir=str(tmp_path / "tfds"), task_kwargs=kw)
  first = builders.prepare("files", str(tmp_path / "tfds"), **kw)
  it = pipeline.make_loader(**loader)
  next(it)
  state = it.get_state()
  _jsonl(path, [dict(r, q=r["q"].upper()) for r in ROWS])  # new text, as many rows
  os.utime(path, ns=(1, 1))  # a new mtime even on a coarse clock
  second = builders.prepare("files", str(tmp_path / "tfds"), **kw)
  assert first != second
  assert pipeline.make_eval_examples("files", "train", 1, str(tmp_path / "tfds"), **kw)[0][
      "prompt"].startswith("WHAT IS")
  with pytest.raises(ValueError, match="different loader"):
    pipeline.make_loader(**loader).set_state(state)


def test_unknown_formats_are_named(tmp_path):
  (tmp_path / "d.txt").write_text("x")
  with pytest.raises(ValueError, match=r"d\.txt: cannot tell the format"):
    _gen("train", path=str(tmp_path / "d.txt"))
  (tmp_path / "folder").mkdir()
  with pytest.raises(ValueError, match="neither a saved Hugging Face dataset"):
    _gen("train", path=str(tmp_path / "folder"))
  with pytest.raises(ValueError, match="format='xml'"):
    _gen("train", path=str(tmp_path / "d.txt"), format="xml")
  assert _gen("train", path=_jsonl(tmp_path / "rows.txt", ROWS), format="jsonl", test_size=0,
              validation_size=0)[0]["prompt"] == ROWS[0]["q"]


# -- task_kwargs from the config ---------------------------------------------------------------
def test_default_kwargs_can_all_be_overridden_from_the_command_line():
  for name in tasks.TASK_NAMES:
    kwargs = tasks.default_kwargs(name)
    assert kwargs == tasks.get_task(name).params()
    # config_flags can only override keys with a value of a known type (None cannot be).
    assert all(isinstance(v, (str, int, float, bool)) for v in kwargs.values()), name


def test_loader_for_config_reads_task_kwargs(tmp_path, tok):
  c = defaults.default_config()
  c.data.update(data_dir=str(tmp_path / "tfds"), max_prompt_len=40, max_response_len=70)
  assert pipeline.task_kwargs(c) == {}  # absent: the task's defaults
  c.data.task_kwargs = ml_collections.ConfigDict()
  assert pipeline.task_kwargs(c) == {}
  c.data.task_kwargs = ml_collections.ConfigDict(tasks.default_kwargs("arithmetic"))
  c.data.task_kwargs.update(num_train=30, num_validation=5, num_test=7)
  assert len(pipeline.eval_examples_for_config(c, "test", None)) == 7
  ids = np.concatenate([b["example_id"] for b in pipeline.loader_for_config(
      c, tok, split="train", batch_size=5, shuffle=False, num_epochs=1, num_examples=None)])
  assert sorted(ids) == list(range(30))
  c.data.task_kwargs.nope = 1
  with pytest.raises(ValueError, match="no parameters"):
    pipeline.loader_for_config(c, tok, split="train", batch_size=5, shuffle=False, num_epochs=1,
                               num_examples=None)


def test_example_config_at_the_data_level(tmp_path, tok):
  """configs/files.py (runlocal): its loaders make batches and its graders pass the references."""
  import importlib.util

  path = os.path.join(os.path.dirname(__file__), "..", "configs", "files.py")
  spec = importlib.util.spec_from_file_location("files_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  for fewshot in (0, 2):
    c = module.get_config(f"runlocal=true,fewshot={fewshot}")
    c.data.data_dir = str(tmp_path / "tfds")
    it = pipeline.loader_for_config(c, tok, split="train", batch_size=c.train.batch_size,
                                    shuffle=True, num_epochs=None, num_examples=None)
    batch = next(it)
    assert batch["prompt_tokens"].shape == (2, c.data.max_prompt_len)
    assert batch["response_mask"].any(axis=1).all() and not batch["prompt_truncated"].any()
    val = pipeline.eval_examples_for_config(c, "validation", c.eval.num_examples)
    assert len(val) == 2
    graded = [tasks.get_task("files").grade(e["response"], e) for e in val]
    assert graded == [1.0, 1.0]
