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

from msm_io import paths
from msm_jax import config as config_lib
from msm_jax import distributed
from msm_jax import sharding as shd
from msm_jax.checkpoint import (Checkpointer, Run, abstract_like, lora_base_record, open_run,
                                restore_lora_base)
from msm_jax.divergence import NonFiniteGuard
from msm_jax.resume import restore_newest
from msm_jax.run_guard import WorkdirLock, deferred_interrupt
from msm_jax.data.pipeline import (TOKENIZER_FILE, build_tokenizer, make_eval_batches,
                                   make_train_iterator)
from msm_jax.data.tokenizer import load_tokenizer_file, save_tokenizer_file
from msm_jax.flops import measure_matmul_peak, train_flops_per_token
from msm_jax.metrics import MetricsWriter
from msm_jax.lora import LoraModel, model_for
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


def _init_from(cfg, source: Run, steps, mesh) -> tuple[TrainState, dict | None]:
  """Parameters (and, with init_optimizer=keep, optimizer state and step) of another run, and
  with LoRA the record of the base the adapters train on (`checkpoint.lora_base_record`).

  LoRA from a full run (or, with lora.new_adapter, from a LoRA run's merged model): a fresh
  adapter on its parameters. LoRA from a LoRA run: its adapter, on its base. Full fine-tuning
  from a LoRA run: its merged parameters."""
  _same_model(cfg, source.config, cfg.init_from)
  lora = isinstance(steps.model_def, LoraModel)
  continue_adapter = lora and source.is_lora and not cfg.lora.new_adapter
  if (lora or source.is_lora) and not continue_adapter:
    if cfg.init_optimizer == "keep":
      raise config_lib.ConfigError("config.init_optimizer: keep needs the same trained "
                                   f"parameters as init_from {cfg.init_from}; use fresh")
    if lora:  # a new adapter on the source's (merged) parameters
      base = source.restore_params(steps.base_shardings)
      steps.set_base(base)
      return steps.init_state(cfg.seed), lora_base_record(source, base)
    params = source.restore_params(steps.state_shardings.params)
    state = TrainState(step=None, params=params, opt_state=None,
                       rng=jax.device_put(jax.random.PRNGKey(cfg.seed),
                                          steps.state_shardings.rng))
    return fresh_optimizer(state, steps.tx, mesh, steps.model_def), None
  record = None
  if continue_adapter:
    for key in ("rank", "alpha", "targets"):
      if cfg.lora[key] != source.config.lora[key]:
        raise config_lib.ConfigError(
            f"config.lora.{key}: {cfg.lora[key]!r} differs from {source.config.lora[key]!r} of "
            f"the adapter in init_from {cfg.init_from} (or set config.lora.new_adapter=True)")
    steps.set_base(restore_lora_base(source.meta, steps.base_shardings, str(source.path)))
    record = source.meta["lora_base"]
  source_tx = make_optimizer(source.config)
  shardings = state_shardings(source.trainable, source_tx, mesh)
  state = source.restore_state(abstract_like(_abstract_state(source.trainable, source_tx),
                                             shardings))
  if cfg.init_optimizer == "fresh":
    state = fresh_optimizer(state, steps.tx, mesh, steps.model_def)
  return state, record


def _abstract_state(model_def, tx) -> TrainState:
  params = model_def.pure_abstract()
  return TrainState(step=jax.ShapeDtypeStruct((), np.int32), params=params,
                    opt_state=jax.eval_shape(tx.init, params),
                    rng=jax.ShapeDtypeStruct((2,), np.uint32))


