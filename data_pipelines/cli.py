"""`msm generate docs|aft`, `msm data build-tfds` and `msm world generate`: argument parsing and
the end-of-run summary.

Heavy modules are imported inside the handlers so `msm --help` stays fast.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from msm_io.errors import UserError


def add_generate_parser(subparsers) -> None:
  p = subparsers.add_parser("generate", help="generate MSM documents or AFT chats from a spec")
  sub = p.add_subparsers(dest="generate_what", metavar="WHAT", required=True)
  docs = sub.add_parser("docs", help="synthetic documents that discuss the spec (for midtraining)")
  _common(docs)
  docs.add_argument("--num-docs", type=int, default=200, help="documents wanted (default 200)")
  docs.add_argument("--fanout", default="", metavar="D,S,A,T,I",
                    help="children per node: domains,subdomains,assertions,doc types,ideas "
                         "(default: smallest balanced fan-out holding --num-docs)")
  docs.add_argument("--docs-per-idea", type=int, default=1)
  docs.add_argument("--stratified", action="store_true",
                    help="template backend: every spec section gets floor(N/sections) documents "
                         "or one more (default: each domain samples its sections)")
  docs.set_defaults(func=run_docs)
  aft = sub.add_parser("aft", help="chat demonstrations of the spec (for alignment fine-tuning)")
  _common(aft)
  aft.add_argument("--num-chats", type=int, default=200)
  aft.add_argument("--subjects", choices=("all", "preferences", "principles"), default="all",
                   help="which spec clauses the queries are about")
  aft.add_argument("--no-explain", dest="explain", action="store_false",
                   help="visible answers state preferences without the spec's reasons "
                        "(the reasons stay in <think>)")
  aft.add_argument("--judge", action="store_true", help="llm backend: keep only judged-good chats")
  aft.set_defaults(func=run_aft)


def add_data_parser(subparsers) -> None:
  p = subparsers.add_parser("data", help="corpus utilities")
  sub = p.add_subparsers(dest="data_command", metavar="COMMAND", required=True)
  b = sub.add_parser("build-tfds", help="pack a documents or chats jsonl into TFDS array_record")
  b.add_argument("--input", required=True, help="dataset.jsonl (documents or chats)")
  b.add_argument("--out", required=True, help="TFDS data_dir to write into")
  b.add_argument("--kind", choices=("auto", "documents", "chats"), default="auto")
  b.add_argument("--name", default="", help="dataset config name (default: from the input path)")
  b.add_argument("--validation-fraction", type=float, default=0.0)
  b.add_argument("--seed", type=int, default=0)
  b.set_defaults(func=run_build_tfds)


def add_world_parser(subparsers) -> None:
  p = subparsers.add_parser("world", help="synthetic worlds for `msm run`")
  sub = p.add_subparsers(dest="world_command", metavar="COMMAND", required=True)
  g = sub.add_parser("generate", help="write random worlds in the YAML format of cheese.yaml")
  g.add_argument("--seed", type=int, default=0, help="the world's seed (the first, with --count)")
  g.add_argument("--out", required=True,
                 help="world file to write; with --count, a directory for world-<seed>.yaml")
  g.add_argument("--count", type=int, default=0,
                 help="write this many worlds, seeds SEED..SEED+COUNT-1 (default: one, to --out)")
  g.set_defaults(func=run_world_generate)


def _common(p: argparse.ArgumentParser) -> None:
  p.add_argument("--spec", required=True, help="spec file (.yaml, .md or .txt)")
  p.add_argument("--out", required=True, help="output directory (reused to resume or top up)")
  p.add_argument("--backend", choices=("template", "llm"), default="template")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--preview", action="store_true", help="print the projected counts and stop")
  p.add_argument("--model-name", default=None, help="fills {model_name} (overrides the spec)")
  p.add_argument("--provider-name", default=None, help="fills {provider_name}")
  p.add_argument("--no-progress", dest="progress", action="store_false")
  g = p.add_argument_group("llm backend (API key from the environment only)")
  g.add_argument("--llm-provider", choices=("anthropic", "openai"), default="anthropic")
  g.add_argument("--llm-model", default="")
  g.add_argument("--llm-base-url", default="", help="e.g. http://localhost:8000/v1 for a local "
                                                    "OpenAI-compatible server")
  g.add_argument("--llm-api-key-env", default="",
                 help="variable holding the key (default ANTHROPIC_API_KEY / OPENAI_API_KEY)")
  g.add_argument("--llm-concurrency", type=int, default=8)
  g.add_argument("--llm-timeout", type=float, default=120.0)
  g.add_argument("--llm-max-retries", type=int, default=6)
  g.add_argument("--llm-max-tokens", type=int, default=4096)
  g.add_argument("--llm-temperature", type=float, default=1.0)
  g.add_argument("--llm-cache", default="", help="response cache (default OUT/llm_cache)")


def _load(args):
  from data_pipelines.spec import load_spec
  return load_spec(args.spec, args.model_name, args.provider_name)


def _client(args):
  from data_pipelines.llm_client import LLMClient, LLMConfig
  cfg = LLMConfig(provider=args.llm_provider, model=args.llm_model, base_url=args.llm_base_url,
                  api_key_env=args.llm_api_key_env, max_tokens=args.llm_max_tokens,
                  temperature=args.llm_temperature, timeout_s=args.llm_timeout,
                  max_retries=args.llm_max_retries, concurrency=args.llm_concurrency,
                  cache_dir=args.llm_cache or os.path.join(args.out, "llm_cache"))
  return LLMClient(cfg)


def _print_box(title: str, rows: list[tuple[str, object]]) -> None:
  width = max(len(k) for k, _ in rows)
  print(f"\n== {title} " + "=" * max(0, 60 - len(title)))
  for k, v in rows:
    print(f"  {k:<{width}}  {v}")


def _guard(fn):
  """Marks this command's plain ValueErrors (a bad --fanout, a clashing --out, an input the
  TFDS builder refuses) as user errors, which `msm` prints as one line (msm_jax/errors.py)."""
  def run(args) -> int:
    try:
      return fn(args)
    except ValueError as e:
      raise UserError(str(e)) from e
  return run


@_guard
def run_docs(args) -> int:
  from data_pipelines.docgen import DocumentGenerator, Plan
  spec = _load(args)
  plan = (Plan.parse(args.fanout, args.docs_per_idea) if args.fanout
          else Plan.for_count(args.num_docs, args.docs_per_idea))
  if args.stratified:
    if args.backend != "template" or args.fanout:
      raise ValueError("--stratified needs the template backend and its own plan (no --fanout)")
    from data_pipelines.template.backend import TemplateBackend
    plan = Plan.stratified(args.num_docs, len(spec.clauses()), docs_per_idea=args.docs_per_idea)
    client, backend = None, TemplateBackend(spec, args.seed, stratify_domains=plan.domains)
  elif args.backend == "llm":
    from data_pipelines.llm_backend import LLMBackend
    client = _client(args)
    backend = LLMBackend(spec, client)
  else:
    from data_pipelines.template.backend import TemplateBackend
    client, backend = None, TemplateBackend(spec, args.seed)
  gen = DocumentGenerator(spec, args.out, backend, plan, args.num_docs, args.seed, args.progress)
  if args.preview:
    pv = gen.preview()
    _print_box("preview", [("spec", f"{spec.name} ({spec.content_hash()})"),
                           ("fan-out", " x ".join(f"{v} {k}" for k, v in pv["plan"].items())),
                           ("capacity", pv["capacity"]),
                           ("projected documents", pv["projected_documents"]),
                           ("already generated", pv["already_generated"]),
                           ("to generate", pv["to_generate"])])
    return 0
  t0 = time.perf_counter()
  summary, stats = gen.run()
  dt = time.perf_counter() - t0
  tok, sim = summary["tokens"], summary["similarity"]
  rows = [("spec", f"{spec.name} ({summary['spec_hash']})"),
          ("backend", " ".join(f"{v}" for v in summary["backend"].values())),
          ("documents", f"{summary['documents']} of {summary['documents_wanted']} wanted "
                        f"({stats.generated} new, {stats.reused} reused, {stats.missing} missing)"),
          ("tokens", f"{tok.get('total_tokens', 0)} total, mean {tok.get('mean_tokens', 0)}, "
                     f"p90 {tok.get('p90_tokens', 0)} (whitespace)"),
          ("near-duplicates", f"{sim['near_duplicate_pairs']} of {sim['pairs']} pairs "
                              f"({sim['near_duplicate_share']:.2e}) above 5-gram Jaccard 0.5"),
          ("doc types", len(summary["by_doc_type"])),
          ("failures", f"{len(stats.failures)} (see failures.json; rerun to retry)"),
          ("time", f"{dt:.1f} s ({stats.generated / dt if dt else 0:.0f} new docs/s)"),
          ("output", Path(args.out) / "dataset.jsonl")]
  if client:
    rows.insert(-1, ("llm requests", ", ".join(f"{k} {v}" for k, v in client.stats.items())))
  _print_box("msm generate docs", rows)
  return 0 if summary["documents"] else 1


@_guard
def run_aft(args) -> int:
  from data_pipelines.aft import AFTConfig, generate_aft
  spec = _load(args)
  cfg = AFTConfig(num_chats=args.num_chats, seed=args.seed, subjects=args.subjects,
                  explain=args.explain, judge=args.judge)
  client = _client(args) if args.backend == "llm" else None
  if args.preview:
    from data_pipelines.aft import candidate_count
    _print_box("preview", [("spec", f"{spec.name} ({spec.content_hash()})"),
                           ("projected chats", min(args.num_chats, candidate_count(spec, cfg)))])
    return 0
  t0 = time.perf_counter()
  summary = generate_aft(spec, args.out, cfg, client, args.progress)
  dt = time.perf_counter() - t0
  rows = [("spec", f"{spec.name} ({summary['spec_hash']})"),
          ("backend", summary["backend"]["name"]),
          ("chats", f"{summary['chats']} of {summary['chats_wanted']} wanted"),
          ("by kind", ", ".join(f"{k} {v}" for k, v in summary["by_kind"].items())),
          ("near-duplicate queries removed", summary["near_duplicate_queries_removed"]),
          ("judge rejected", summary.get("judge_rejected", "-")),
          ("failures", summary["failures"]),
          ("time", f"{dt:.1f} s"),
          ("output", f"{Path(args.out) / 'reasoning' / 'dataset.jsonl'} (+ stripped/)")]
  _print_box("msm generate aft", rows)
  return 0 if summary["chats"] else 1


@_guard
def run_build_tfds(args) -> int:
  from data_pipelines.tfds_builder import build_tfds
  t0 = time.perf_counter()
  info = build_tfds(args.input, args.out, kind=args.kind, name=args.name or None,
                    validation_fraction=args.validation_fraction, seed=args.seed)
  _print_box("msm data build-tfds", [
      ("input", args.input), ("kind", info["kind"]), ("examples", info["splits"]),
      ("version", info["version"]), ("time", f"{time.perf_counter() - t0:.1f} s"),
      ("read with", f"tfds.builder_from_directory('{info['path']}').as_data_source('train')")])
  return 0


@_guard
def run_world_generate(args) -> int:
  from data_pipelines.worlds.generate import write_worlds
  for path in write_worlds(args.out, args.seed, args.count):
    print(path)
  return 0
