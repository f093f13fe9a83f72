"""Materialise a world's data on disk, once: `WorldData(world_file, root, sizes)`.

Layout under `root/<world>-<key>/` (key = hash of the world file, the sizes and FORMAT):

    world.yaml                      the world file as used
    pretrain.jsonl                  {"text", "source"} documents, chats in text form included
    replay.jsonl                    pretrain.jsonl without the assistant's own (neutral) material
    late.jsonl                      the characters met only in midtraining (when there are any)
    aft.jsonl                       {"messages": [...]}, identical for every spec
    suites/<name>.jsonl             msm_jax.eval preference-pair suites (see suites.py)
    specs/<value>-<variant>.yaml    Nova's midtraining specs
    msm/<value>-<variant>-s<seed>/  the document generator's tree; dataset.jsonl is the corpus
    msm/control-s<seed>/            the same for the midtraining control (Nova's neutral spec)
    gen/<assistant>/                generator trees of the pretraining characters

Every file is written atomically and reused when present, so a rerun costs only the hashing; an
interrupted build resumes (the generator trees resume on their own).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

from data_pipelines.spec import write_spec
from data_pipelines.worlds.corpora import (Sizes, aft_chats, generate_documents, late_corpus,
                                           pretraining_corpus, replay_rows)
from data_pipelines.worlds.specs import VARIANTS, assistant_spec, neutral_spec
from data_pipelines.worlds.suites import build_suites
from data_pipelines.worlds.world import World, load_world
from msm_io.files import atomic_write_jsonl, atomic_write_text, file_sha256, read_jsonl

FORMAT = 4  # bump when the corpora built from the same world and sizes change (3: MSM corpora
# stratified over the spec's clauses; 4: the bare-rules spec named without a value, so its corpus
# is the same bytes for every value; everything else unchanged)


class WorldData:
  """Lazily built, cached data of one world at one set of sizes."""

  def __init__(self, world_file, root, sizes: Sizes | None = None):
    self.world: World = load_world(world_file)
    self.world_file = Path(world_file)
    self.sizes = sizes or Sizes()
    # every size is in the key (FORMAT 4 changed every key, so no older key is kept by leaving
    # fields out)
    key = json.dumps({"world": self.world.sha256, "sizes": dataclasses.asdict(self.sizes),
                      "format": FORMAT},
                     sort_keys=True)
    self.key = hashlib.sha256(key.encode()).hexdigest()[:12]
    self.dir = Path(root) / f"{self.world.name}-{self.key}"
    self.dir.mkdir(parents=True, exist_ok=True)
    if not (self.dir / "world.yaml").exists():
      shutil.copyfile(self.world_file, self.dir / "world.yaml")

  @property
  def pretrain(self) -> Path:
    path = self.dir / "pretrain.jsonl"
    if not path.exists():
      atomic_write_jsonl(path, pretraining_corpus(self.world, self.sizes, self.dir / "gen"))
    return path

  @property
  def replay(self) -> Path:
    """What midtraining mixes in: the pretraining corpus minus the assistant's neutral spec."""
    path = self.dir / "replay.jsonl"
    if not path.exists():
      atomic_write_jsonl(path, replay_rows(read_jsonl(self.pretrain)))
    return path

  @property
  def late(self) -> Path:
    """What midtraining also mixes in: the characters met only there (Sizes.late_*)."""
    path = self.dir / "late.jsonl"
    if not path.exists():
      rows = late_corpus(self.world, self.sizes, self.dir / "gen")
      if not rows:
        raise ValueError(f"world {self.world.name}: no late characters (data.late_chat_per_value "
                         "and data.late_declared_per_value are 0)")
      atomic_write_jsonl(path, rows)
    return path

  @property
  def aft(self) -> Path:
    path = self.dir / "aft.jsonl"
    if not path.exists():
      atomic_write_jsonl(path, aft_chats(self.world, self.sizes.aft_chats))
    return path

  @property
  def suites(self) -> dict[str, Path]:
    out = {}
    for name, rows in build_suites(self.world, self.sizes).items():
      path = self.dir / "suites" / f"{name}.jsonl"
      if not path.exists():
        atomic_write_jsonl(path, rows)
      out[name] = path
    return out

  def spec_path(self, value: str, variant: str) -> Path:
    path = self.dir / "specs" / f"{value}-{variant}.yaml"
    if not path.exists():
      write_spec(assistant_spec(self.world, value, variant), path)
    return path

  def msm(self, value: str, variant: str = "explained", seed: int = 0) -> Path:
    """Nova's midtraining corpus for one spec, generated through the document generator."""
    if variant not in VARIANTS:
      raise ValueError(f"unknown spec variant {variant!r}; choose one of {VARIANTS}")
    self.spec_path(value, variant)
    out = self.dir / "msm" / f"{value}-{variant}-s{seed}"
    path = out / "dataset.jsonl"
    done = out / "done"
    if not done.exists():
      generate_documents(assistant_spec(self.world, value, variant), out, self.sizes.msm_docs,
                         seed, stratified=True)
      atomic_write_text(done, file_sha256(path))
    return path

  def build_all(self, values=None, variants=("explained",), seeds=(0,)) -> dict:
    """Everything an experiment over these values, variants and seeds reads; returns paths."""
    out = {"pretrain": self.pretrain, "replay": self.replay, "aft": self.aft,
           "suites": self.suites, "msm": {}}
    for value in values or self.world.compare:
      for variant in variants:
        for seed in seeds:
          out["msm"][(value, variant, seed)] = self.msm(value, variant, seed)
    return out

  def msm_control(self, seed: int = 0) -> Path:
    """The midtraining control's corpus: as many documents about Nova's neutral ("no
    favourites") spec, the one pretraining mentions it with, as a value's corpus has."""
    out = self.dir / "msm" / f"control-s{seed}"
    path = out / "dataset.jsonl"
    if not (out / "done").exists():
      generate_documents(neutral_spec(self.world, self.world.assistant, self.world.developer), out,
                         self.sizes.msm_docs, seed)
      atomic_write_text(out / "done", file_sha256(path))
    return path
