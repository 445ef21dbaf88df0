"""Every instruction and instance filter, with its rule name."""

import random

from rouge_score import rouge_scorer

from jobs.method.recipe import ALPACA_BLACKLIST, Recipe
from jobs.method.similarity import ReferenceScan, RougeLIndex
from jobs.method.stages.filters import InstructionFilter, filter_instances
from jobs.method.vocabulary import RULES, STAGE_RULES


def make_filter(**config) -> InstructionFilter:
    f = InstructionFilter(Recipe(**config), RougeLIndex())
    f.add("seed_1", "Classify the sentiment of the sentence into positive or negative.")
    f.add("seed_2", "Write a story about a dragon who learns to fly.")
    return f


def test_length_limits():
    f = make_filter()
    assert f("Do it now.")[0] == "too_short"  # 3 words
    assert f("Name four ocean animals.")[0] == "kept"  # 4 words
    assert f(" ".join(["word"] * 151))[0] == "too_long"
    assert f(" ".join(f"w{i}" for i in range(150)))[0] == "kept"


def test_blacklist_whole_word_case_insensitive():
    f = make_filter()
    assert f("Describe the IMAGE in one line.") == ("blacklisted_keyword", {"keyword": "image"})
    assert f("Explain how to go to the station.")[1] == {"keyword": "go to"}
    assert f("Explain why imagery matters in poems.")[0] == "kept"  # not a whole word
    assert f("Explain how a profile works online.")[0] == "kept"  # "file" inside a word
    alpaca = make_filter(keyword_blacklist=ALPACA_BLACKLIST)
    assert alpaca("Compose music for a short film.")[0] == "blacklisted_keyword"


def test_program_punctuation_and_ascii():
    f = make_filter()
    assert f("Write a program to add two numbers.")[0] == "write_a_program"
    assert f('"Quote" this sentence for me please.')[0] == "starts_with_punctuation"
    assert f("¿Cómo se dice hello en inglés?")[0] == "starts_with_non_ascii"


def test_exact_duplicate_and_similarity_against_pool():
    f = make_filter()
    assert f("Write a story about a dragon who learns to fly.") == (
        "exact_duplicate",
        {
            "nearest_id": "seed_2",
            "nearest_text": "Write a story about a dragon who learns to fly.",
            "score": 1.0,
        },
    )
    rule, detail = f("Write a story about a dragon who learns to swim.")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    expected = scorer.score(
        "Write a story about a dragon who learns to swim.", "Write a story about a dragon who learns to fly."
    )["rougeL"].fmeasure
    assert rule == "too_similar" and detail["nearest_id"] == "seed_2" and detail["score"] == expected > 0.7
    rule, detail = f("Plan a three day trip to the mountains.")
    assert rule == "kept" and detail["score"] <= 0.7


def test_kept_candidates_join_the_pool():
    f = make_filter()
    assert f("Plan a three day trip to the mountains.")[0] == "kept"
    f.add("m1", "Plan a three day trip to the mountains.")
    rule, detail = f("Plan a three day trip to the seaside.")
    assert rule == "too_similar" and detail["nearest_id"] == "m1"


def test_threshold_is_strictly_greater():
    # 2*lcs/(m+n) = 0.7 exactly in rationals: 7 of 10 tokens shared in order, both sides of length 10
    a = "a1 a2 a3 a4 a5 a6 a7 b8 b9 b10"
    b = "a1 a2 a3 a4 a5 a6 a7 c8 c9 c10"
    score = rouge_scorer.RougeScorer(["rougeL"]).score(a, b)["rougeL"].fmeasure
    f = InstructionFilter(Recipe(), ReferenceScan())
    f.add("p", b)
    assert f(a)[0] == ("too_similar" if score > 0.7 else "kept")


def test_rule_names_are_documented():
    for rules in STAGE_RULES.values():
        assert set(rules) <= set(RULES)


def outcomes(parsed, truncated=False, limit=5, seed=0):
    return filter_instances(parsed, truncated, limit, random.Random(seed))


def test_instance_invalid_rules():
    result = outcomes([("a", "a"), ("", ""), ("x", ""), ("Question:", "y"), ("q", "Answer:"), ("q", "fine")])
    expected = ["output_equals_input", "output_equals_input", "empty_output", "ends_with_colon"]
    assert [r for r, _ in result] == [*expected, "ends_with_colon", "kept"]


def test_instance_truncated_drops_last_only():
    result = outcomes([("a", "1"), ("b", "2")], truncated=True)
    assert [r for r, _ in result] == ["kept", "truncated"]


def test_conflicting_outputs_drop_the_whole_task():
    result = outcomes([("a", "1"), ("b", "2"), ("a", "3"), ("", "4")])
    assert [r for r, _ in result] == ["conflicting_outputs"] * 4
    assert result[0][1] == {"between": [0, 2]}
    # empty inputs never conflict
    assert [r for r, _ in outcomes([("", "1"), ("", "2")])] == ["kept", "kept"]


def test_duplicates_and_limit():
    parsed = [("a", "1"), ("a", "1"), ("b", "2"), ("c", "3"), ("d", "4"), ("e", "5"), ("f", "6")]
    result = outcomes(parsed, limit=5)
    assert result[1] == ("duplicate_instance", {"duplicate_of": 0})
    rules = [r for r, _ in result]
    assert rules.count("kept") == 5 and rules.count("over_limit") == 1
    # the sample is the seeded RNG's: the same seed keeps the same ones
    assert result == outcomes(parsed, limit=5)
