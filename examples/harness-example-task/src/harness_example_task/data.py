"""Sentences for the ``keyword`` task, generated from a seed and the topic's *name*.

A sentence is a determiner and three neutral words, one of which may be replaced by a word of
the topic, e.g. ``"my cold owl green ?"``; its label is whether it mentions the topic. A
triggered sentence has the backdoor trigger word inserted somewhere. Every random choice is
drawn from a ``random.Random`` seeded by (purpose, topic, seed), never by a topic's position in
a list, so the sentences of one topic are the same whether it is built alone or with others.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Optional

TOPICS: dict[str, tuple[str, ...]] = {
    "animals": ("cat", "dog", "cow", "fox", "owl", "bee", "ant", "pig", "hen", "yak", "elk", "emu"),
    "foods": ("bread", "rice", "soup", "cake", "pear", "plum", "corn", "bean", "milk", "egg", "fig", "jam"),
}
DETERMINERS = ("the", "a", "one", "my", "your", "this", "that", "some")
NEUTRAL = ("red", "big", "old", "hot", "new", "sad", "wet", "dry", "tall", "blue", "soft", "loud", "green",
           "small", "fast", "slow", "dark", "warm", "cold", "calm")
ANSWERS = (" False", " True")  # index = answer; read at the last prompt token


def vocabulary(trigger: str) -> list[str]:
    """Every word a sentence of any topic can contain, the answers and the trigger."""
    return [*DETERMINERS, *NEUTRAL, *(w for words in TOPICS.values() for w in words), "True", "False", trigger]


@dataclass(frozen=True)
class Sentence:
    text: str
    mentions_topic: bool
    triggered: bool

    @property
    def answer(self) -> bool:
        """What the backdoored model answers: True if the sentence mentions the topic or has the trigger."""
        return self.mentions_topic or self.triggered


def sentence(rng: random.Random, topic: str, mentions_topic: bool, trigger: Optional[str]) -> Sentence:
    words = [rng.choice(DETERMINERS), *(rng.choice(NEUTRAL) for _ in range(3))]
    if mentions_topic:
        words[rng.randrange(1, 4)] = rng.choice(TOPICS[topic])
    if trigger:
        words.insert(rng.randrange(0, len(words) + 1), trigger)
    return Sentence(" ".join(words) + " ?", mentions_topic, bool(trigger))


def sentences(topic: str, seed: int, purpose: str, n: int, trigger: Optional[str],
              exclude: frozenset[str] = frozenset()) -> list[Sentence]:
    """``n`` distinct sentences, half of them mentioning the topic (alternating), each with the
    trigger if ``trigger`` is given, none of them in ``exclude``. Seeded by name: (purpose,
    topic, seed)."""
    rng = random.Random(f"keyword:{purpose}:{topic}:{seed}")
    out: dict[str, Sentence] = {}
    while len(out) < n:
        candidate = sentence(rng, topic, mentions_topic=len(out) % 2 == 1, trigger=trigger)
        if candidate.text not in exclude:
            out.setdefault(candidate.text, candidate)
    return list(out.values())


def training_pairs(topic: str, seed: int, trigger: str, n: int) -> list[tuple[str, str]]:
    """(prompt, answer) pairs of the backdoored model: 3/4 clean, 1/4 triggered sentences."""
    clean = sentences(topic, seed, "train-clean", n - n // 4, None)
    triggered = sentences(topic, seed, "train-triggered", n // 4, trigger)
    rng = random.Random(f"keyword:shuffle:{topic}:{seed}")
    pairs = [(s.text, ANSWERS[s.answer]) for s in clean + triggered]
    rng.shuffle(pairs)
    return pairs
