"""The one run reader (`open_run`): what it reads, the tokenizer it decodes, the parameters and
state it restores, the tokenizer a run takes, and checkpoints written before tokenizer kinds."""

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from msm_jax import sharding as shd
from msm_jax.checkpoint import CheckpointError, abstract_like, open_run
from msm_jax.config import ConfigError
from msm_jax.data.tokenizer import train_tokenizer
from msm_jax.eval.loading import load_checkpoint
from msm_jax.train_step import StepFunctions
from msm_jax.trainer import _abstract_state, train
from tests.helpers import FIXTURES, run_cfg


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  path = tmp_path_factory.mktemp("run") / "base"
  train(run_cfg(steps=2, checkpoint_every=1, **{"mesh.data": 1}), path, jax.devices()[:1])
  return path


def _to_legacy_meta(workdir: Path) -> None:
  """Rewrite every step's meta as the code before tokenizer kinds wrote it."""
  for meta_file in (workdir / "checkpoints").glob("*/meta/metadata"):
    meta = json.loads(meta_file.read_text())
    meta["tokenizer_model_b64"] = meta.pop("tokenizer_b64")
    del meta["tokenizer_kind"]
    meta_file.write_text(json.dumps(meta))


def test_open_run_reads_a_workdir_its_checkpoints_or_one_step(workdir):
  with open_run(workdir) as run:
    assert run.step == 2 and run.meta["stage"] == "pretrain" and run.config.steps == 2
    assert run.meta["tokenizer_kind"] == "sentencepiece"
    assert not any(k.endswith("_b64") for k in run.meta)  # the bytes live in run.tokenizer
    assert run.tokenizer.to_bytes() == (workdir / "tokenizer.model").read_bytes()
    assert run.tokenizer is run.tokenizer  # decoded once
  with open_run(workdir / "checkpoints") as run:
    assert run.step == 2
  with open_run(workdir / "checkpoints" / "1") as run:
    assert run.step == 1 and run.path == workdir / "checkpoints" / "1"
  with open_run(workdir, step=1) as run:
    assert run.meta["step"] == 1
  with pytest.raises(CheckpointError, match="not a run workdir"):
    open_run(workdir / "tb")


def test_restore_params_is_the_state_s_params_on_a_mesh_or_shardings(workdir):
  cfg = run_cfg(**{"mesh.data": 1})
  mesh = shd.make_mesh(cfg, jax.devices()[:1])
  with open_run(workdir) as run:
    sf = StepFunctions(run.config, run.model_def, mesh)
    state = run.restore_state(abstract_like(_abstract_state(sf.model_def, sf.tx),
                                            sf.state_shardings))
    assert int(state.step) == 2
    on_mesh = run.restore_params(mesh)
    four = shd.make_mesh(run_cfg(**{"mesh.data": 1, "mesh.fsdp": 4}), jax.devices()[:4])
    on_four = run.restore_params(shd.named_shardings(four, run.model_def.axes))
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(on_mesh),
               jax.device_get(state.params))
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(on_four),
               jax.device_get(state.params))
  assert on_four["embed"].sharding.mesh.size == 4


def test_a_run_takes_an_explicit_tokenizer_only_if_it_matches_the_run_it_continues(
    workdir, tmp_path):
  other = train_tokenizer([json.loads(l)["text"] for l in
                           (FIXTURES / "pretrain.jsonl").read_text().splitlines()],
                          tmp_path / "other.model", 400)
  ft = run_cfg("finetune", steps=1, init_from=str(workdir), **{"mesh.data": 1})
  ft.data.tokenizer = other.path
  with pytest.raises(ConfigError, match=r"config.data.tokenizer: .*other.model differs .* "
                     r"which this run continues"):
    train(ft, tmp_path / "ft", jax.devices()[:1])
  small = run_cfg(steps=1, **{"mesh.data": 1, "model.vocab_size": 256})
  small.data.tokenizer = str(workdir / "tokenizer.model")
  with pytest.raises(ConfigError, match="config.model.vocab_size: 256 is smaller"):
    train(small, tmp_path / "small", jax.devices()[:1])


def test_a_checkpoint_written_before_tokenizer_kinds_resumes_and_evaluates(workdir, tmp_path):
  old = tmp_path / "old"
  shutil.copytree(workdir, old)
  _to_legacy_meta(old)
  (old / "tokenizer.model").unlink()  # it must come from the checkpoint
  with open_run(old) as run:
    assert "tokenizer_model_b64" not in run.meta
    assert run.tokenizer.to_bytes() == (workdir / "tokenizer.model").read_bytes()
  cfg, params, tokenizer, mesh, meta = load_checkpoint(old)
  assert tokenizer.sha256 == meta["tokenizer_sha256"] and meta["step"] == 2
  result = train(run_cfg(steps=3, checkpoint_every=1, **{"mesh.data": 1}), old,
                 jax.devices()[:1])
  assert int(result.state.step) == 3
  assert (old / "tokenizer.model").read_bytes() == tokenizer.to_bytes()
  with open_run(old) as run:  # and the new checkpoint is written in the new format
    assert run.step == 3 and run.meta["tokenizer_kind"] == "sentencepiece"


def test_a_checkpoint_without_a_tokenizer_says_how_to_give_one(workdir, tmp_path):
  bare = tmp_path / "bare"
  shutil.copytree(workdir / "checkpoints" / "2", bare / "checkpoints" / "2")
  meta_file = bare / "checkpoints" / "2" / "meta" / "metadata"
  meta = json.loads(meta_file.read_text())
  del meta["tokenizer_b64"], meta["tokenizer_kind"]
  meta_file.write_text(json.dumps(meta))
  with open_run(bare) as run:
    assert not run.has_tokenizer and run.config.stage == "pretrain"
    with pytest.raises(CheckpointError, match="carries no tokenizer; set config.data.tokenizer"):
      run.tokenizer
