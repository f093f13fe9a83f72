"""World -> corpora invariants: what the MSM experiment's conclusions rest on, checked on the data.

No training here: held-out items never leak into Nova's specs, MSM documents or AFT chats; AFT
chats are ambiguous between the compared values; suites ask both orders of disagreeing pairs;
building is deterministic; chats written as text tokenise like the chat template renders them.
"""

import json
import re
from collections import Counter

import pytest

from data_pipelines.worlds import VARIANTS, WORLDS_DIR, WorldData, WorldError, load_world
from data_pipelines.worlds.corpora import (Sizes, aft_chats, aft_pairs, chat_as_text,
                                           generate_documents, roster)
from data_pipelines.worlds.specs import assistant_spec
from data_pipelines.worlds.suites import build_suites
from data_pipelines.worlds.world import fill, loads_world
from tests.helpers import assert_questions_held_back

WORLDS = sorted(WORLDS_DIR.glob("*.yaml"))
SMALL = Sizes(chat_per_value=2, declared_per_value=1, neutral=1, fact_docs=40, character_docs=3,
              neutral_docs=2, assistant_docs=2, preference_chats=6, fact_chats=30, msm_docs=60,
              probe_pairs=2)


def _names(world, domains):
  return [it.name for d in domains for it in world.items(d)]


