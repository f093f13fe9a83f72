"""`msm serve --workdir RUN`: load a checkpoint with `Evaluator.from_checkpoint` and serve it."""

from __future__ import annotations

from pathlib import Path


def add_serve_parser(subparsers) -> None:
  p = subparsers.add_parser("serve", help="serve a checkpoint over an OpenAI-compatible HTTP API")
  p.add_argument("--workdir", required=True, help="run workdir, checkpoints dir or step dir")
  p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  p.add_argument("--host", default="127.0.0.1")
  p.add_argument("--port", type=int, default=8000)
  p.add_argument("--model-name", default="", help="the model id clients send (default: the "
                 "workdir's name)")
  p.add_argument("--max-context", type=int, default=0,
                 help="prompt + completion tokens (default: the run's seq_len)")
  p.add_argument("--slots", type=int, default=16, help="rows decoded together")
  p.add_argument("--max-queue", type=int, default=256,
                 help="queued sequences beyond which requests get 429")
  p.set_defaults(func=run)


def build(workdir, *, step=None, model_name="", max_context=0, slots=16, max_queue=256,
          mesh=None):
  """-> (FastAPI app, Server) for a run; the model id defaults to the workdir's name."""
  from msm_jax.eval import Evaluator
  from msm_jax.serve.app import Server, create_app
  ev = Evaluator.from_checkpoint(workdir, mesh, step=step)
  server = Server(ev, model_name or Path(workdir).resolve().name, max_context=max_context or None,
                  slots=slots, max_queue=max_queue)
  return create_app(server), server


def run(args) -> int:
  import uvicorn
  app, server = build(args.workdir, step=args.step, model_name=args.model_name,
                      max_context=args.max_context, slots=args.slots, max_queue=args.max_queue)
  print(f"msm serve: model '{server.model_name}' on http://{args.host}:{args.port}/v1", flush=True)
  try:
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
  finally:
    server.engine.close()
  return 0
