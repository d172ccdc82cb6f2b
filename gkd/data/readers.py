"""Readers of a researcher's data files: JSON Lines, CSV, Parquet, a saved Hugging Face
`datasets` directory, and a prepared TFDS directory. Pure Python + pyarrow; nothing is
downloaded, and neither `datasets` nor TensorFlow is needed.

Every reader returns rows as `(where, row)` pairs: `where` names the file and the line (text
formats) or the row (tables), so that a bad value can be reported exactly where it is.

  jsonl    one JSON object per line (blank lines skipped); *.jsonl, *.ndjson
  csv      a header line, then one row per record; a cell may hold JSON (e.g. a messages list)
  parquet  *.parquet / *.pq, read with pyarrow
  hf       a directory written by `datasets.Dataset.save_to_disk` (state.json + *.arrow in
           Arrow's streaming format) or `DatasetDict.save_to_disk` (dataset_dict.json + one
           such directory per split)
  tfds     a prepared TFDS directory (dataset_info.json, features.json and array_record
           files), e.g. ~/tensorflow_datasets/NAME/CONFIG/VERSION
Directories (hf, tfds) may hold several splits; files hold one.
"""

from __future__ import annotations

import csv
import io
import json
import os

from gkd.errors import DataError, MissingFile, UserError

FORMATS = ("auto", "jsonl", "csv", "parquet", "hf", "tfds")
_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet",
               ".pq": "parquet"}
UNSPLIT = ""  # the split key of a source that is one table

Rows = list[tuple[str, dict]]


def detect_format(path: str) -> str:
  """The format of `path` from its extension, or from the metadata files of a directory."""
  if os.path.isdir(path):
    if any(os.path.isfile(os.path.join(path, f)) for f in ("state.json", "dataset_dict.json")):
      return "hf"
    if os.path.isfile(os.path.join(path, "dataset_info.json")):
      return "tfds"
    raise DataError(f"{path}: a directory that is neither a saved Hugging Face dataset "
                     "(state.json or dataset_dict.json) nor a prepared TFDS dataset "
                     "(dataset_info.json).")
  ext = os.path.splitext(path)[1].lower()
  if ext not in _EXTENSIONS:
    raise DataError(f"{path}: cannot tell the format from the extension {ext!r}; name it "
                     f"{sorted(_EXTENSIONS)} or set format to one of {FORMATS[1:]}.")
  return _EXTENSIONS[ext]


def read(path: str, fmt: str = "auto") -> dict[str, Rows]:
  """The rows of `path` by split: {UNSPLIT: rows} for one table, {split: rows} for a
  directory of splits (hf DatasetDict, tfds).

  Whatever the file holds, a failure to read it is a DataError naming it (and the line or
  row, where the format has them)."""
  if fmt not in FORMATS:
    raise DataError(f"format={fmt!r}; use one of {FORMATS}.")
  if not os.path.exists(path):
    if os.path.lexists(path):
      raise DataError(f"{path}: a symbolic link that leads nowhere (broken, or a loop).")
    raise MissingFile(f"{path}: no such file or directory.")
  try:
    return _read(path, detect_format(path) if fmt == "auto" else fmt)
  except UserError:
    raise
  except OSError as e:  # unreadable: a symlink loop, permissions, a directory named like a file
    raise DataError(f"{path}: cannot read it ({e.strerror or e}).") from None
  except (ValueError, KeyError) as e:  # a malformed file (pyarrow's ArrowInvalid is a ValueError)
    first = (str(e).strip().splitlines() or [""])[0][:200]
    raise DataError(f"{path}: not readable as {fmt if fmt != 'auto' else 'its format'} "
                    f"({type(e).__name__}: {first}).") from None


def _read(path: str, fmt: str) -> dict[str, Rows]:
  if fmt == "jsonl":
    return {UNSPLIT: _read_jsonl(path)}
  if fmt == "csv":
    return {UNSPLIT: _read_csv(path)}
  if fmt == "parquet":
    import pyarrow.parquet as pq

    return {UNSPLIT: _table_rows(path, pq.read_table(path))}
  if fmt == "hf":
    return _read_hf(path)
  return _read_tfds(path)


def _text(path: str) -> str:
  """The file's text; a non-UTF-8 byte is reported with its line."""
  with open(path, "rb") as f:
    data = f.read()
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError as e:
    line = data.count(b"\n", 0, e.start) + 1
    raise DataError(f"{path}:{line}: not valid UTF-8 ({e.reason}: byte "
                     f"{data[e.start:e.start + 1]!r}); save the file as UTF-8.") from None