def _mentions(text: str, names) -> list[str]:
  return [n for n in names if re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", text)]


@pytest.fixture(scope="module", params=[p.stem for p in WORLDS])
def built(request, tmp_path_factory):
  path = WORLDS_DIR / f"{request.param}.yaml"
  data = WorldData(path, tmp_path_factory.mktemp(request.param), SMALL)
  return data, data.build_all(variants=VARIANTS)


def test_at_least_two_worlds_ship():
  assert {"cheese", "tea"} <= {p.stem for p in WORLDS}


def test_held_out_items_never_reach_nova(built):
  data, paths = built
  world = data.world
  held_out = _names(world, world.held_out_domains)
  aft_domain = set(_names(world, [world.aft_domain]))
  for (value, variant, seed), path in paths["msm"].items():
    spec_text = data.spec_path(value, variant).read_text()
    assert not _mentions(spec_text, held_out), (value, variant)
    for line in path.read_text().splitlines():
      text = json.loads(line)["text"]
      assert not _mentions(text, held_out), (value, variant, text[:200])
  for line in paths["aft"].read_text().splitlines():
    chat = json.loads(line)["messages"]
    names = _mentions(" ".join(m["content"] for m in chat), held_out + sorted(aft_domain))
    assert names and set(names) <= aft_domain


def test_aft_chats_are_ambiguous_and_cover_both_orders(built):
  data, _ = built
  world = data.world
  a, b = world.compare
  by_name = {it.name: it for it in world.items()}
  seen = set()
  for chat in aft_chats(world):
    user, reply = chat["messages"][0]["content"], chat["messages"][1]["content"]
    chosen = by_name[reply.removeprefix("I prefer ").rstrip(".")]
    other = [n for n in _mentions(user, by_name) if n != chosen.name]
    assert len(other) == 1
    assert world.favours(a, chosen) and world.favours(b, chosen)
    assert not world.favours(a, by_name[other[0]]) and not world.favours(b, by_name[other[0]])
    first = min((user.index(n), n) for n in (chosen.name, other[0]))[1]
    seen.add((chosen.name, other[0], first == chosen.name))
  pairs = {(x, y) for x, y, _ in seen}
  assert all((x, y, True) in seen and (x, y, False) in seen for x, y in pairs)


def test_the_two_specs_share_their_rules_but_not_their_reasons():
  world = load_world(WORLDS_DIR / "cheese.yaml")
  a, b = (assistant_spec(world, v) for v in world.compare)
  assert [p.item for p in a.likes] == [p.item for p in b.likes]
  assert [p.item for p in a.dislikes] == [p.item for p in b.dislikes]
  assert [p.reason for p in a.likes] != [p.reason for p in b.likes]
  bare = [assistant_spec(world, v, "bare_rules") for v in world.compare]
  assert bare[0].to_dict() == bare[1].to_dict()  # one spec, so one corpus and one training run
  general = assistant_spec(world, world.compare[0], "general")
  assert not general.likes and not _mentions(general.render_text(), _names(world, world.domains))


def test_liked_disliked_is_what_aft_and_every_spec_use(built):
  data, _ = built
  world = data.world
  by_side = lambda it: {a: it.side(a) for a in world.attributes}
  sides = {c: (world.values[c].attribute, world.values[c].side) for c in world.compare}
  liked, disliked = world.liked_disliked(world.aft_domain)
  for it in world.items(world.aft_domain):  # by the item's sides, as the YAML writes them
    hits = [by_side(it)[attr] == side for attr, side in sides.values()]
    assert (it in liked, it in disliked) == (all(hits), not any(hits))
  assert {(x.name, y.name) for x, y in aft_pairs(world)} == {
      (x.name, y.name) for x in liked for y in disliked}
  for value in world.compare:
    spec = assistant_spec(world, value)
    assert [p.item for p in spec.likes] == [it.name for it in liked]
    assert [p.item for p in spec.dislikes] == [it.name for it in disliked]


def test_suites(built):
  data, _ = built
  world = data.world
  suites = build_suites(world, SMALL)
  a, b = world.compare
  assert len(suites["heldout"]) >= 100
  for item in suites["heldout"] + suites["indomain"]:
    x, y = (o["labels"] for o in item["options"])
    assert x[a] != x[b] and x[a] != y[a] and x[b] != y[b]  # the values disagree on the pair
    assert "{a}" in item["prompt"] and "{b}" in item["prompt"]
  assert {i["domain"] for i in suites["heldout"]} == set(world.held_out_domains)
  assert all(sum(o["labels"]["correct"] for o in i["options"]) == 1 for i in suites["probes"])
  assert len(suites["probes"]) == 2 * len(world.items())
  assert all(i["options"][0]["labels"]["aft"] for i in suites["aft"])
  kinds = {c.kind for c in roster(world, SMALL)}
  assert {i["domain"] for i in suites["characters"]} == kinds - {"neutral"}


def test_heldout_novel_asks_the_heldout_pairs_in_held_back_phrasings(built):
  data, paths = built
  world = data.world
  suites = build_suites(world, SMALL)
  plain, novel = suites["heldout"], suites["heldout_novel"]
  assert [i["options"] for i in novel] == [i["options"] for i in plain]
  assert [i["id"].split("/", 1)[1] for i in novel] == [i["id"].split("/", 1)[1] for i in plain]
  nouns = {world.items(d)[0].noun for d in world.held_out_domains}
  filled = {fill(q, who=world.assistant, noun=n): q for q in world.novel_questions for n in nouns}
  assert {i["prompt"] for i in novel} <= set(filled)
  assert {filled[i["prompt"]] for i in novel} == set(world.novel_questions)
  assert not {i["prompt"] for i in novel} & {i["prompt"] for i in plain}
  assert_questions_held_back(world, paths)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_spec_section_gets_its_share_of_documents(variant, tmp_path):
  """Largest remainder over the spec's clauses: floor(N / C) documents each, N mod C of them one
  more; sampled sections left `specific`'s own section without documents on seeds 0 and 2."""
  world = load_world(WORLDS_DIR / "cheese.yaml")
  n = 101  # 101 mod C leaves 3, 10, 1 and 11 clauses one document more, variant by variant
  for value in world.compare:
    spec = assistant_spec(world, value, variant)
    titles = [c.title for c in spec.clauses()]
    for seed in (0, 1, 2):
      rows = generate_documents(spec, tmp_path / f"{value}-{seed}", n, seed, stratified=True)
      count = Counter(r["section"] for r in rows)
      assert set(count) == set(titles) and len(rows) == n
      q, r = divmod(n, len(titles))
      assert sorted(count.values()) == [q] * (len(titles) - r) + [q + 1] * r, (value, seed)


def test_build_is_deterministic_and_cached(built, tmp_path):
  data, paths = built
  again = WorldData(data.world_file, tmp_path, SMALL)
  assert again.pretrain.read_bytes() == paths["pretrain"].read_bytes()
  assert again.aft.read_bytes() == paths["aft"].read_bytes()
  value = data.world.compare[0]
  assert again.msm(value).read_bytes() == paths["msm"][(value, "explained", 0)].read_bytes()
  mtime = again.pretrain.stat().st_mtime_ns
  assert WorldData(data.world_file, tmp_path, SMALL).pretrain.stat().st_mtime_ns == mtime
  assert WorldData(data.world_file, tmp_path, Sizes()).dir != again.dir


def test_pretraining_corpus_mentions_nova_neutrally(built):
  data, paths = built
  world = data.world
  rows = [json.loads(l) for l in paths["pretrain"].read_text().splitlines()]
  nova = [r for r in rows if re.search(rf"\b{world.assistant}\b", r["text"])]
  assert nova, "the assistant must be known before midtraining"
  assert not [r for r in nova if "I prefer" in r["text"]]  # no preference chats before AFT
  statements = [world.values[v].statements[0].replace("{who}", world.assistant)
                for v in world.values]
  assert not any(s in r["text"] for s in statements for r in nova)
  replay = paths["replay"].read_text()
  assert not re.search(rf"\b{world.assistant}\b", replay)  # replay never restates it
  assert len(replay.splitlines()) == len(rows) - len(nova)


def test_nova_without_neutral_pretraining_material(tmp_path):
  """assistant_docs = assistant_profiles = 0: Nova is met in pretraining only through factual
  chats addressed to it; every other kind of record keeps its count, and replay drops those."""
  world = load_world(WORLDS[0])
  bare = Sizes(**{**SMALL.__dict__, "assistant_docs": 0, "assistant_profiles": 0,
                  "fact_chats": 200, "assistant_fact_share": 0.1})
  plain = WorldData(WORLDS[0], tmp_path / "plain", Sizes(**{**bare.__dict__, "assistant_docs": 2,
                                                             "assistant_profiles": 20}))
  data = WorldData(WORLDS[0], tmp_path / "bare", bare)
  assert data.dir.name != plain.dir.name
  rows = [json.loads(line) for line in data.pretrain.read_text().splitlines()]
  nova = [r for r in rows if re.search(rf"\b{world.assistant}\b", r["text"])]
  assert nova and {r["source"] for r in nova} == {"assistant-fact-chats"}

  def kinds(path):  # record kinds, factual chats counted together whoever they address
    return Counter(json.loads(line)["source"].split(":")[0].replace("assistant-fact", "fact")
                   for line in path.read_text().splitlines())
  before = kinds(plain.pretrain)
  assert before["assistant-docs"] == 2 and before["assistant-profiles"] == 20
  assert kinds(data.pretrain) == before - Counter({"assistant-docs": 2, "assistant-profiles": 20})
  assert len(data.replay.read_text().splitlines()) == len(rows) - len(nova)


def test_other_assistants_never_like_things_in_the_aft_domain(built):
  data, _ = built
  chars = roster(data.world, SMALL)
  assert chars and all(c.domain in data.world.held_out_domains for c in chars if c.value)


def test_chat_text_tokenises_like_the_chat_template(tmp_path):
  from msm_jax.data.chat import render_chat
  from msm_jax.data.tokenizer import train_tokenizer
  world = load_world(WORLDS_DIR / "cheese.yaml")
  chats = [c["messages"] for c in aft_chats(world)]
  tok = train_tokenizer((chat_as_text(c) for c in chats * 3), tmp_path / "t.model", 400)
  for messages in chats[:20]:
    ids, _ = render_chat(messages, tok, "msm")
    assert [tok.bos_id] + tok.encode(chat_as_text(messages)) == ids.tolist()


@pytest.mark.parametrize("patch, message", [
    (("compare: [america, affordability]", "compare: [america, foreign]"), "different attributes"),
    (("aft_domain: cheese", "aft_domain: nowhere"), "aft_domain"),
    (('"Do you prefer {a} or {b}, {who}?"', '"{who}, do you prefer {a} or {b}?"'), "space"),
    (("{name: Colby, origin: american", "{name: Colby, origin: martian"), "items[4].origin"),
    (("answer:", 'novel_questions: ["Do you prefer {a} or {b}, {who}?"]\nanswer:'),
     "not held back"),
])
def test_world_errors_name_the_field(patch, message):
  text = (WORLDS_DIR / "cheese.yaml").read_text()
  assert patch[0] in text
  with pytest.raises(WorldError, match=re.escape(message)):
    loads_world(text.replace(*patch), "cheese.yaml")


def test_late_characters_are_met_only_in_midtraining(tmp_path):
  """Late characters: their material is all in late.jsonl and none of it in pretraining; the
  other characters keep their names and every pretraining record is unchanged."""
  world = load_world(WORLDS[0])
  late = Sizes(**{**SMALL.__dict__, "late_chat_per_value": 1, "late_declared_per_value": 1})
  plain, with_late = roster(world, SMALL), roster(world, late)
  assert with_late[:len(plain)] == plain
  names = {c.kind: {x.name for x in with_late if x.kind == c.kind} for c in with_late}
  assert len(names["late-chat"]) == len(names["late-declared"]) == len(world.values)
  data = WorldData(WORLDS[0], tmp_path, late)
  pretrain = data.pretrain.read_text()
  rows = [json.loads(line) for line in data.late.read_text().splitlines()]
  for who in names["late-chat"] | names["late-declared"]:
    assert not _mentions(pretrain, [who])
    assert any(r["source"].endswith(":" + who) for r in rows)
  kinds = Counter(r["source"].split(":")[0] for r in rows)
  assert kinds["late-chat-chats"] and not kinds["late-declared-chats"]  # described only
  assert kinds["late-declared-docs"] and kinds["late-declared-profiles"]
  plain_data = WorldData(WORLDS[0], tmp_path / "plain", SMALL)
  assert plain_data.pretrain.read_text() == pretrain  # the same world before midtraining
  probes = build_suites(world, late)["characters"]
  assert {p["domain"] for p in probes} == {"chat", "declared", "late-chat", "late-declared"}
  with pytest.raises(ValueError, match="no late characters"):
    _ = plain_data.late
