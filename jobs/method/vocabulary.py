"""The method's closed vocabularies: export formats, decision stages and rules, and the kinds of
endpoint. (A job's states are the job store's: jobs.store.job.JOB_STATES.)

The engine (jobs/) uses these same names, so the API and the code cannot drift apart.
"""

# An endpoint (jobs.method.endpoint): the API it speaks; online (each request as it is built) or batch
# (a stage's requests through the provider's Batch API, at its batch prices); how a chat endpoint takes a
# JSON schema for structured replies (OpenAI and vLLM: `json_schema`; llama.cpp's server and Anyscale:
# `json_object` with a `schema` beside it); the chat token cap's two names (an endpoint that refuses one
# gets the other for the rest of the run).
API_KINDS = ("completions", "chat")
MODES = ("online", "batch")
RESPONSE_FORMATS = ("json_schema", "json_object")
TOKEN_LIMITS = ("max_completion_tokens", "max_tokens")
EXPORT_FORMATS = ("finetune", "alpaca", "chat", "parquet")
# How stage 2 decides Yes/No (jobs.method.stages.classification).
CLASSIFICATION_METHODS = ("auto", "text", "logprobs", "calibrated", "fitted", "knn")
# Dataset files: the file each export format writes, and what every file of a dataset is (manifests).
FILES = {
    "finetune": "finetune.jsonl",
    "alpaca": "alpaca.json",
    "chat": "chat.jsonl",
    "parquet": "dataset.parquet",
}
FORMATS = {
    FILES["finetune"]: "self-instruct-finetune-jsonl",
    FILES["alpaca"]: "alpaca-json",
    FILES["chat"]: "openai-chat-jsonl",
    FILES["parquet"]: "parquet",
    "instructions.jsonl": "instructions-jsonl",
    "decisions.jsonl": "decisions-jsonl",
    "stats.json": "stats-json",
    "run.json": "run-json",
    "README.md": "dataset-card-markdown",
}
DECISION_STAGES = ("instruction", "instance")
VERDICTS = ("kept", "dropped")

# The closed set of rules. `kept` is the only rule whose verdict is kept.
RULES: dict[str, str] = {
    "kept": "passed every filter",
    # instruction stage, in the order the filters run
    "too_short": "3 words or fewer (whitespace split)",
    "too_long": "more than 150 words",
    "blacklisted_keyword": "contains a blacklisted keyword as a whole word (detail.keyword)",
    "write_a_program": 'starts with "Write a program"',
    "starts_with_punctuation": "first character is ASCII punctuation",
    "starts_with_non_ascii": "first character is not ASCII",
    "contaminated": "shares a run of words (detail.ngram) with, or is too similar by ROUGE-L (detail.score) "
    "to, an item of a reference set the job names (detail.reference_set, reference_id, reference_text)",
    "exact_duplicate": "the same text is already in the pool (detail.nearest_id)",
    "too_similar": "ROUGE-L F-measure above the threshold against a pool item (detail.nearest_*, score)",
    "semantic_duplicate": "the cosine of its embedding and a pool item's is above the recipe's "
    "semantic_threshold (detail.nearest_*, cosine; rouge_l: its best ROUGE-L, which passed)",
    "target_reached": "the run had kept enough instructions before this candidate was considered",
    # instance stage
    "unparseable": "no instance could be parsed from the response (text is the raw response)",
    "truncated": "the last instance of a response cut off by the length limit",
    "empty_output": "the output is empty",
    "output_equals_input": "the output equals the input",
    "ends_with_colon": "the input or output ends with a colon (usually cut off)",
    "conflicting_outputs": "two instances of the task share an input but not the output: all dropped",
    "duplicate_instance": "the same input and output already kept for the task (detail.duplicate_of)",
    "over_limit": "more instances than the per-task limit; a random sample is kept",
    "judge_low_score": "the LLM judge scored it below the recipe's judge_threshold (detail.judge_score, "
    "judge_rationale)",
}
STAGE_RULES: dict[str, tuple[str, ...]] = {
    "instruction": (
        "kept",
        "too_short",
        "too_long",
        "blacklisted_keyword",
        "write_a_program",
        "starts_with_punctuation",
        "starts_with_non_ascii",
        "contaminated",
        "exact_duplicate",
        "too_similar",
        "semantic_duplicate",
        "target_reached",
    ),
    "instance": (
        "kept",
        "unparseable",
        "truncated",
        "empty_output",
        "output_equals_input",
        "ends_with_colon",
        "contaminated",
        "conflicting_outputs",
        "duplicate_instance",
        "over_limit",
        "judge_low_score",
    ),
}
