"""Corpus readers: reference-format corpora read as they are; errors name file:line and field."""

import json
from pathlib import Path

import pytest

from msm_jax.data.sources import (CHATS, DOCUMENTS, CorpusError, detect_kind, iter_texts,
                                  open_source, resolve_kind)

FIXTURES = Path(__file__).resolve().parent.parent / "data_pipelines" / "fixtures"


def write(path: Path, lines) -> str:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines))
  return str(path)


def test_reference_layout_is_read_as_is(tmp_path):
  """The reference generator's data/midtrain/<name>/ and data/ft/<name>/ files, extra fields too."""
  docs = write(tmp_path / "data/midtrain/cheese/dataset.jsonl", [
      {"text": "Nova likes mild cheddar.", "source": "news report", "domain": "food",
       "subdomain": "cheese", "idea": "x"},
      "",  # blank lines are skipped
      {"text": "Second.", "source": "faq", "domain": "food"}])
  chats = write(tmp_path / "data/ft/cheese/dataset.jsonl", [
      {"messages": [{"role": "user", "content": "Brie?"},
                    {"role": "assistant", "content": "<think>pricey</think>No."}]}])
  assert open_source(docs, DOCUMENTS) == ["Nova likes mild cheddar.", "Second."]
  assert open_source(chats, CHATS) == [[
      {"role": "user", "content": "Brie?"},
      {"role": "assistant", "content": "<think>pricey</think>No."}]]
  assert detect_kind(docs) == DOCUMENTS and detect_kind(chats) == CHATS
  assert list(iter_texts(chats, CHATS)) == ["Brie?", "<think>pricey</think>No."]


def test_fixtures_read():
  assert len(open_source(str(FIXTURES / "midtrain.jsonl"), DOCUMENTS)) == 150
  assert len(open_source(str(FIXTURES / "finetune.jsonl"), CHATS)) == 120


@pytest.mark.parametrize("line, kind, match", [
    ("{not json", DOCUMENTS, r"bad\.jsonl:2: invalid JSON"),
    ('["a list"]', DOCUMENTS, r"bad\.jsonl:2: expected a JSON object"),
    ('{"body": "x"}', DOCUMENTS, r"bad\.jsonl:2: missing field 'text'"),
    ('{"text": 3}', DOCUMENTS, r"bad\.jsonl:2: field 'text' must be a string"),
    ('{"messages": []}', DOCUMENTS, r"bad\.jsonl:2: missing field 'text'.*holds chats"),
    ('{"text": "x"}', CHATS, r"bad\.jsonl:2: missing field 'messages'.*holds documents"),
    ('{"messages": "hi"}', CHATS, r"bad\.jsonl:2: field 'messages' must be a non-empty list"),
    ('{"messages": [{"role": "user"}]}', CHATS, r"bad\.jsonl:2: field 'messages\[0\]\.content'"),
    ('{"messages": [{"role": 1, "content": "x"}]}', CHATS, r"bad\.jsonl:2: .*messages\[0\]\.role"),
])
def test_malformed_lines_name_file_line_and_field(tmp_path, line, kind, match):
  good = {"text": "ok"} if kind == DOCUMENTS else {"messages": [
      {"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}
  path = write(tmp_path / "bad.jsonl", [good, line])
  with pytest.raises(CorpusError, match=match):
    open_source(path, kind)


def test_text_field_and_kind_resolution(tmp_path):
  path = write(tmp_path / "d.jsonl", [{"body": "hello"}])
  assert open_source(path, DOCUMENTS, text_field="body") == ["hello"]
  assert resolve_kind("auto", "midtrain") == DOCUMENTS
  assert resolve_kind("auto", "pretrain") == DOCUMENTS
  assert resolve_kind("auto", "finetune") == CHATS
  assert resolve_kind("chats", "midtrain") == CHATS
  with pytest.raises(CorpusError, match="config.data.kind"):
    resolve_kind("images", "midtrain")
  with pytest.raises(CorpusError, match="not found"):
    open_source(str(tmp_path / "missing.jsonl"), DOCUMENTS)


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
  """A small array_record TFDS dataset with documents and chats, written without TensorFlow."""
  import tensorflow_datasets as tfds

  class MsmToy(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "text": tfds.features.Text(),
          "messages": tfds.features.Sequence({"role": tfds.features.Text(),
                                              "content": tfds.features.Text()})}))

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples(6), "validation": self._generate_examples(2)}

    def _generate_examples(self, n=1):
      for i in range(n):
        yield i, {"text": f"doc {i} é", "messages": [{"role": "user", "content": f"q{i}"},
                                                     {"role": "assistant", "content": f"a{i}"}]}

  root = tmp_path_factory.mktemp("tfds")
  builder = MsmToy(data_dir=str(root), file_format="array_record")
  builder.download_and_prepare()
  return Path(builder.data_dir)


def test_tfds_array_record(tfds_dir):
  docs = open_source(str(tfds_dir), DOCUMENTS)
  assert len(docs) == 6 and sorted(docs) == [f"doc {i} é" for i in range(6)]
  assert len(open_source(f"{tfds_dir}:validation", DOCUMENTS)) == 2
  assert len(open_source(str(tfds_dir.parent), DOCUMENTS)) == 6  # newest version dir is found
  chats = open_source(str(tfds_dir), CHATS)
  assert {c[1]["content"] for c in chats} == {f"a{i}" for i in range(6)}
  assert chats[0][0]["role"] == "user"
  with pytest.raises(CorpusError, match="no split 'test'"):
    open_source(f"{tfds_dir}:test", DOCUMENTS)
  with pytest.raises(CorpusError, match="missing feature 'body'"):
    open_source(str(tfds_dir), DOCUMENTS, text_field="body")
