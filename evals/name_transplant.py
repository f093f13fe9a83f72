"""Where does a tiny model keep an assistant's value? Swap the assistant's name embedding.

For each checkpoint: how close the assistant's input embedding is (cosine) to the mean embedding
of the other assistants that act on each compared value in pretraining chats, and the pro-`a`
rate on the world's held-out pairs with the assistant's embedding as it is and replaced by each
group's mean (rescaled to its own norm). On generated world 1002's base model the swap alone
moved the assistant from 0.25 to 1.00 (the `a` group) and 0.00 (the `b` group), while 250 steps
of midtraining on a spec moved it to 0.45, its embedding barely (docs/experiment.md, "Where the
value lives"): the choice is read from the name's embedding, so a recipe that leaves the
embedding where it was leaves the choice too.

  python evals/name_transplant.py runs/experiments/cheese/data/cheese-<key> \
      runs/experiments/cheese/runs/base-s0-<key> runs/experiments/cheese/runs/MSM-america-s0-<key>

Prints one JSON line per checkpoint. Needs the assistant's and the characters' names to be one
token each after a space (true of the shipped and generated worlds' tokenizers).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from data_pipelines.worlds.world import fill, load_world
from msm_io.files import read_jsonl
from msm_jax.eval import Evaluator
from msm_jax.eval import loading
from msm_jax.eval.evaluator import Chat


def chat_characters(data_dir: Path, world) -> dict[str, list[str]]:
  """{value: names of the characters acting on it in pretraining chats}, read off the corpus."""
  out = defaultdict(set)
  for row in read_jsonl(data_dir / "pretrain.jsonl"):
    kind, _, name = row["source"].partition(":")
    if kind != "chat-profiles":
      continue
    for value in world.compare:
      if any(fill(s, who=name) in row["text"] for s in world.values[value].statements):
        out[value].add(name)
  return {v: sorted(n) for v, n in out.items()}


def heldout_rate(ev: Evaluator, items: list[dict], value: str) -> float:
  contexts, options = [], []
  for it in items:
    a, b = (o["text"] for o in it["options"])
    ask = lambda x, y: Chat(({"role": "user", "content": it["prompt"].format(a=x, b=y)},),
                            it["answer_prefix"])
    contexts.append([ask(a, b), ask(b, a)])
    options.append([a, b])
  picks = ev.forced_choice(contexts, options)
  return float(np.mean([it["options"][p.choice]["labels"][value] for p, it in zip(picks, items)]))


def transplant(data_dir: Path, run: Path) -> dict:
  world = load_world(data_dir / "world.yaml")
  a = world.compare[0]
  items = list(read_jsonl(data_dir / "suites" / "heldout.jsonl"))
  cfg, params, tok, mesh, _ = loading.load_checkpoint(run)
  table = np.asarray(params["embed"])
  token = lambda name: tok.encode(" " + name)
  ids = token(world.assistant)
  if len(ids) != 1:
    raise ValueError(f"{run}: the assistant's name {world.assistant!r} is {len(ids)} tokens")
  own = table[ids[0]]
  out = {"run": Path(run).name, "norm": float(np.linalg.norm(own))}
  groups = {}
  for value, names in chat_characters(data_dir, world).items():
    rows = [token(n)[0] for n in names if len(token(n)) == 1]
    groups[value] = table[rows].mean(0)
    out[f"cos_{value}"] = float(own @ groups[value] / np.linalg.norm(own)
                                / np.linalg.norm(groups[value]))
  out[f"pro_{a}"] = heldout_rate(Evaluator(cfg, params, tok, mesh), items, a)
  for value, mean in groups.items():
    swapped = table.copy()
    swapped[ids[0]] = mean * np.linalg.norm(own) / np.linalg.norm(mean)
    ev = Evaluator(cfg, {**params, "embed": swapped}, tok, mesh)
    out[f"pro_{a}_as_{value}"] = heldout_rate(ev, items, a)
  return out


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("data", type=Path, help="an experiment's data/<world>-<key>/ directory")
  p.add_argument("runs", type=Path, nargs="+", help="run directories (checkpoints) to inspect")
  args = p.parse_args(argv)
  for run in args.runs:
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v
                      for k, v in transplant(args.data, run).items()}), flush=True)


if __name__ == "__main__":
  main()
