"""Graders for open questions: how good is a free-text answer?

A grader has a `name` and `grade(evaluator, items, prompts, answers) -> [per-item dict]`, each
dict mapping metric names to a value (None when it has none for that item) plus an optional
`"detail"` kept in the record. Two come with the harness:

- `ReferenceLogprobGrader` (offline, the default): how likely the evaluated model finds the
  item's reference answer, and whether it prefers it over the item's distractors. It grades the
  model's knowledge, not the generated text, so it needs no second model.
- `LLMGrader(judge)`: a judge model reads the question, rubric, reference and answer and
  gives a 0-10 score. `judge` is the data pipeline's API client
  (`data_pipelines.llm_client.LLMClient(LLMConfig(provider="anthropic"))`: retries, an on-disk
  cache, bounded concurrency), or any object with `complete(str) -> str`, or such a function,
  e.g. another model: `lambda p: judge_ev.generate([[{"role": "user", "content": p}]],
  256)[0].text`.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

JUDGE_TEMPLATE = """You are grading an AI assistant's answer to a question.

Question:
{question}

Rubric (what a good answer does):
{rubric}

Reference answer:
{reference}

The assistant's answer:
{answer}

Rate how well the assistant's answer meets the rubric, from 0 (not at all) to 10 (fully).
Reply with a short justification, then a last line of the form "SCORE: <number>"."""

_SCORE = re.compile(r"SCORE:\s*([0-9]+(?:\.[0-9]+)?)", re.IGNORECASE)


class ReferenceLogprobGrader:
  """reference_logprob: per-token log-prob of the reference answer after the prompt;
  reference_preferred (items with `distractors`): 1 if the reference beats every distractor by
  per-token log-prob, else 0."""

  name = "reference_logprob"

  def grade(self, evaluator, items, prompts, answers) -> list[dict]:
    contexts, options = [], []
    for it, prompt in zip(items, prompts):
      contexts.append(prompt)
      options.append([it["reference"], *it.get("distractors", [])])
    choices = evaluator.forced_choice(contexts, options, length_normalize=True)
    out = []
    for it, ch in zip(items, choices):
      grade = {"reference_logprob": ch.option_scores[0]}
      if it.get("distractors"):
        grade["reference_preferred"] = float(ch.choice == 0)
      out.append(grade)
    return out


class LLMGrader:
  """Scores answers with a judge model: llm_score in [0, 1] (None when the judge's reply has no
  SCORE line) and llm_parse_rate."""

  def __init__(self, judge, *, template: str = JUDGE_TEMPLATE, max_score: float = 10.0,
               name: str = "llm", concurrency: int | None = None):
    self.complete = judge.complete if hasattr(judge, "complete") else judge
    self.template, self.max_score, self.name = template, max_score, name
    config = getattr(judge, "config", None)  # an LLMClient bounds its own requests in flight
    self.concurrency = concurrency or getattr(config, "concurrency", 1)

  def judge_prompt(self, item: dict, answer: str) -> str:
    return self.template.format(question=item["prompt"], rubric=item.get("rubric", "(none)"),
                                reference=item["reference"], answer=answer)

  def parse(self, reply: str) -> float | None:
    found = _SCORE.findall(reply or "")
    if not found:
      return None
    return min(max(float(found[-1]) / self.max_score, 0.0), 1.0)

  def grade(self, evaluator, items, prompts, answers) -> list[dict]:
    todo = [(i, self.judge_prompt(it, a)) for i, (it, a) in enumerate(zip(items, answers))
            if a is not None]
    with ThreadPoolExecutor(max(1, self.concurrency)) as pool:
      replies = dict(zip([i for i, _ in todo], pool.map(self.complete, [p for _, p in todo])))
    out = []
    for i in range(len(items)):
      if i not in replies:
        out.append({"llm_score": None, "llm_parse_rate": None})
        continue
      score = self.parse(replies[i])
      out.append({"llm_score": score, "llm_parse_rate": float(score is not None),
                  "detail": replies[i]})
    return out