def _tokenizer(cfg, workdir: Path, continued: Run | None):
  """config.data.tokenizer if set; else the tokenizer of the run this one continues (its own
  checkpoint when resuming, else init_from's); else one trained on config.data.train. Written
  into the workdir, so every run directory carries the tokenizer its model reads."""
  if continued is not None and not cfg.data.tokenizer:
    tokenizer = continued.tokenizer
  else:
    tokenizer = _build_tokenizer_once(cfg, workdir)
    if (continued is not None and continued.has_tokenizer
        and continued.tokenizer.to_bytes() != tokenizer.to_bytes()):
      raise config_lib.ConfigError(
          f"config.data.tokenizer: {cfg.data.tokenizer} differs from the tokenizer of "
          f"{continued.path}, which this run continues; unset it to keep that one")
  if tokenizer.vocab_size > cfg.model.vocab_size:
    raise config_lib.ConfigError(f"config.model.vocab_size: {cfg.model.vocab_size} is smaller "
                                 f"than the tokenizer's {tokenizer.vocab_size} ({tokenizer.path})")
  if distributed.is_primary():
    save_tokenizer_file(tokenizer, workdir)
  return tokenizer


def _build_tokenizer_once(cfg, workdir):
  """Process 0 trains (and writes) the tokenizer; the others read the file it wrote."""
  if cfg.data.tokenizer or jax.process_count() == 1:
    return build_tokenizer(cfg, workdir)
  tokenizer = build_tokenizer(cfg, workdir) if distributed.is_primary() else None
  distributed.barrier("msm-tokenizer")
  return tokenizer or load_tokenizer_file(paths.path(workdir) / TOKENIZER_FILE)


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
  workdir = paths.path(workdir)  # local or gs://: one path layer (msm_io.paths)
  workdir.mkdir(parents=True, exist_ok=True)
  primary = jax.process_index() == 0
  with WorkdirLock(workdir, enabled=primary):
    ckpt = Checkpointer(workdir / "checkpoints", keep=cfg.keep_checkpoints,
                        async_save=cfg.async_checkpoints)
    try:
      return _train(cfg, workdir, devices, primary, ckpt)
    finally:  # every exit path (an error, Ctrl-C, a divergence) waits for an in-flight save
      ckpt.close()


