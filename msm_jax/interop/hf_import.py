"""`msm import-hf`: a Hugging Face model directory -> a normal msm-jax run directory.

Reads `config.json`, the (possibly sharded, `model.safetensors.index.json`) safetensors one
tensor at a time, and places each tensor straight onto its training sharding: a per-layer
tensor goes into its slot of the stacked `layers` array, which is allocated once on the mesh and
updated in place (donated), so host memory holds one HF tensor and one device shard of it at a
time, never a whole stacked parameter (benchmarks/hf_import.py measures it). The result is a
step-0 checkpoint (parameters, a fresh optimizer state, as `trainer._init_from` restores),
with the run config (model fields from config.json, the family's chat template) and the HF
tokenizer, so `msm train --config.init_from=OUT`, `msm eval` and `Evaluator.from_checkpoint`
read it like any run.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from msm_io import paths
from msm_jax import config as config_lib
from msm_jax import sharding as shd
from msm_jax.interop import hf_config, hf_layout

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)  # buffers some older checkpoints saved


class HFImportError(ValueError):
  """A model directory that cannot be imported; the message names the file and tensor."""


class SafetensorsReader:
  """Tensor name -> numpy array, reading one tensor at a time from (sharded) safetensors."""

  def __init__(self, directory):
    from safetensors import safe_open  # noqa: PLC0415
    self.directory = Path(directory)
    index = self.directory / INDEX_FILE
    if index.is_file():
      try:
        weight_map = json.loads(index.read_text())["weight_map"]
      except (json.JSONDecodeError, KeyError) as e:
        raise HFImportError(f"{index}: not a safetensors index ({e})") from None
    elif (self.directory / SINGLE_FILE).is_file():
      weight_map = None
    else:
      raise HFImportError(f"{self.directory}: neither {INDEX_FILE} nor {SINGLE_FILE}")
    files = sorted(set(weight_map.values())) if weight_map else [SINGLE_FILE]
    self._handles = {f: safe_open(str(self.directory / f), framework="numpy") for f in files}
    if weight_map is None:
      weight_map = {k: SINGLE_FILE for k in self._handles[SINGLE_FILE].keys()}
    self.weight_map = weight_map

  def names(self) -> set[str]:
    return set(self.weight_map)

  def read(self, name: str) -> np.ndarray:
    if name not in self.weight_map:
      raise HFImportError(f"{self.directory}: tensor {name!r} is missing")
    return self._handles[self.weight_map[name]].get_tensor(name)


@functools.lru_cache(maxsize=None)
def _layer_writer(sharding: NamedSharding):
  """buf[i] = x, in place (the stacked buffer is donated), keeping buf's sharding."""
  return jax.jit(lambda buf, x, i: jax.lax.dynamic_update_index_in_dim(buf, x, i, 0),
                 donate_argnums=0, out_shardings=sharding)


def _place(x: np.ndarray, shape, sharding):
  """A host array (possibly a strided view) -> a global array; each device copies its shard."""
  return jax.make_array_from_callback(tuple(shape), sharding, lambda idx: np.asarray(x[idx]))


def load_params(reader: SafetensorsReader, model_def, mesh) -> dict:
  """Every parameter of `model_def`, read and converted one HF tensor at a time, on `mesh`."""
  abstract = model_def.pure_abstract()
  shardings = shd.named_shardings(mesh, model_def.axes)
  used, params = set(), {}
  for entry in hf_layout.entries(model_def.cfg):
    target = hf_layout.get_path(abstract, entry.path)
    sharding = hf_layout.get_path(shardings, entry.path)
    shape, dtype = tuple(target.shape), target.dtype

    def convert(name, shape):
      used.add(name)
      x = reader.read(name).astype(dtype, copy=False)
      try:
        return hf_layout.to_ours(x, entry.layout, shape)
      except ValueError as e:
        where = reader.directory / reader.weight_map[name]
        raise HFImportError(f"{where}: tensor {name!r}: {e}") from None

    if not entry.stacked:
      value = _place(convert(entry.hf_name, shape), shape, sharding)
    else:
      layer_sharding = NamedSharding(mesh, P(*sharding.spec[1:]))
      value = jax.jit(lambda: jnp.zeros(shape, dtype), out_shardings=sharding)()
      write = _layer_writer(sharding)
      for i in range(shape[0]):
        x = convert(entry.hf_name.format(i=i), shape[1:])
        value = write(value, _place(x, shape[1:], layer_sharding), i)
        del x
    hf_layout.set_path(params, entry.path, value)
  unused = {n for n in reader.names() - used if not n.endswith(_IGNORED_SUFFIXES)}
  if model_def.cfg.tie_embeddings:
    unused.discard("lm_head.weight")  # some tied checkpoints store the shared matrix twice
  if unused:
    raise HFImportError(f"{reader.directory}: tensors this model has no place for: "
                        f"{sorted(unused)[:5]}{' ...' if len(unused) > 5 else ''}")
  return params


def import_config(hf: dict, where: str, param_dtype: str = "float32"):
  """The run config of an imported model: base defaults, config.json's model, its template."""
  cfg = config_lib.base_config()
  fields = hf_config.model_fields(hf, where)
  for key, value in fields.items():
    cfg.model[key] = value
  cfg.model.param_dtype = param_dtype
  _, template, add_bos = hf_config.FAMILIES[hf["model_type"]]
  cfg.data.chat_template = template
  cfg.data.add_bos = add_bos
  return cfg


