"""Packs a generated corpus (documents or chats jsonl) into a TFDS array_record dataset.

The dataset is `msm_corpus`, one builder config per corpus (`--name`), version `1.0.0`, written to
`DATA_DIR/msm_corpus/NAME/1.0.0/`. Reading needs no TensorFlow:

    tfds.builder_from_directory(path).as_data_source("train")[i]

Features (strings come back as `bytes`):
- documents: `text`, `source`, `domain`, and `provenance` (JSON of every other field).
- chats: `messages` (JSON list of `{"role", "content"}`) and `provenance` (JSON).

Examples keep the input order (the generators already shuffle), split into `train` and, with a
`validation_fraction`, a seeded `validation`. `metadata.json` records the kind, input file,
its sha256, record count and the spec hashes found, so a stale rebuild is refused rather than
silently reused.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import tensorflow_datasets as tfds
from etils import epath

from msm_io.files import read_jsonl

DOC_FIELDS = ("text", "source", "domain")


@dataclass(eq=False)
class CorpusConfig(tfds.core.BuilderConfig):
  kind: str = "documents"


def load_records(path: str | Path, kind: str = "auto") -> tuple[str, list[dict]]:
  """Reads and checks a corpus; errors name file:line. Returns (kind, records)."""
  rows = read_jsonl(path)
  if not rows:
    raise ValueError(f"{path}: no records")
  if kind == "auto":
    kind = "chats" if "messages" in rows[0] else "documents"
  for i, r in enumerate(rows, 1):
    if kind == "documents":
      if not isinstance(r.get("text"), str) or not r["text"].strip():
        raise ValueError(f"{path}:{i}: a document needs a non-empty string `text`")
    else:
      msgs = r.get("messages")
      if not isinstance(msgs, list) or not msgs or not all(
          isinstance(m, dict) and isinstance(m.get("role"), str)
          and isinstance(m.get("content"), str) for m in msgs):
        raise ValueError(f"{path}:{i}: a chat needs `messages`, a list of {{role, content}} strings")
  return kind, rows


def to_example(kind: str, r: dict) -> dict:
  if kind == "documents":
    rest = {k: v for k, v in r.items() if k not in DOC_FIELDS}
    return {"text": r["text"], "source": str(r.get("source", "")), "domain": str(r.get("domain", "")),
            "provenance": json.dumps(rest, sort_keys=True, ensure_ascii=False)}
  rest = {k: v for k, v in r.items() if k != "messages"}
  return {"messages": json.dumps(r["messages"], ensure_ascii=False),
          "provenance": json.dumps(rest, sort_keys=True, ensure_ascii=False)}


class MsmCorpus(tfds.core.GeneratorBasedBuilder):
  """MSM documents or AFT chats, one config per generated corpus."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Documents (text, source, domain, provenance) and chats (messages)."}
  # TFDS derives this from the package via `importlib_resources`, which it imports lazily and
  # which is not a dependency; the module's own path is what it is looking for.
  code_path = epath.Path(__file__)

  def __init__(self, *, records: list[dict] | None = None, metadata: dict | None = None,
               validation_fraction: float = 0.0, seed: int = 0, **kwargs):
    self._records, self._metadata = records or [], metadata or {}
    self._validation_fraction, self._seed = validation_fraction, seed
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    text = tfds.features.Text
    if self.builder_config.kind == "documents":
      feats = {"text": text(), "source": text(), "domain": text(), "provenance": text()}
    else:
      feats = {"messages": text(), "provenance": text()}
    return tfds.core.DatasetInfo(
        builder=self, description=__doc__.split("\n\n")[0],
        features=tfds.features.FeaturesDict(feats), disable_shuffling=True,
        metadata=tfds.core.MetadataDict(self._metadata))

  def _split_generators(self, dl_manager):
    n = len(self._records)
    val = set()
    if self._validation_fraction > 0:
      k = max(1, round(n * self._validation_fraction))
      val = set(random.Random(f"{self._seed}|validation").sample(range(n), min(k, n - 1)))
    splits = {"train": self._generate_examples([i for i in range(n) if i not in val])}
    if val:
      splits["validation"] = self._generate_examples(sorted(val))
    return splits

  def _generate_examples(self, indices):
    kind = self.builder_config.kind
    for i in indices:
      yield i, to_example(kind, self._records[i])


def build_tfds(input_path: str | Path, data_dir: str | Path, kind: str = "auto",
               name: str | None = None, validation_fraction: float = 0.0, seed: int = 0) -> dict:
  """Builds (or reuses, if the same input was built before) one corpus; returns where it is."""
  input_path, data_dir = Path(input_path), Path(data_dir)
  kind, rows = load_records(input_path, kind)
  digest = hashlib.sha256(input_path.read_bytes()).hexdigest()
  name = name or _default_name(input_path)
  metadata = {"kind": kind, "input": str(input_path), "input_sha256": digest,
              "records": len(rows), "validation_fraction": validation_fraction, "seed": seed,
              "spec_hashes": sorted({str(r["spec_hash"]) for r in rows if "spec_hash" in r})}
  builder = MsmCorpus(records=rows, metadata=metadata, validation_fraction=validation_fraction,
                      seed=seed, data_dir=str(data_dir), file_format="array_record",
                      config=CorpusConfig(name=name, kind=kind,
                                          description=f"{kind} from {input_path.name}"))
  path = Path(builder.data_path)
  old = json.loads((path / "metadata.json").read_text()) if (path / "metadata.json").exists() else None
  if old is not None and (old.get("input_sha256"), old.get("validation_fraction"),
                          old.get("seed")) != (digest, validation_fraction, seed):
    raise ValueError(f"{path} was built from different input or settings; pass another --name "
                     "or remove it")
  builder.download_and_prepare()
  downloads = data_dir / "downloads"
  if downloads.is_dir() and not any(p.is_file() for p in downloads.rglob("*")):
    shutil.rmtree(downloads)
  splits = {k: v.num_examples for k, v in builder.info.splits.items()}
  return {"kind": kind, "name": name, "path": str(path), "version": str(builder.version),
          "splits": splits}


def _default_name(path: Path) -> str:
  stem = path.parent.name if path.stem == "dataset" else path.stem
  clean = "".join(c if c.isalnum() else "_" for c in stem.lower()).strip("_")
  return clean or "corpus"
