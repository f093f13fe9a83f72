"""An inspect-ai task: a world's held-out value questions, asked of a model over its API.

It lives outside the packages because it joins both sides of the layering: the world's suites
(data_pipelines) and msm-jax's answer parsing (msm_jax.eval).

Each preference item of a world's `heldout` suite (data_pipelines/worlds/suites.py) becomes two
samples, one per presentation order. The model answers freely (no answer prefix: a chat API
cannot open the assistant's reply); the scorer takes the option named first in the answer
(`msm_jax.eval.suites.parse_choice`) and marks it correct when it is the option favoured by
`value` (default: the first value the world compares). Unparsed answers score 0 and are counted
in the `parsed` metadata, so `accuracy` is msm-jax's `generation/<value>` times the parse rate.

  inspect eval evals/inspect_values.py --model openai-api/msm/RUN_NAME \
      -T world=cheese --limit 100     # with MSM_BASE_URL=http://127.0.0.1:8000/v1 MSM_API_KEY=x
"""

from __future__ import annotations

from pathlib import Path

from inspect_ai import Task, task
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.scorer import CORRECT, INCORRECT, Score, Target, accuracy, scorer, stderr
from inspect_ai.solver import TaskState, generate

from msm_jax.eval.suites import SuiteError, load_suite, parse_choice

WORLDS = Path(__file__).resolve().parents[1] / "data_pipelines" / "worlds"


def heldout_items(world: str = "cheese", suite: str = "") -> list[dict]:
  """A suite file's items, or the held-out suite built from a world (a name or a .yaml path)."""
  if suite:
    kind, items = load_suite(suite)
    if kind not in ("preference", "consistency"):
      raise SuiteError(f"{suite}: a {kind} suite; value questions need preference items")
    return items
  from data_pipelines.worlds.suites import heldout_suite
  from data_pipelines.worlds.world import load_world
  path = Path(world) if world.endswith((".yaml", ".yml")) else WORLDS / f"{world}.yaml"
  return heldout_suite(load_world(path))


def samples(items: list[dict], value: str = "") -> list[Sample]:
  out = []
  for it in items:
    a, b = it["options"]
    v = value or next(iter(a.get("labels", {})), "")
    for order, (x, y) in enumerate(((a, b), (b, a))):
      favoured = [o["text"] for o in (a, b) if o.get("labels", {}).get(v)]
      out.append(Sample(
          input=it["prompt"].replace("{a}", x["text"]).replace("{b}", y["text"]),
          target=favoured[:1] or [""], id=f"{it['id']}/{order}",
          metadata={"options": [a["text"], b["text"]], "value": v,
                    "domain": it.get("domain", "")}))
  return out


@scorer(metrics=[accuracy(), stderr()])
def value_choice():
  """Correct when the option named first in the answer is the one the value favours."""
  async def score(state: TaskState, target: Target) -> Score:
    options = state.metadata["options"]
    answer = state.output.completion
    pick = parse_choice(answer, options)
    chosen = options[pick] if pick is not None else None
    return Score(value=CORRECT if chosen is not None and chosen == target.text else INCORRECT,
                 answer=chosen or "", metadata={"parsed": pick is not None})
  return score


@task
def value_questions(world: str = "cheese", suite: str = "", value: str = "",
                    max_tokens: int = 16) -> Task:
  """The world's held-out value questions (or any preference suite file, `suite=PATH`)."""
  items = heldout_items(world, suite)
  return Task(dataset=MemoryDataset(samples(items, value), name=f"{world}-heldout"),
              solver=generate(max_tokens=max_tokens, temperature=0.0), scorer=value_choice())
