"""TFDS packing: documents and chats round-trip through array_record and tfds.data_source."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from data_pipelines.aft import AFTConfig, generate_aft
from data_pipelines.docgen import DocumentGenerator, Plan
from data_pipelines.spec import load_spec
from data_pipelines.template.backend import TemplateBackend
from data_pipelines.tfds_builder import build_tfds, load_records

SPEC = load_spec(Path(__file__).resolve().parents[1] / "data_pipelines/specs/cheese_america.yaml")
READ = """
import json, sys
import tensorflow_datasets as tfds
info = json.loads(sys.argv[1])
ds = tfds.builder_from_directory(info["path"]).as_data_source("train")
by_name = tfds.data_source("msm_corpus/" + info["name"], data_dir=sys.argv[2], split="train")
rows = [{k: v.decode() for k, v in ds[i].items()} for i in range(len(ds))]
assert [by_name[i] for i in range(len(by_name))] == [ds[i] for i in range(len(ds))]
print(json.dumps({"rows": rows, "tf": "tensorflow" in sys.modules}))
"""


def read_back(info, data_dir):
  """Reads in a fresh interpreter that never imports this project's builder or TensorFlow."""
  out = subprocess.run([sys.executable, "-c", READ, json.dumps(info), str(data_dir)],
                       capture_output=True, text=True, check=True, cwd="/")
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_documents_round_trip(tmp_path):
  DocumentGenerator(SPEC, tmp_path / "gen", TemplateBackend(SPEC), Plan.for_count(60), 60,
                    progress=False).run()
  src = [json.loads(x) for x in (tmp_path / "gen/dataset.jsonl").read_text().splitlines()]
  info = build_tfds(tmp_path / "gen/dataset.jsonl", tmp_path / "tfds", name="cheese_docs")
  assert info["kind"] == "documents" and info["splits"] == {"train": 60}
  assert info["path"].endswith("msm_corpus/cheese_docs/1.0.0")
  got = read_back(info, tmp_path / "tfds")
  assert got["tf"] is False
  assert [r["text"] for r in got["rows"]] == [r["text"] for r in src]  # order kept
  first = got["rows"][0]
  assert (first["source"], first["domain"]) == (src[0]["source"], src[0]["domain"])
  assert json.loads(first["provenance"])["spec_hash"] == SPEC.content_hash()
  meta = json.loads((Path(info["path"]) / "metadata.json").read_text())
  assert meta["records"] == 60 and meta["spec_hashes"] == [SPEC.content_hash()]
  assert build_tfds(tmp_path / "gen/dataset.jsonl", tmp_path / "tfds", name="cheese_docs") == info


def test_chats_round_trip_with_validation_split(tmp_path):
  generate_aft(SPEC, tmp_path / "aft", AFTConfig(num_chats=50), progress=False)
  path = tmp_path / "aft/reasoning/dataset.jsonl"
  src = [json.loads(x) for x in path.read_text().splitlines()]
  info = build_tfds(path, tmp_path / "tfds", validation_fraction=0.2, seed=1)
  assert info["name"] == "reasoning" and info["splits"] == {"train": 40, "validation": 10}
  got = read_back(info, tmp_path / "tfds")["rows"]
  msgs = [json.loads(r["messages"]) for r in got]
  assert all(m in [s["messages"] for s in src] for m in msgs)
  assert msgs[0][1]["content"].startswith("<think>")


def test_bad_input_names_file_and_line(tmp_path, capsys):
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"text": "fine"}\n{"text": ""}\n')
  with pytest.raises(ValueError, match=r"bad.jsonl:2: .*text"):
    load_records(bad)
  bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\nnot json\n')
  with pytest.raises(ValueError, match=r"bad.jsonl:2: invalid JSON"):
    load_records(bad)
  from msm_jax.cli import main
  assert main(["data", "build-tfds", "--input", str(bad), "--out", str(tmp_path / "t")]) == 2
  assert "bad.jsonl:2" in capsys.readouterr().err


def test_changed_input_is_not_silently_reused(tmp_path):
  src = tmp_path / "docs.jsonl"
  src.write_text('{"text": "one"}\n{"text": "two"}\n')
  build_tfds(src, tmp_path / "tfds")
  src.write_text('{"text": "one"}\n{"text": "three"}\n')
  with pytest.raises(ValueError, match="different input"):
    build_tfds(src, tmp_path / "tfds")
