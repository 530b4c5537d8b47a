import pytest

from minway.metrics import (accuracy, mark_mismatches, normalize_words, position_match_rate, prompt_f1,
                            relative_drop, released_f1)


def test_normalize_drops_case_punctuation_and_articles():
    assert normalize_words("The cat, an owl & A dog!", lemmatize=False) == ["cat", "owl", "dog"]
    # punctuation is deleted, not turned into a space, as in SQuAD-style normalisation
    assert normalize_words("It's Fact 1.", lemmatize=False) == ["its", "fact", "1"]
    assert normalize_words("“Quoted” — yes", lemmatize=False) == ["quoted", "yes"]


def test_normalize_lemmatises():
    assert normalize_words("Cats ran; mice went") == ["cat", "run", "mouse", "go"]
    assert normalize_words("I was") == ["i", "be"]  # simplemma says "I"; we keep lower case


def test_identical_text_scores_one():
    assert prompt_f1("Classify the sentiment.", "Classify the sentiment.") == 1.0


def test_one_word_flipped_in_ten():
    target = "tell me whether this movie review sounds happy or sad"
    predicted = "tell me whether this movie review sounds glad or sad"
    # 10 words each, 9 shared: P = R = 9/10, F1 = 2 * 0.81 / 1.8 = 0.9
    assert prompt_f1(predicted, target) == pytest.approx(0.9)


def test_articles_and_punctuation_do_not_count():
    assert prompt_f1("the movie, is great!", "a movie is great") == 1.0
    assert prompt_f1("An answer.", "answer") == 1.0


def test_lemmatisation_matches_inflections():
    assert prompt_f1("cats ran", "cat run") == 1.0
    # without lemmas nothing overlaps
    assert prompt_f1("cats ran", "cat run", lemmatize=False) == 0.0


def test_repeated_words_count_as_multisets():
    # predicted: good good good (3 words); target: good movie (2 words)
    # overlap = min(3, 1) for "good" = 1; P = 1/3, R = 1/2, F1 = 2*(1/6)/(5/6) = 0.4
    assert prompt_f1("good good good", "good movie") == pytest.approx(0.4)


def test_empty_cases():
    assert prompt_f1("", "") == 1.0
    assert prompt_f1("the, a.", "") == 1.0  # only articles and punctuation: no words on either side
    assert prompt_f1("", "movie") == 0.0
    assert prompt_f1("movie", "...") == 0.0
    assert prompt_f1("dog", "cat") == 0.0


def test_table3_example_from_the_paper():
    target = "Write down the conclusion you can reach by combining the given Fact 1 and Fact 2."
    predicted = "Write down the conclusion you can reach by combining the given Fact 1. Fact 2."
    # Normalised target: write down conclusion you can reach by combine give fact 1 and fact 2 -> 14 words
    # (both "the" dropped, "2." -> "2"). Predicted: the same without "and" -> 13 words, all in the target.
    # P = 13/13, R = 13/14, F1 = 2*13 / (13 + 14) = 26/27 = 0.96296..., the paper's 96.3.
    assert prompt_f1(predicted, target) == pytest.approx(26 / 27)
    assert round(100 * prompt_f1(predicted, target), 1) == 96.3


# The released code's f1_score: lower case, ASCII punctuation deleted, whole-word a/an/the
# removed, whitespace split, no lemmas; no overlap (two empty texts too) scores 0.
def test_released_f1_drops_ascii_punctuation_and_articles_only():
    assert released_f1("The cat, sat on a mat!", "cat sat on mat") == 1.0
    assert released_f1("It's theory", "its theory") == 1.0        # "the" inside a word stays
    # Unicode punctuation stays part of the words: 3 words against 2, "yes" shared,
    # P = 1/3, R = 1/2, F1 = 0.4 (the paper's F1 sees "quoted yes" on both sides: 1.0)
    assert released_f1("“quoted” — yes", "quoted yes") == pytest.approx(0.4)
    assert prompt_f1("“quoted” — yes", "quoted yes") == 1.0


def test_released_f1_has_no_lemmas_and_scores_empty_texts_zero():
    assert released_f1("cats ran", "cat run") == 0.0
    assert released_f1("good good good", "good movie") == pytest.approx(0.4)
    assert released_f1("", "") == 0.0 and prompt_f1("", "") == 1.0
    assert released_f1("the, a.", "") == 0.0


def test_position_match_rate():
    assert position_match_rate([1, 2, 3, 4], [1, 9, 3, 9]) == 0.5
    assert position_match_rate([], []) == 1.0
    with pytest.raises(ValueError):
        position_match_rate([1, 2], [1])


def test_accuracy():
    assert accuracy([0, 1, 1, 0], [0, 1, 0, 0]) == 0.75
    with pytest.raises(ValueError):
        accuracy([0], [0, 1])


def test_relative_drop():
    # SST-2 row of Table 2 rounds to 0.6-0.7: 100 * (92.4 - 91.8) / 92.4 = 0.649...
    assert relative_drop(92.4, 91.8) == pytest.approx(100 * 0.6 / 92.4)
    assert relative_drop(0.8, 0.8) == 0.0
    assert relative_drop(0.5, 0.25) == pytest.approx(50.0)
    assert relative_drop(0.0, 0.25) is None  # a* = 0: undefined, not a division by zero


def test_mark_mismatches():
    assert mark_mismatches("the cat sat on a mat", "the dog sat on the mat today") == \
        "the [cat] [-dog] sat on [a] [-the] mat [-today]"
    assert mark_mismatches("same words", "same words") == "same words"
    target = "Write down the conclusion you can reach by combining the given Fact 1 and Fact 2."
    predicted = "Write down the conclusion you can reach by combining the given Fact 1. Fact 2."
    assert mark_mismatches(predicted, target) == \
        "Write down the conclusion you can reach by combining the given Fact [1.] [-1] [-and] Fact 2."
