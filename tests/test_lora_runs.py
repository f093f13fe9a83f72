"""LoRA through the trainer and the run reader: a LoRA midtrain on a base run stores only its
adapter, resumes onto the recorded base, hands its adapter to finetune, evaluates merged."""

from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from msm_jax import sharding as shd
from msm_jax.checkpoint import CheckpointError, open_run, restore_lora_base
from msm_jax.config import ConfigError
from msm_jax.eval.loading import load_checkpoint
from msm_jax.lora import model_for
from msm_jax.model import ModelDef
from msm_jax.train_step import StepFunctions
from msm_jax.trainer import _init_from, train
from tests.helpers import run_cfg

LORA = {"lora.rank": 2, "lora.alpha": 4.0}
MODEL = {"model.d_model": 128, "model.mlp_dim": 512}  # large enough that orbax's per-array
# metadata does not hide the difference between the model's bytes and the adapter's


def dir_bytes(path: Path) -> int:
  return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def one_device(stage, **kw):
  return run_cfg(stage, **{"mesh.data": 1, **MODEL, **kw})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """A base run, and a LoRA midtrain on it (on a 4 x 2 fsdp x tensor mesh) stopped at step 2 of
  4, then resumed."""
  root = tmp_path_factory.mktemp("lora_runs")
  train(one_device("pretrain", steps=2), root / "base", jax.devices()[:1])
  mesh = {"mesh.data": 1, "mesh.fsdp": 4, "mesh.tensor": 2, **MODEL}
  first = run_cfg("midtrain", steps=2, init_from=str(root / "base"), **mesh, **LORA)
  train(first, root / "mid")
  with open_run(root / "mid") as run:
    first_meta = dict(run.meta)
  mid = run_cfg("midtrain", steps=4, init_from=str(root / "base"), **mesh, **LORA)
  result = train(mid, root / "mid")  # resumes at step 2: the base comes from meta.lora_base
  return root, mid, first_meta, result


def test_lora_checkpoints_hold_the_adapter_not_the_model(runs):
  root, mid, first_meta, result = runs
  assert int(result.state.step) == 4
  assert sorted(result.state.params) == sorted(mid.lora.targets)
  with open_run(root / "mid") as run:
    assert run.is_lora and run.meta["lora_base"] == first_meta["lora_base"]
    assert run.meta["lora_base"]["path"] == str(root / "base" / "checkpoints" / "2")
  adapter_bytes = sum(x.nbytes for x in jax.tree.leaves(result.state.params))
  model_bytes = ModelDef(mid.model).param_count() * 4
  state_dir = root / "mid" / "checkpoints" / "4" / "state"
  # what orbax saved: the adapter and its two AdamW moments, plus the step, rng and count
  saved = jax.tree.leaves(ocp.StandardCheckpointer().metadata(state_dir).item_metadata)
  saved_bytes = sum(int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize for a in saved)
  assert 3 * adapter_bytes <= saved_bytes <= 3 * adapter_bytes + 64, (saved_bytes, adapter_bytes)
  # on disk: that plus orbax's metadata per saved array (names, shapes, shardings on the 4 x 2
  # mesh; not the same from run to run: 0.4-1.4 MB measured, the most on a loaded machine), a
  # fraction of the full model's checkpoint, which carries the same kind of metadata
  lora_state = dir_bytes(state_dir)
  full_state = dir_bytes(root / "base" / "checkpoints" / "2" / "state")
  assert lora_state < full_state / 3 and full_state > 2.5 * model_bytes, (
      lora_state, model_bytes, full_state)


def test_a_lora_run_loads_as_its_base_with_the_adapter_merged(runs):
  root, mid, _, result = runs
  cfg, params, _, mesh, _ = load_checkpoint(root / "mid")
  with open_run(root / "base") as base_run:
    base = base_run.restore_params(mesh)
  lm = model_for(mid, ModelDef(mid.model))
  want = lm.merge(jax.device_get(base), jax.device_get(result.state.params))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               jax.device_get(params), want)
  changed = params["layers"]["attn"]["wq"] - base["layers"]["attn"]["wq"]
  assert float(np.abs(changed).max()) > 0
  np.testing.assert_array_equal(params["embed"], base["embed"])  # untouched by any adapter


def test_finetune_continues_the_midtrain_adapter_on_its_base(runs, tmp_path):
  root, _, _, result = runs
  ft = one_device("finetune", steps=2, init_from=str(root / "mid"), **LORA)
  sf = StepFunctions(ft, model_for(ft, ModelDef(ft.model)), shd.make_mesh(ft, jax.devices()[:1]))
  with open_run(root / "mid") as source:
    state, record = _init_from(ft, source, sf, sf.mesh)
    assert record == source.meta["lora_base"]
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params),
               jax.device_get(result.state.params))
  with open_run(root / "base") as base_run:
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(sf.base),
                 jax.device_get(base_run.restore_params(sf.mesh)))
  out = train(ft, tmp_path / "ft", jax.devices()[:1])
  assert int(out.state.step) == 2
  with open_run(tmp_path / "ft") as run:
    assert run.meta["lora_base"] == record  # one hop to the base, however long the chain


def test_a_new_adapter_or_full_finetuning_starts_from_the_merged_model(runs):
  root, _, _, _ = runs
  merged = jax.device_get(load_checkpoint(root / "mid")[1])
  new = one_device("finetune", init_from=str(root / "mid"), **LORA, **{"lora.new_adapter": True})
  sf = StepFunctions(new, model_for(new, ModelDef(new.model)), shd.make_mesh(new, jax.devices()[:1]))
  with open_run(root / "mid") as source:
    state, record = _init_from(new, source, sf, sf.mesh)
  assert record["path"] == str(root / "mid" / "checkpoints" / "4")
  assert all(float(np.abs(f["b"]).max()) == 0 for f in jax.device_get(state.params).values())
  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)  # merged on
  jax.tree.map(close, jax.device_get(sf.base), merged)  # another mesh: float sums reordered
  full = one_device("finetune", init_from=str(root / "mid"))
  sf = StepFunctions(full, ModelDef(full.model), shd.make_mesh(full, jax.devices()[:1]))
  with open_run(root / "mid") as source:
    state, record = _init_from(full, source, sf, sf.mesh)
  assert record is None and int(state.step) == 0
  jax.tree.map(close, jax.device_get(state.params), merged)


def test_a_changed_base_or_a_missing_one_is_refused(runs, tmp_path):
  root, _, _, _ = runs
  with open_run(root / "mid") as run:
    meta = dict(run.meta)
    mesh = shd.make_mesh(one_device("midtrain"), jax.devices()[:1])
    bad = {"lora_base": {**meta["lora_base"], "fingerprint": "0" * 16}}
    with pytest.raises(CheckpointError, match="fingerprint"):
      restore_lora_base(bad, mesh and shd.named_shardings(mesh, run.model_def.axes), "mid")
  with pytest.raises(ConfigError, match="config.init_from"):
    train(one_device("midtrain", **LORA), tmp_path / "no_base", jax.devices()[:1])
  other = one_device("finetune", init_from=str(root / "mid"), **{"lora.rank": 3})
  with pytest.raises(ConfigError, match="config.lora.rank"):
    train(other, tmp_path / "other_rank", jax.devices()[:1])
