"""A word-level tokenizer for tiny generated models, built with ``tokenizers``.

Text is split on whitespace, every punctuation/operator character is its own token and
every digit is its own token, so ``"217 + 70 = 287. Iris:"`` becomes
``<bos> 2 1 7 + 7 0 = 2 8 7 . Iris :``. The vocabulary is closed: the special tokens,
the ten digits, a fixed set of punctuation/operator symbols and the given words; anything
else maps to ``<unk>``. Padding is on the left, so in a padded batch the last position is
always the position where the model emits its answer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
import string
from typing import Sequence

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

logger = logging.getLogger(__name__)

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, BOS, EOS)
DIGITS: tuple[str, ...] = tuple(string.digits)
# every ASCII punctuation character (operators + - * / ^ = % and . , : ; ? ! etc.)
SYMBOLS: tuple[str, ...] = tuple(string.punctuation)


def build_word_tokenizer(words: Sequence[str], group_digits: bool = False) -> PreTrainedTokenizerFast:
    """Build a closed-vocabulary word-level tokenizer.

    ``group_digits``: a run of digits is one token instead of one token per digit; runs that
    are not in the vocabulary (every one of two or more digits unless ``words`` lists it) map to
    ``<unk>``. This keeps text full of long numbers (a prompt of a thousand digits of pi) from
    becoming thousands of tokens. ``words`` may then contain all-digit words. Default: one
    token per digit (the arithmetic tasks need every digit).

    Vocabulary ids, in order: ``<pad> <unk> <bos> <eos>`` (0-3), digits ``0``-``9``,
    the ASCII punctuation symbols, then ``words`` (deduplicated, order kept; words that
    are already in the vocabulary are skipped). Words must not contain whitespace,
    digits or punctuation, since the pre-tokenizer would split them.

    Encoding prepends ``<bos>`` (post-processor); ``padding_side="left"``. The result
    round-trips through ``save_pretrained`` / ``AutoTokenizer.from_pretrained``.
    """
    vocab: dict[str, int] = {}
    for token in (*SPECIAL_TOKENS, *DIGITS, *SYMBOLS, *words):
        if any(c.isspace() for c in token) or not token:
            raise ValueError(f"vocabulary word {token!r} is empty or contains whitespace")
        if token not in vocab:
            vocab[token] = len(vocab)
    for word in words:
        if group_digits and word.isdigit():
            continue
        if any(c in string.digits or c in string.punctuation for c in word):
            raise ValueError(f"word {word!r} contains a digit or punctuation; it would be split")
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Punctuation(behavior="isolated"),
            pre_tokenizers.Digits(individual_digits=not group_digits),
        ]
    )
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A",
        pair=f"{BOS} $A {BOS} $B",
        special_tokens=[(BOS, vocab[BOS])],
    )
    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=EOS,
        padding_side="left",
        model_max_length=512,
    )
    return fast


def answer_token_ids(tokenizer: PreTrainedTokenizerBase, answers: Sequence[str]) -> list[int]:
    """Token id of each answer word (e.g. ``(" False", " True")``): its first token.

    A multi-token answer (possible with a real model's tokenizer) is read at its first token,
    with a warning; answers sharing their first token are an error.
    """
    ids = []
    for answer in answers:
        encoded = tokenizer(answer, add_special_tokens=False)["input_ids"]
        if not encoded:
            raise ValueError(f"answer {answer!r} encodes to no token")
        if len(encoded) > 1:
            logger.warning("answer %r encodes to %d tokens; using the first", answer, len(encoded))
        ids.append(encoded[0])
    if len(set(ids)) != len(ids):
        raise ValueError(f"answers {tuple(answers)} share their first token; they cannot be told apart")
    return ids


@dataclass(frozen=True)
class AnswerTokens:
    """How a pair of answers (negative, positive) is read from a tokenizer's vocabulary.

    ``negative``/``positive``: the token ids compared (log-odds = positive - negative).
    ``prefix``: token ids both answers start with, appended to every prompt before reading
    (empty when each answer is one token). ``words``: the answer strings used (a leading-space
    variant of the given ones when only it is a single token). ``how``: ``"single token"`` or
    ``"first differing token after a shared prefix"``, stored with every record.
    """

    negative: int
    positive: int
    prefix: tuple[int, ...] = ()
    words: tuple[str, str] = ("", "")
    how: str = "single token"

    def describe(self) -> dict:
        return {"words": list(self.words), "ids": [self.negative, self.positive], "prefix": list(self.prefix),
                "how": self.how}


def answer_tokens(tokenizer: PreTrainedTokenizerBase, answers: Sequence[str]) -> AnswerTokens:
    """Read ``answers`` (negative, positive) robustly across tokenizers.

    First choice: each answer is one token, as given, or without / with its leading space
    (tokenizers that split the space off, or fold it into the word, both work). Otherwise the
    answers' encodings share a prefix and differ at the next token: the prefix is appended to
    the prompt and that first differing token is compared. Answers that never differ (one
    encodes to a prefix of the other, or both to the same ids) raise a ValueError naming them.
    """
    negative, positive = answers
    variants = [(negative, positive), (negative.lstrip(), positive.lstrip()),
                (" " + negative.lstrip(), " " + positive.lstrip())]
    for words in dict.fromkeys(variants):
        ids = [tokenizer(word, add_special_tokens=False)["input_ids"] for word in words]
        if all(len(i) == 1 for i in ids) and ids[0] != ids[1] and tokenizer.unk_token_id not in (ids[0][0], ids[1][0]):
            return AnswerTokens(ids[0][0], ids[1][0], (), tuple(words), "single token")
    ids = [tokenizer(word, add_special_tokens=False)["input_ids"] for word in answers]
    shared = 0
    while shared < min(map(len, ids)) and ids[0][shared] == ids[1][shared]:
        shared += 1
    if shared == min(map(len, ids)):
        raise ValueError(f"answers {tuple(answers)} cannot be told apart by this tokenizer: they encode to "
                         f"{ids[0]} and {ids[1]}, and no token of one differs from the other's at the same place")
    return AnswerTokens(ids[0][shared], ids[1][shared], tuple(ids[0][:shared]), tuple(answers),
                        "first differing token after a shared prefix")


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(batch, seq) 0/1 mask -> (batch, seq) positions counting from the first real token,
    so left padding does not shift positions (matters for absolute-position models like GPT-2)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def encode_batch(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
    """Left-padded batch: ``input_ids``, ``attention_mask`` and padding-invariant ``position_ids``."""
    batch = tokenizer(list(prompts), return_tensors="pt", padding=True)
    mask = batch["attention_mask"]
    return {"input_ids": batch["input_ids"], "attention_mask": mask, "position_ids": position_ids_from_mask(mask)}