def _train(cfg, workdir: Path, devices, primary: bool, ckpt: Checkpointer) -> TrainResult:
  mesh = shd.make_mesh(cfg, devices)
  model_def = model_for(cfg, ModelDef(ModelConfig.of(cfg.model)))  # LoRA: the adapters
  steps = StepFunctions(cfg, model_def, mesh)
  resumed = None
  source = open_run(cfg.init_from) if ckpt.latest_step() is None and cfg.init_from else None
  lora_base = None  # LoRA: the record of the frozen base, saved in every checkpoint's meta
  if isinstance(model_def, LoraModel) and ckpt.latest_step() is None and source is None:
    raise config_lib.ConfigError("config.init_from: LoRA (config.lora.rank > 0) adapts a base "
                                 "model; set init_from to a run or an imported model")
  try:
    if ckpt.latest_step() is not None:
      def prepare(run):
        tok = _tokenizer(cfg, workdir, run)
        it = make_train_iterator(cfg, tok)
        return (tok, it), it
      abstract = abstract_like(_abstract_state(model_def, steps.tx), steps.state_shardings)
      resumed, (tokenizer, data_iter), state = restore_newest(ckpt, cfg, prepare, abstract)
      if isinstance(model_def, LoraModel):
        steps.set_base(restore_lora_base(resumed.meta, steps.base_shardings, str(resumed.path)))
        lora_base = resumed.meta["lora_base"]
    else:
      tokenizer = _tokenizer(cfg, workdir, source)
      data_iter = make_train_iterator(cfg, tokenizer)
      if source is not None:
        state, lora_base = _init_from(cfg, source, steps, mesh)
      else:
        state = steps.init_state(cfg.seed)
  finally:
    if source is not None:
      source.close()
  if primary:
    (workdir / "config.json").write_text(config_lib.to_json(cfg))
  eval_batches = make_eval_batches(cfg, tokenizer, cfg.eval_batches) if cfg.data.eval else []

  start = int(jax.device_get(state.step))
  peak = cfg.peak_flops or measure_matmul_peak()
  flops_per_row = train_flops_per_token(cfg.model, cfg.seq_len) * cfg.seq_len
  writer = MetricsWriter(workdir, start_step=start, total_steps=cfg.steps,
                         progress=cfg.progress_bar, is_primary=primary)
  tokens_seen = float(resumed.meta.get("tokens_seen", 0.0)) if resumed is not None else 0.0
  guard = NonFiniteGuard(cfg)
  last, eval_loss, preempted = writer.last_record(), None, False
  pending = None  # (step, metrics on device) dispatched but not yet fetched
  last_time = time.perf_counter()

  def fetch(item):
    nonlocal tokens_seen, last_time, last, peak
    step, metrics = item
    metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
    finite = metrics.pop("finite", 1.0) > 0
    now = time.perf_counter()
    dt, last_time = now - last_time, now
    achieved = flops_per_row * cfg.batch_size / dt / len(devices)
    if achieved > peak and not cfg.peak_flops:
      # the probe ran on a busy machine (a step cannot beat the peak): probe again, and never
      # report an MFU above 1
      peak = max(measure_matmul_peak(), achieved)
      last_time = time.perf_counter()
    tokens_seen += metrics["tokens"]
    record = {"step": step, **metrics, "tokens_seen": tokens_seen, "step_time": dt,
              "tokens_per_sec": metrics["tokens"] / dt,
              "flops_per_token": flops_per_row / cfg.seq_len,
              "mfu": achieved / peak}
    guard.count(finite)
    if guard.skipped:
      record["nonfinite_steps"] = guard.skipped
    last = record
    writer.advance()
    if step % cfg.log_every == 0 or step == cfg.steps or not finite:
      writer.write(record)
    guard.check(step, finite, record, kept=_kept(ckpt))

  agree_stop = distributed.StopAgreement()  # every process stops at the same step
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
      preempted = agree_stop(preemption.requested)
      if step % cfg.checkpoint_every == 0 or step == cfg.steps or preempted:
        fetch(pending)  # this step's finite flag (a non-finite state is never saved), tokens_seen
        pending = None
        with deferred_interrupt():  # Ctrl-C never cuts a save in half
          ckpt.save(step, state, cfg, stage=cfg.stage, tokenizer=tokenizer, data_iter=data_iter,
                    extra={"tokens_seen": tokens_seen,
                           **({"lora_base": lora_base} if lora_base else {})})
      if preempted:
        break
    if pending is not None:
      fetch(pending)
  if not preempted and eval_batches:
    eval_loss = evaluate(steps, state.params, eval_batches, mesh)
    if start < cfg.steps:  # a rerun of a finished stage logs nothing new
      writer.write({"step": int(jax.device_get(state.step)), "eval_loss": eval_loss})
  writer.close()
  return TrainResult(state=state, workdir=workdir, last_metrics=last, eval_loss=eval_loss,
                     preempted=preempted)


def _kept(ckpt: Checkpointer) -> str:
  step = ckpt.latest_step()
  if step is None:
    return "No checkpoint was saved before it"
  return f"The last finite checkpoint, step {step}, is kept in {ckpt.directory / str(step)}"


def run_train_command(args) -> int:
  if args.distributed:  # multi-host (TPU pod, GPU/CPU cluster): one process per host
    distributed.initialize(args.coordinator, args.num_processes, args.process_id)
  cfg = config_lib.load_config(args.config)
  cfg.stage = args.stage
  config_lib.apply_overrides(cfg, args.config_overrides)
  result = train(cfg, args.workdir)
  m = result.last_metrics
  loss = m.get("loss")
  print(f"{cfg.stage}: step {m.get('step')} loss "
        + (f"{loss:.4f}" if isinstance(loss, (int, float)) else "n/a")
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
                 help="join a multi-host job first (one process per host): TPU pods "
                 "detect their peers; elsewhere give the three flags below or MSM_COORDINATOR, "
                 "MSM_NUM_PROCESSES, MSM_PROCESS_ID")
  p.add_argument("--coordinator", help="with --distributed: host:port of process 0")
  p.add_argument("--num-processes", type=int, help="with --distributed: number of processes")
  p.add_argument("--process-id", type=int, help="with --distributed: this process's id")
  p.set_defaults(func=run_train_command)