def import_hf(source, workdir, *, mesh_axes: dict | None = None, param_dtype: str = "float32",
              seed: int = 0) -> Path:
  """Import the model in `source` into the run directory `workdir` (checkpoint step 0)."""
  from msm_jax.checkpoint import Checkpointer  # noqa: PLC0415
  from msm_jax.data.hf_tokenizer import HFTokenizer  # noqa: PLC0415
  from msm_jax.data.tokenizer import save_tokenizer_file  # noqa: PLC0415
  from msm_jax.model import ModelDef  # noqa: PLC0415
  from msm_jax.model_config import ModelConfig  # noqa: PLC0415
  from msm_jax.optim import make_optimizer  # noqa: PLC0415
  from msm_jax.train_step import TrainState, state_shardings  # noqa: PLC0415

  source, workdir = Path(source), paths.path(workdir)  # workdir may be gs://
  hf = hf_config.read_config_json(source)
  cfg = import_config(hf, str(source / "config.json"), param_dtype)
  for axis, size in (mesh_axes or {}).items():
    cfg.mesh[axis] = int(size)
  tokenizer = HFTokenizer.from_dir(source)
  if tokenizer.vocab_size > cfg.model.vocab_size:
    raise HFImportError(f"{source}: tokenizer.json has {tokenizer.vocab_size} tokens, more than "
                        f"config.json's vocab_size {cfg.model.vocab_size}")
  mesh = shd.make_mesh(cfg)
  model_def = ModelDef(ModelConfig.of(cfg.model))
  params = load_params(SafetensorsReader(source), model_def, mesh)
  tx = make_optimizer(cfg)
  shardings = state_shardings(model_def, tx, mesh)
  opt_state = jax.jit(tx.init, out_shardings=shardings.opt_state)(params)
  rng = jax.device_put(jax.random.split(jax.random.PRNGKey(seed))[1], shardings.rng)
  state = TrainState(step=jax.device_put(jnp.zeros((), jnp.int32), shardings.step),
                     params=params, opt_state=opt_state, rng=rng)
  workdir.mkdir(parents=True, exist_ok=True)
  tokenizer.path = str(save_tokenizer_file(tokenizer, workdir))
  ckpt = Checkpointer(workdir / "checkpoints", async_save=False)
  ckpt.save(0, state, cfg, stage="pretrain", tokenizer=tokenizer,
            extra={"imported_from": str(source.absolute()), "hf_model_type": hf["model_type"]})
  ckpt.close()
  if jax.process_index() == 0:
    (workdir / "config.json").write_text(config_lib.to_json(cfg))
  return workdir


def run_import_command(args) -> int:
  mesh_axes = {"fsdp": args.fsdp, "tensor": args.tensor}
  if args.peft:  # a PEFT adapter onto an msm-jax run, or onto an HF model imported to OUT/base
    from msm_jax.interop.peft import import_adapter_run, read_config  # noqa: PLC0415
    base = Path(args.source)
    if not (base / "checkpoints").is_dir():
      base = import_hf(args.source, Path(args.out) / "base", mesh_axes=mesh_axes,
                       param_dtype=args.param_dtype)
    out = import_adapter_run(args.peft, base, args.out)
    print(f"imported the PEFT adapter {args.peft} onto {base} -> {out} (a LoRA run)")
    lora = read_config(args.peft)
    print(f"next: msm train --config CONFIG --stage finetune --workdir RUN "
          f"--config.init_from={out} --config.lora.rank={lora.rank} "
          f"--config.lora.alpha={lora.alpha} --config.lora.targets=\"{tuple(lora.targets)}\"")
    return 0
  out = import_hf(args.source, args.out, mesh_axes=mesh_axes, param_dtype=args.param_dtype)
  print(f"imported {args.source} -> {out} (checkpoints/0, config.json, tokenizer.hf.json)")
  print(f"next: msm train --config CONFIG --stage midtrain --workdir RUN "
        f"--config.init_from={out}")
  return 0


def add_import_parser(subparsers) -> None:
  p = subparsers.add_parser("import-hf", help="import a Hugging Face model (safetensors)",
                            description="Convert a Hugging Face Llama-3.x / Qwen2 / Qwen3 model "
                            "directory into an msm-jax run directory (checkpoint step 0).")
  p.add_argument("--from", dest="source", required=True,
                 help="HF model directory (with --peft: or an msm-jax run to put the adapter on)")
  p.add_argument("--peft", default="", metavar="ADAPTER_DIR",
                 help="a PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors): "
                 "write a LoRA run on the base --from (an HF --from is imported to OUT/base)")
  p.add_argument("--out", required=True, help="run directory to write")
  p.add_argument("--param-dtype", default="float32", choices=("float32", "bfloat16"),
                 help="dtype of the stored parameters (float32 masters by default)")
  p.add_argument("--fsdp", type=int, default=1, help="mesh fsdp size used while importing")
  p.add_argument("--tensor", type=int, default=1, help="mesh tensor size used while importing")
  p.set_defaults(func=run_import_command)
