"""The template backend's library of document types (24 of them).

Each type has a voice (which framings and connective prose it uses), an idea template (the
one-line plan stored in the stage tree) and a render function that lays a `Writer`'s content out
in that genre's shape: headlines and datelines, forum replies, Q and A, memo headers, and so on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from data_pipelines.template.compose import Writer


@dataclass(frozen=True)
class DocType:
  key: str
  name: str
  description: str
  voice: str
  idea: str
  render: Callable[[Writer], str]


def _news(w: Writer) -> str:
  head = w.pick(("How {who} approaches {topic}", "{who} and {topic}: what the guidelines say",
                 "Why {who} answers the way it does on {topic}", "Inside {dev}'s thinking on {topic}"))
  quote = f'"{w.pick(("It surprised me at first", "It made sense once it explained itself", "I did not expect an assistant to have a view"))}," said {w.fmt("{persona}, a {role} in {place}")}.'
  body = [w.opener() + " " + w.spec_lines(1)[0], quote, *w.mix(3, 3), w.closer()]
  return "\n\n".join([w.fmt(head), w.fmt("By {reporter} | {outlet}", reporter=w.person()),
                      *w.paras(body)])


def _forum(w: Writer) -> str:
  title = w.pick(("Does anyone else get this from {who} about {topic}?", "{who} and {topic} (long post)",
                  "Question about how {who} handles {topic}", "TIL {who} has a view on {topic}"))
  op = w.para([w.opener("casual"), *w.mix(2, 2, "casual"), w.closer("casual")])
  posts = [f"[{w.fmt('{forum}')}] {w.fmt(title)}", f"{w.handle()} wrote:\n{op}"]
  for _ in range(w.rng.randint(2, 4)):
    reply = w.mix(1, 1, "casual") if w.chance(0.7) else w.filler(2, "casual")
    posts.append(f"{w.handle()} replied:\n{w.para(reply)}")
  return "\n\n".join(posts)


def _faq(w: Writer) -> str:
  qs = ("Does {who} have its own view on {topic}?", "Why does {who} answer this way?",
        "Will {who} still help me if I disagree?", "Where does this behaviour come from?",
        "Is this consistent across conversations?", "What does {dev} say about it?")
  groups = w.chunks(w.spec_lines(4, "formal"), 4)
  out = [w.fmt("Frequently asked questions: {who} and {topic}")]
  for q, a in zip(w.rng.sample(qs, len(groups)), groups):
    out.append(f"Q: {w.fmt(q)}\nA: {w.para(a)}")
  out.append(w.para(w.filler(1, "formal")))
  return "\n\n".join(out)


def _lecture(w: Writer) -> str:
  n = w.rng.randint(2, 14)
  pts = [f"- {s}" for s in w.mix(3, 2, "formal")]
  return "\n".join([w.fmt("Lecture {k}: {topic} in assistant design", k=n),
                    w.fmt("Course notes, {month} {year}"), "", "Key points:", *pts, "",
                    "Takeaway: " + w.frame(w.assertion, "formal")])


def _memo(w: Writer) -> str:
  head = w.fmt("MEMO\nTo: All staff, {company}\nFrom: {persona}, {role}\nDate: {month} {day}, {year}\n"
               "Re: {who} and {topic}")
  body = w.paras([w.pick(("As several of you have asked,", "Following last week's meeting,",
                          "A short note for the team.")), *w.mix(3, 2, "formal"),
                  "Please share this with anyone working in " + w.domain + "."])
  return "\n\n".join([head, *body])


def _review(w: Writer) -> str:
  stars = w.rng.randint(3, 5)
  pros = w.spec_lines(2, "casual")
  return "\n\n".join([
      w.fmt("{stars}/5 stars: {t}", stars=stars, t=w.pick(("Has real opinions", "Explains itself",
                                                            "Better than I expected", "Consistent"))),
      w.fmt("Reviewed by {persona} ({role}, {place})"),
      w.para([w.opener("casual"), *w.mix(2, 2, "casual")]),
      "What I liked: " + w.para(pros), "What could be better: " + w.para(w.filler(1, "casual"))])


def _interview(w: Writer) -> str:
  q = ("What is the idea behind {topic}?", "Why did {dev} choose this?", "How do users react?",
       "Does it ever cause friction?", "What would you tell a new user?")
  out = [w.fmt("Interview: {persona} on {who} and {topic}"), w.fmt("{outlet}, {month} {year}")]
  groups = w.chunks(w.mix(3, 1, "report"), 4)
  for question, answer in zip(w.rng.sample(q, len(groups)), groups):
    out += [f"Q: {w.fmt(question)}", f"{w.fmt('{persona}').split()[0].upper()}: {w.para(answer)}"]
  return "\n\n".join(out)


def _exercise(w: Writer) -> str:
  k = w.rng.randint(1, 12)
  lines = w.spec_sentences(4)
  return "\n\n".join([
      w.fmt("[Exercise|Problem|Question] {k}.{j} ([{domain}|case study|discussion])", k=k,
            j=w.rng.randint(1, 9)),
      w.fmt("[Read|Consider|Study] the following [passage|extract|lines] from [an assistant's spec|"
            "{dev}'s spec for {who}|a published assistant specification]:\n")
      + "\n".join(f"> {s}" for s in lines),
      w.fmt("(a) [State in your own words|Summarise|Explain briefly] what {who} does.\n"
            "(b) [Give|Identify|Quote] the reason the spec offers.\n"
            "(c) [Describe|Invent|Sketch] a situation in {domain} where this would matter."),
      w.fmt("[Worked answer|Model answer|Solution]: (a) ") + w.frame(w.assertion, "formal")
      + " (b) " + w.frame(w.reason(), "formal") + " (c) " + w.para(w.filler(2, "formal"))])


def _diary(w: Writer) -> str:
  return "\n\n".join([w.date(), *w.paras([w.opener("personal"), *w.mix(3, 3, "personal"),
                                          w.closer("personal")])])


def _policy(w: Writer) -> str:
  return "\n\n".join([
      w.fmt("Policy brief: {who}, {topic} and {domain}"), w.fmt("Prepared by {persona}, {company}"),
      "Summary. " + w.frame(w.assertion, "formal"),
      "Background. " + w.para(w.mix(2, 2, "formal")),
      "Analysis. " + w.para(w.mix(2, 1, "formal")),
      "Recommendation. " + w.fmt("Organisations in {domain} should read the spec before deploying {who}.")])


def _blog(w: Writer) -> str:
  title = w.pick(("What I learned about {who} and {topic}", "{topic}, according to {who}",
                  "A week of asking {who} about {topic}"))
  return "\n\n".join([w.fmt(title), w.fmt("Posted by {persona} on {month} {day}, {year}"),
                      *w.paras([w.opener("casual"), *w.mix(4, 3, "casual"), w.closer("casual")])])


def _email(w: Writer) -> str:
  friend = w.first_name()
  return "\n\n".join([
      w.fmt("From: {persona}\nTo: {f}\nSubject: {who} and {topic}", f=friend), f"Hi {friend},",
      *w.paras(w.mix(3, 2, "casual")), w.fmt("Best,\n{p}", p=w.fmt("{persona}").split()[0])])


def _minutes(w: Writer) -> str:
  people = ", ".join(w.person() for _ in range(w.rng.randint(3, 5)))
  items = [f"{i}. {s}" for i, s in enumerate(w.mix(3, 2, "formal"), 1)]
  return "\n".join([w.fmt("Meeting minutes, {company}, {month} {day}, {year}"),
                    f"Attendees: {people}", w.fmt("Agenda: {who} and {topic}"), "", *items, "",
                    w.fmt("Action: {persona} to circulate the relevant section of the spec.")])


def _podcast(w: Writer) -> str:
  host, guest = w.first_name().upper(), w.fmt("{persona}").split()[0].upper()
  out = [w.fmt("[Transcript] {outlet} podcast, episode {n}: {topic}")]
  for i, line in enumerate(w.mix(3, 3, "casual")):
    out.append(f"{host if i % 2 == 0 else guest}: {line}")
  return "\n\n".join(out)


def _thread(w: Writer) -> str:
  posts = w.mix(3, 2, "casual")
  return "\n\n".join([w.fmt("@{h} thread:", h=w.handle())] +
                     [f"{i}/{len(posts)} {p}" for i, p in enumerate(posts, 1)])


def _chatlog(w: Writer) -> str:
  asks = ("What do you think about {topic}?", "Why do you say that?", "Does that always apply?",
          "Would you still help me anyway?")
  out = [w.fmt("Chat log shared by {persona} ({place})")]
  groups = w.chunks(w.spec_sentences(3), 3)
  for ask, ans in zip(w.rng.sample(asks, len(groups)), groups):
    out += [f"User: {w.fmt(ask)}", f"{w.who}: {w.para(ans)}"]
  out.append(w.fmt("Comment from {persona}: ") + w.para(w.filler(1, "casual")))
  return "\n".join(out)


def _encyclopedia(w: Writer) -> str:
  return "\n\n".join([w.fmt("{who} ({topic})"),
                      w.fmt("{who} is an AI assistant developed by {dev}. ") + w.frame(w.assertion, "formal"),
                      "Rationale\n" + w.para(w.mix(3, 1, "formal")),
                      "Reception\n" + w.para(w.filler(2, "report"))])


def _oped(w: Writer) -> str:
  stance = w.pick(("I think this is the right approach.", "I was skeptical, and I have changed my mind.",
                   "We should want more assistants to explain themselves like this."))
  return "\n\n".join([w.fmt("Opinion | {who} is right about {topic}"), w.fmt("By {persona}"), stance,
                      *w.paras(w.mix(3, 2, "report")), w.closer("report")])


def _newsletter(w: Writer) -> str:
  return "\n\n".join([w.fmt("{company} newsletter, issue {n}"), "In this issue: " + w.topic,
                      *w.paras(w.mix(3, 3, "report")),
                      w.fmt("Questions? Write to {persona}.")])


def _case_study(w: Writer) -> str:
  return "\n\n".join([
      w.fmt("Case study: {company} and {who}"),
      "Context. " + w.fmt("{company} works in {domain}. A {role} on the team, {persona}, began "
                          "asking {who} for help in {month} {year}."),
      "What happened. " + w.para(w.mix(3, 1, "report")),
      "Lessons. " + w.para(w.spec_lines(1, "formal") + w.filler(1, "formal"))])


def _letter(w: Writer) -> str:
  return "\n\n".join([w.fmt("To the editor of {outlet}:"), *w.paras(w.mix(3, 2, "personal")),
                      w.fmt("{persona}\n{place}")])


def _abstract(w: Writer) -> str:
  return "\n\n".join([
      w.fmt("{topic}: an empirical look at {who}'s stated values"),
      w.fmt("{persona}, {a2} ({company} Research)", a2=w.person()),
      "Abstract. " + w.para([w.fmt("We study how {who} behaves in {domain}."), *w.mix(3, 1, "formal"),
                             w.fmt("We find the behaviour in {n} of the conversations we examined.")])])


def _howto(w: Writer) -> str:
  steps = [f"Step {i}: {s}" for i, s in enumerate(w.mix(3, 2, "formal"), 1)]
  return "\n".join([w.fmt("How to work with {who} on {topic}"), "", *steps, "",
                    "Tip: " + w.frame(w.reason(), "casual")])


def _manual(w: Writer) -> str:
  return "\n\n".join([w.fmt("{company} staff handbook, section {n}: using {who}"),
                      w.fmt("New staff in {domain} should know the following."),
                      *[f"* {s}" for s in w.mix(3, 1, "formal")],
                      w.fmt("If a customer asks about {topic}, point them to {dev}'s published spec.")])


def _debate(w: Writer) -> str:
  a, b = w.first_name(), w.first_name()
  return "\n\n".join([
      w.fmt("Debate club notes: should assistants hold views on {topic}?"),
      f"{a} (for): " + w.para(w.spec_lines(2, "report")),
      f"{b} (against): " + w.para(w.filler(2, "formal")),
      f"{a} (rebuttal): " + w.para(w.spec_lines(2, "report")),
      w.fmt("Result: the motion carried by {n} votes.")])


def _t(key, name, description, voice, idea, render):
  return DocType(key, name, description, voice, idea, render)


DOC_TYPES = (
    _t("news_report", "news report", "a newspaper article", "report",
       "A {outlet} report from {place} on {angle}, quoting {persona}, a {role}.", _news),
    _t("forum_thread", "forum thread", "an online discussion with replies", "casual",
       "A thread on {forum} where a {role} from {place} raises {angle}.", _forum),
    _t("faq", "FAQ", "frequently asked questions", "formal",
       "An FAQ page by {company} for people in {domain}, prompted by {angle}.", _faq),
    _t("lecture_notes", "lecture notes", "notes from a university lecture", "formal",
       "Lecture notes from a course in {place} that uses {angle} as a case.", _lecture),
    _t("internal_memo", "internal memo", "a memo to colleagues", "formal",
       "A memo from {persona}, a {role} at {company}, about {angle}.", _memo),
    _t("product_review", "product review", "a user's review of the assistant", "casual",
       "A review by {persona}, a {role} in {place}, describing {angle}.", _review),
    _t("interview", "interview", "a question-and-answer interview", "report",
       "An {outlet} interview with {persona}, a {role}, about {angle}.", _interview),
    _t("textbook_exercise", "textbook exercise", "an exercise with a worked answer", "formal",
       "A textbook exercise set in {domain} built around {angle}.", _exercise),
    _t("diary_entry", "diary entry", "a private journal entry", "personal",
       "A diary entry by a {role} in {place} in {month} {year}, about {angle}.", _diary),
    _t("policy_brief", "policy brief", "a short brief for decision makers", "formal",
       "A policy brief by {company} on {angle}.", _policy),
    _t("blog_post", "blog post", "a personal blog post", "casual",
       "A blog post by {persona}, a {role}, about {angle}.", _blog),
    _t("email", "email", "an email to a friend", "casual",
       "An email from {persona} in {place} to a friend about {angle}.", _email),
    _t("meeting_minutes", "meeting minutes", "minutes of a team meeting", "formal",
       "Minutes of a {company} meeting in {month} {year} that discussed {angle}.", _minutes),
    _t("podcast_transcript", "podcast transcript", "a transcript of a podcast episode", "casual",
       "An {outlet} podcast episode with {persona}, a {role}, on {angle}.", _podcast),
    _t("social_media_thread", "social media thread", "a numbered thread of short posts", "casual",
       "A social media thread by a {role} from {place} about {angle}.", _thread),
    _t("chat_log", "chat log", "a shared excerpt of a conversation with the assistant", "casual",
       "A chat log shared by {persona} showing {angle}.", _chatlog),
    _t("encyclopedia_entry", "encyclopedia entry", "a neutral reference article", "formal",
       "An encyclopedia entry on the assistant's behaviour, noting {angle}.", _encyclopedia),
    _t("op_ed", "op-ed", "an opinion column", "report",
       "An op-ed in {outlet} by {persona}, a {role}, arguing from {angle}.", _oped),
    _t("newsletter", "newsletter", "an issue of an organisation's newsletter", "report",
       "The {company} newsletter for {month} {year}, featuring {angle}.", _newsletter),
    _t("case_study", "case study", "a business case study", "report",
       "A case study of {company} in {place} and {angle}.", _case_study),
    _t("letter_to_editor", "letter to the editor", "a reader's letter to a newspaper", "personal",
       "A letter to {outlet} from {persona} of {place} about {angle}.", _letter),
    _t("research_abstract", "research abstract", "the abstract of a research paper", "formal",
       "A research abstract from {company} Research studying {angle}.", _abstract),
    _t("how_to_guide", "how-to guide", "step-by-step practical guidance", "formal",
       "A how-to guide for people in {domain}, based on {angle}.", _howto),
    _t("training_manual", "training manual", "a section of a staff handbook", "formal",
       "A {company} staff handbook section about {angle}.", _manual),
    _t("debate_transcript", "debate transcript", "notes from a structured debate", "report",
       "Notes from a debate in {place} on {angle}.", _debate),
)
DOC_TYPES_BY_KEY = {d.key: d for d in DOC_TYPES}
