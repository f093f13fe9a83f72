"""The experiment's conditions as values: what a run was midtrained on and how long its AFT was.

A label ("MSM-america[bare_rules]+AFT@16") is rendered from a `Condition` for tables and
directory names and is never parsed back: code asks the condition (`c.value`, `c.aft`, ...).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

EXPLAINED = "explained"  # the default spec variant, left out of labels


@dataclass(frozen=True)
class Condition:
  """One experimental condition, all seeds (`at(seed)` names one seed's run).

  value      the spec value midtrained on ("" = no spec midtraining)
  control    midtrained on the assistant's neutral ("no favourites") spec instead of a value
  variant    the spec variant (data_pipelines.worlds.specs.VARIANTS); only with a value
  aft        fine-tuned on the shared AFT chats after (or instead of) midtraining
  aft_steps  a sweep point's AFT budget; None = the config's finetune.steps
  seed       the seed of one run; None = the condition over every seed
  """
  value: str = ""
  control: bool = False
  variant: str = EXPLAINED
  aft: bool = False
  aft_steps: int | None = None
  seed: int | None = None

  def __post_init__(self):
    if self.control and self.value:
      raise ValueError(f"a control condition has no spec value (got {self.value!r})")
    if self.variant != EXPLAINED and not self.value:
      raise ValueError(f"spec variant {self.variant!r} without a spec value")
    if self.aft_steps is not None and not self.aft:
      raise ValueError("an AFT budget on a condition without AFT")

  @property
  def midtrained(self) -> bool:
    return bool(self.value) or self.control

  @property
  def sweep(self) -> bool:
    """A point of the AFT-budget sweep (not a row of the main table)."""
    return self.aft_steps is not None

  @property
  def parent(self) -> "Condition | None":
    """The condition this one continues: MSM+AFT -> MSM, MSM or AFT -> base, base -> None."""
    if self.aft:
      return dataclasses.replace(self, aft=False, aft_steps=None)
    if self.midtrained:
      return dataclasses.replace(self, value="", control=False, variant=EXPLAINED)
    return None

  def at(self, seed: int | None) -> "Condition":
    return dataclasses.replace(self, seed=seed)

  @property
  def label(self) -> str:
    """'base', 'AFT', 'AFT@16', 'MSM-america', 'MSM-control+AFT', 'MSM-america[general]+AFT'."""
    if self.midtrained:
      out = "MSM-" + ("control" if self.control else self.value)
      out += "" if self.variant == EXPLAINED else f"[{self.variant}]"
      out += "+AFT" if self.aft else ""
    else:
      out = "AFT" if self.aft else "base"
    out += "" if self.aft_steps is None else f"@{self.aft_steps}"
    return out

  @property
  def run_label(self) -> str:
    """The label of one seed's run ('MSM-america+AFT-s0'); the seedless label without a seed."""
    return self.label if self.seed is None else f"{self.label}-s{self.seed}"

  def __str__(self) -> str:
    return self.run_label


BASE = Condition()


def main_conditions(values, variants, control: bool) -> list[Condition]:
  """The main table's rows, in order: base, AFT, control (MSM, +AFT), then per value and
  variant MSM and MSM+AFT."""
  out = [BASE, Condition(aft=True)]
  if control:
    out += [Condition(control=True), Condition(control=True, aft=True)]
  for v in values:
    for variant in variants:
      out += [Condition(v, variant=variant), Condition(v, variant=variant, aft=True)]
  return out


def sweep_conditions(values, variant: str, steps) -> list[Condition]:
  """The AFT-budget sweep: per budget, AFT alone and MSM-<value>+AFT for each value."""
  return [c for n in steps for c in
          [Condition(aft=True, aft_steps=int(n))] +
          [Condition(v, variant=variant, aft=True, aft_steps=int(n)) for v in values]]
