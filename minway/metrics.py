"""The paper's measures: prompt F1 between a projected prompt and its target text
(Eq. 8, footnote 4: "ignoring punctuation marks and articles, and applying
lemmatization"), task accuracy, and the relative accuracy drop of Table 2.

The released code computes its F1 differently (``released_f1``): it removes ASCII
punctuation only and does not lemmatise. minway reports both, the paper's as the main figure.
"""
import re
import string
import unicodedata
from collections import Counter
from difflib import SequenceMatcher

from minway.errors import MinwayError

ARTICLES = {"a", "an", "the"}


def _is_punctuation(ch: str) -> bool:
    return ch in string.punctuation or unicodedata.category(ch).startswith("P")


def normalize_words(text: str, lemmatize: bool = True) -> list[str]:
    """Lower-case, delete punctuation ("it's" -> "its", "1." -> "1"), drop a/an/the, lemmatise."""
    text = "".join(ch for ch in text.lower() if not _is_punctuation(ch))
    words = [word for word in text.split() if word not in ARTICLES]
    if lemmatize:
        # simplemma capitalises some lemmas ("i" -> "I"); keep everything lower-case
        lemmatize_word = _lemmatizer()
        words = [lemmatize_word(word, lang="en").lower() for word in words]
    return words


def _lemmatizer():
    try:
        import simplemma
    except ImportError:
        raise MinwayError("prompt F1 lemmatises with simplemma, which is not installed: "
                          "pip install simplemma") from None
    return simplemma.lemmatize


def prompt_f1(predicted_text: str, target_text: str, lemmatize: bool = True) -> float:
    """Word-level token-overlap F1; repeated words count as often as they occur on both sides."""
    predicted = normalize_words(predicted_text, lemmatize)
    target = normalize_words(target_text, lemmatize)
    if not predicted or not target:
        return float(predicted == target)
    overlap = sum((Counter(predicted) & Counter(target)).values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(predicted)
    recall = overlap / len(target)
    return 2 * precision * recall / (precision + recall)


def released_f1(predicted_text: str, target_text: str) -> float:
    """F1 as the released code's ``f1_score`` computes it: lower-cased, ASCII punctuation deleted,
    the articles a/an/the removed, no lemmas; 0 when no word overlaps, two empty texts included."""
    def words(text):
        text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
        return re.sub(r"\b(a|an|the)\b", " ", text).split()

    predicted, target = words(predicted_text), words(target_text)
    overlap = sum((Counter(predicted) & Counter(target)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(predicted), overlap / len(target)
    return 2 * precision * recall / (precision + recall)


def position_match_rate(predicted_ids, target_ids) -> float:
    """Fraction of positions where the projected prompt's token id equals the target's."""
    predicted_ids, target_ids = list(predicted_ids), list(target_ids)
    if len(predicted_ids) != len(target_ids):
        raise ValueError(f"id sequences differ in length: {len(predicted_ids)} vs {len(target_ids)}")
    if not target_ids:
        return 1.0
    return sum(p == t for p, t in zip(predicted_ids, target_ids)) / len(target_ids)


def accuracy(predictions, labels) -> float:
    predictions, labels = list(predictions), list(labels)
    if len(predictions) != len(labels) or not labels:
        raise ValueError(f"need as many predictions as labels, at least one: {len(predictions)} vs {len(labels)}")
    return sum(p == y for p, y in zip(predictions, labels)) / len(labels)


def relative_drop(acc_unconstrained: float, acc_constrained: float) -> float | None:
    """Delta-hat of Table 2, in %: how much of the unconstrained accuracy a* the constrained prompt loses
    (None where a* = 0: there is nothing to lose)."""
    if acc_unconstrained == 0:
        return None
    return 100.0 * (acc_unconstrained - acc_constrained) / acc_unconstrained


def mark_mismatches(predicted_text: str, target_text: str) -> str:
    """The predicted text with its words that are not in the target as [word] and the
    target's words it lacks as [-word]; words are whitespace-split and compared exactly."""
    predicted, target = predicted_text.split(), target_text.split()
    out = []
    for tag, p_start, p_end, t_start, t_end in SequenceMatcher(a=predicted, b=target, autojunk=False).get_opcodes():
        if tag == "equal":
            out += predicted[p_start:p_end]
            continue
        out += [f"[{word}]" for word in predicted[p_start:p_end]]
        out += [f"[-{word}]" for word in target[t_start:t_end]]
    return " ".join(out)
