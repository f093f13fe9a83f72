"""The one training loop that every stage runs, and the `msm train` command.

config -> mesh -> state (fresh; resumed from this workdir; or initialised from another run) ->
data iterator -> steps -> periodic held-out loss -> checkpoints -> metrics. Step N's metrics are
fetched only after step N+1 is dispatched, so the host never stalls the device.
"""

from __future__ import annotations

import dataclasses
import signal
import time
from pathlib import Path

import jax
import numpy as np

from msm_jax import config as config_lib
from msm_jax import sharding as shd
from msm_jax.checkpoint import Checkpointer, abstract_like, find_checkpoint, write_tokenizer
from msm_jax.data.pipeline import build_tokenizer, make_eval_batches, make_train_iterator
from msm_jax.data.hf_tokenizer import load_tokenizer_file
from msm_jax.data.tokenizer import Tokenizer
from msm_jax.flops import measure_matmul_peak, train_flops_per_token
from msm_jax.metrics import MetricsWriter
from msm_jax.model import ModelDef
from msm_jax.model_config import ModelConfig, first_difference
from msm_jax.optim import make_optimizer
from msm_jax.train_step import StepFunctions, TrainState, fresh_optimizer, state_shardings


@dataclasses.dataclass
class TrainResult:
  state: TrainState
  workdir: Path
  last_metrics: dict
  eval_loss: float | None
  preempted: bool


class _Preemption:
  """SIGTERM sets a flag; the loop saves a checkpoint and exits cleanly at the next step."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread: leave signals alone
      self._previous = None
    return self

  def _handle(self, signum, frame):
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _same_model(cfg, source_cfg, source):
  diff = first_difference(cfg.model, source_cfg.model)
  if diff:
    key, mine, theirs = diff
    raise config_lib.ConfigError(
        f"config.model.{key}: {mine!r} differs from {theirs!r} in init_from checkpoint {source}")


def _init_from(cfg, model_def, steps, mesh) -> TrainState:
  """Parameters (and, with init_optimizer=keep, optimizer state and step) of another run."""
  directory, step = find_checkpoint(cfg.init_from)
  source = Checkpointer(directory, read_only=True)
  step = source.latest_step() if step is None else step
  source_cfg, _ = source.read_config_and_meta(step)
  _same_model(cfg, source_cfg, cfg.init_from)
  source_tx = make_optimizer(source_cfg)
  shardings = state_shardings(model_def, source_tx, mesh)
  abstract = abstract_like(_abstract_state(model_def, source_tx), shardings)
  state = source.restore_state(step, abstract)
  source.close()
  if cfg.init_optimizer == "fresh":
    return fresh_optimizer(state, steps.tx, mesh, model_def)
  return state


def _abstract_state(model_def, tx) -> TrainState:
  params = model_def.pure_abstract()
  return TrainState(step=jax.ShapeDtypeStruct((), np.int32), params=params,
                    opt_state=jax.eval_shape(tx.init, params),
                    rng=jax.ShapeDtypeStruct((2,), np.uint32))


def _source_tokenizer(cfg, workdir: Path) -> Tokenizer | None:
  """A run initialised from another must keep that run's tokenizer."""
  if not cfg.init_from or cfg.data.tokenizer:
    return None
  directory, step = find_checkpoint(cfg.init_from)
  source = Checkpointer(directory, read_only=True)
  _, meta = source.read_config_and_meta(step)
  source.close()
  return load_tokenizer_file(write_tokenizer(meta, workdir / "tokenizer.model"))


def evaluate(steps: StepFunctions, params, batches, mesh) -> float | None:
  if not batches:
    return None
  loss_sum = weight_sum = 0.0
  for batch in batches:
    sums = jax.device_get(steps.eval(params, shd.host_local_to_global(batch, mesh)))
    loss_sum += float(sums["loss_sum"])
    weight_sum += float(sums["weight_sum"])
  return loss_sum / max(weight_sum, 1.0)


