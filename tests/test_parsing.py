"""Parsing on recorded model outputs (Gemma 3 270M via llama.cpp), including malformed ones."""

from jobs.method.prompts import parsing

# Recorded from the local model on stage-1 prompts that end with "9.".
STAGE1 = (
    " Write a short description of the person.\n10. Give me some examples from different fields (e.g., "
    "medical, business) that you can use to describe this patient in your own words."
)


def test_instructions_split_numbered_continuation():
    assert parsing.instructions(STAGE1) == [
        "Write a short description of the person.",
        "Give me some examples from different fields (e.g., medical, business) that you can use to "
        "describe this patient in your own words.",
    ]


def test_instructions_collapse_whitespace_and_capitalise_first_letter_only():
    text = " list   NASA missions\n  with dates.\n10 . explain the GDP of France"
    assert parsing.instructions(text) == ["List NASA missions with dates.", "Explain the GDP of France"]


def test_instructions_malformed_outputs():
    assert parsing.instructions("") == []
    assert parsing.instructions("\n\n  \n") == []
    assert parsing.instructions("\n10. \n11. ") == []
    # numbers without the ". " separator are not list items
    assert parsing.instructions(" 3.5 cups\n10.5 grams") == ["3.5 cups 10.5 grams"]
    assert parsing.instructions("#@!?~") == ["#@!?~"]


def test_classification_answers():
    assert parsing.classification(" Yes") == "yes"
    assert parsing.classification("YES") == "yes"
    assert parsing.classification(" no.") == "no"
    assert parsing.classification(" Maybe") == "unparseable"
    assert parsing.classification("") == "unparseable"
    assert parsing.classification(" Yes, it") == "unparseable"


def test_generation_instances_recorded():
    assert parsing.generation_instances("Example 1\nInput: sea, ocean.\nOutput: I am a mermaid!\n\n") == [
        ("sea, ocean.", "I am a mermaid!")
    ]
    # no Output: the whole piece is the output, then cut at "Input:" - nothing is left (as the reference)
    assert parsing.generation_instances("Example 1\nInput: I am very happy.\n\n") == [("", "")]
    assert parsing.generation_instances("Output: I am very focused on my work.\n\n") == [
        ("", "I am very focused on my work.")
    ]


def test_generation_instances_several_and_cut_at_next_input():
    text = "Example 1\nInput: a\nOutput: b\nInput: c\nOutput: d\nExample 2\nOutput 2: e"
    assert parsing.generation_instances(text) == [("a", "b"), ("", "e")]


def test_generation_instances_malformed():
    assert parsing.generation_instances("") == []
    assert parsing.generation_instances("just some text") == []
    assert parsing.generation_instances("Example\nExample 2\n") == []


def test_classification_instances_recorded_and_malformed():
    assert parsing.classification_instances(
        "Class label: positive\nI am very happy with the service.\n\n"
    ) == [("I am very happy with the service.", "positive")]
    assert parsing.classification_instances("Class label: A\nClass label: B\nQuestion: why?") == [
        ("", "A"),
        ("Question: why?", "B"),
    ]
    assert parsing.classification_instances("no labels here") == []
