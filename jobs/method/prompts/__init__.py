"""The text the model is shown and the text it answers: the paper's prompt layouts with demonstrations
from the seed set (layouts.py), their chat form with the JSON schemas of structured replies (chat.py),
and reading completions back into candidates (parsing.py)."""