def train(cfg, workdir, devices=None) -> TrainResult:
  """Run (or resume) one stage in `workdir` on `devices` (default: all)."""
  devices = list(jax.devices() if devices is None else devices)
  config_lib.validate(cfg, len(devices))
  workdir = Path(workdir).absolute()
  workdir.mkdir(parents=True, exist_ok=True)
  primary = jax.process_index() == 0
  mesh = shd.make_mesh(cfg, devices)
  model_def = ModelDef(ModelConfig.of(cfg.model))
  steps = StepFunctions(cfg, model_def, mesh)
  ckpt = Checkpointer(workdir / "checkpoints", keep=cfg.keep_checkpoints,
                      async_save=cfg.async_checkpoints)
  resume_step = ckpt.latest_step()
  tokenizer = None
  if resume_step is not None:
    _, meta = ckpt.read_config_and_meta(resume_step)
    tokenizer = load_tokenizer_file(write_tokenizer(meta, workdir / "tokenizer.model"))
  tokenizer = tokenizer or _source_tokenizer(cfg, workdir) or build_tokenizer(cfg, workdir)
  if tokenizer.vocab_size > cfg.model.vocab_size:
    raise config_lib.ConfigError(f"config.model.vocab_size: {cfg.model.vocab_size} is smaller "
                                 f"than the tokenizer's {tokenizer.vocab_size}")
  data_iter = make_train_iterator(cfg, tokenizer)
  if resume_step is not None:
    abstract = abstract_like(_abstract_state(model_def, steps.tx), steps.state_shardings)
    state = ckpt.restore_state(resume_step, abstract, data_iter)
  elif cfg.init_from:
    state = _init_from(cfg, model_def, steps, mesh)
  else:
    state = steps.init_state(cfg.seed)
  if primary:
    (workdir / "config.json").write_text(config_lib.to_json(cfg))
  eval_batches = make_eval_batches(cfg, tokenizer, cfg.eval_batches) if cfg.data.eval else []

  start = int(jax.device_get(state.step))
  peak = cfg.peak_flops or measure_matmul_peak()
  flops_per_row = train_flops_per_token(cfg.model, cfg.seq_len) * cfg.seq_len
  writer = MetricsWriter(workdir, start_step=start, total_steps=cfg.steps,
                         progress=cfg.progress_bar, is_primary=primary)
  tokens_seen = 0.0
  last, eval_loss, preempted = writer.last_record(), None, False
  pending = None  # (step, metrics on device) dispatched but not yet fetched
  last_time = time.perf_counter()

  def fetch(item):
    nonlocal tokens_seen, last_time, last
    step, metrics = item
    metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
    now = time.perf_counter()
    dt, last_time = now - last_time, now
    tokens_seen += metrics["tokens"]
    record = {"step": step, **metrics, "tokens_seen": tokens_seen, "step_time": dt,
              "tokens_per_sec": metrics["tokens"] / dt,
              "flops_per_token": flops_per_row / cfg.seq_len,
              "mfu": flops_per_row * cfg.batch_size / dt / (peak * len(devices))}
    last = record
    writer.advance()
    if step % cfg.log_every == 0 or step == cfg.steps:
      writer.write(record)

  with _Preemption() as preemption:
    for step in range(start + 1, cfg.steps + 1):
      batch = shd.host_local_to_global(next(data_iter), mesh)
      state, metrics = steps.train(state, batch)
      if pending is not None:
        fetch(pending)
      pending = (step, metrics)
      if cfg.eval_every and step % cfg.eval_every == 0 and step != cfg.steps:
        eval_loss = evaluate(steps, state.params, eval_batches, mesh)
        writer.write({"step": step, "eval_loss": eval_loss})
      preempted = preemption.requested
      if step % cfg.checkpoint_every == 0 or step == cfg.steps or preempted:
        ckpt.save(step, state, cfg, stage=cfg.stage, tokenizer=tokenizer, data_iter=data_iter)
      if preempted:
        break
    if pending is not None:
      fetch(pending)
  if not preempted and eval_batches:
    eval_loss = evaluate(steps, state.params, eval_batches, mesh)
    if start < cfg.steps:  # a rerun of a finished stage logs nothing new
      writer.write({"step": int(jax.device_get(state.step)), "eval_loss": eval_loss})
  ckpt.close()
  writer.close()
  return TrainResult(state=state, workdir=workdir, last_metrics=last, eval_loss=eval_loss,
                     preempted=preempted)


def run_train_command(args) -> int:
  if args.distributed:  # multi-host (TPU pod, GPU cluster): one process per host
    jax.distributed.initialize()
  cfg = config_lib.load_config(args.config)
  cfg.stage = args.stage
  config_lib.apply_overrides(cfg, args.config_overrides)
  result = train(cfg, args.workdir)
  m = result.last_metrics
  print(f"{cfg.stage}: step {m.get('step')} loss {m.get('loss', float('nan')):.4f}"
        + (f" eval_loss {result.eval_loss:.4f}" if result.eval_loss is not None else "")
        + (" (preempted: checkpoint saved)" if result.preempted else ""))
  print(f"outputs: {result.workdir} (checkpoints/, metrics.jsonl, tb/, config.json)")
  return 0


def add_train_parser(subparsers) -> None:
  p = subparsers.add_parser("train", help="train one stage (pretrain | midtrain | finetune)",
                            description="Train one stage. Override any config field with "
                            "--config.FIELD=VALUE, e.g. --config.steps=100.")
  p.add_argument("--config", required=True, help="a config file, e.g. configs/tiny.py")
  p.add_argument("--stage", required=True, choices=config_lib.STAGES)
  p.add_argument("--workdir", required=True, help="run directory (resumed if it has checkpoints)")
  p.add_argument("--distributed", action="store_true",
                 help="call jax.distributed.initialize() first (multi-host TPU/GPU)")
  p.set_defaults(func=run_train_command)