def _read_jsonl(path: str) -> Rows:
  rows = []
  for line_no, line in enumerate(_text(path).splitlines(), 1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except json.JSONDecodeError as e:
      raise DataError(f"{path}:{line_no}: not valid JSON ({e.msg}).") from None
    if not isinstance(row, dict):
      raise DataError(f"{path}:{line_no}: a JSON {type(row).__name__}, not an object.")
    rows.append((f"{path}:{line_no}", row))
  return rows


def _read_csv(path: str) -> Rows:
  reader = csv.DictReader(io.StringIO(_text(path), newline=""))
  rows = []
  for row in reader:
    # line_num is the reader's line after the row: the row's last line (a cell may span lines).
    where = f"{path}:{reader.line_num}"
    if None in row or None in row.values():  # DictReader's marks of extra and missing cells
      cells = (len(row) - 1 + len(row[None]) if None in row
               else sum(v is not None for v in row.values()))
      raise DataError(f"{where}: {cells} cells for the header's {len(reader.fieldnames)} "
                      "columns; quote cells that hold commas.")
    rows.append((where, row))
  return rows


def _table_rows(where: str, table) -> Rows:
  return [(f"{where} row {i}", row) for i, row in enumerate(table.to_pylist())]


def _read_hf(path: str) -> dict[str, Rows]:
  dict_file = os.path.join(path, "dataset_dict.json")
  if os.path.isfile(dict_file):
    names = _json_field(dict_file, "splits")
    return {name: _read_hf_dataset(inside(path, name, dict_file)) for name in names}
  return {UNSPLIT: _read_hf_dataset(path)}


def _read_hf_dataset(path: str) -> Rows:
  import pyarrow as pa

  state_file = os.path.join(path, "state.json")
  if not os.path.isfile(state_file):
    raise MissingFile(f"{path}: no state.json; not a directory written by "
                            "datasets' save_to_disk.")
  files = [d["filename"] if isinstance(d, dict) else d
           for d in _json_field(state_file, "_data_files")]
  tables = []
  for name in files:
    with pa.memory_map(inside(path, name, state_file)) as source:
      tables.append(pa.ipc.open_stream(source).read_all())
  table = pa.concat_tables(tables) if tables else pa.table({})
  return _table_rows(path, table)


def _json_field(path: str, key: str) -> list:
  """The list `key` of the JSON file `path` (a saved dataset's metadata)."""
  try:
    with open(path, encoding="utf-8") as f:
      value = json.load(f)[key]
  except (ValueError, KeyError, TypeError) as e:
    raise DataError(f"{path}: not the metadata datasets' save_to_disk writes (no list "
                    f"{key!r}: {e}).") from None
  if not isinstance(value, list):
    raise DataError(f"{path}: {key!r} is not a list.")
  return value


def inside(directory: str, name, listed_in: str) -> str:
  """DIRECTORY/NAME for a file name read from metadata (`listed_in`), refused unless it stays
  inside the directory: an absolute name or a "../" would read a file from elsewhere."""
  if not isinstance(name, str) or not name or os.path.isabs(name) or os.path.normpath(
      name).split(os.sep)[0] == os.pardir:
    raise DataError(f"{listed_in}: the file name {name!r} leaves {directory}; a saved dataset "
                    "names only files inside its own directory.")
  return os.path.join(directory, name)


def _read_tfds(path: str) -> dict[str, Rows]:
  import tensorflow_datasets as tfds

  builder = tfds.builder_from_directory(path)
  if builder.info.file_format != tfds.core.FileFormat.ARRAY_RECORD:
    raise DataError(f"{path}: stored as {builder.info.file_format.value}; reading it needs "
                     "TensorFlow. Prepare it with file_format='array_record' instead.")
  out = {}
  for split in builder.info.splits:
    source = builder.as_data_source(split=split)
    where = f"{path} ({split})"
    out[split] = [(f"{where} row {i}", _decode(source[i], f"{where} row {i}"))
                  for i in range(len(source))]
  return out


def _decode(value, where: str):
  """TFDS text features come back as bytes: decode them (recursively) as UTF-8."""
  if isinstance(value, bytes):
    try:
      return value.decode("utf-8")
    except UnicodeDecodeError as e:
      raise DataError(f"{where}: not valid UTF-8 ({e.reason}).") from None
  if isinstance(value, dict):
    return {k: _decode(v, f"{where} field {k!r}") for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_decode(v, where) for v in value]
  if hasattr(value, "tolist"):  # NumPy scalars and arrays
    return _decode(value.tolist(), where)
  return value
