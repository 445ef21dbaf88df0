"""Every export loads as is with pandas, pyarrow and the datasets library."""

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from jobs.method.outputs.exports import TEMPLATES_WITH_INPUT, TEMPLATES_WITHOUT_INPUT
from tests.test_engine import generate


@pytest.fixture(scope="module")
def out(tmp_path_factory, seed_tasks):
    from tests.fake_llm import FakeLLM, Script

    with FakeLLM(Script()) as server:
        _, out = generate(tmp_path_factory.mktemp("exports"), server, seed_tasks, num_instructions=10)
    return out


def test_formats_with_pandas_and_pyarrow(out):
    alpaca = pd.read_json(out / "alpaca.json")
    assert list(alpaca.columns) == ["instruction", "input", "output"] and len(alpaca) > 5
    finetune = pd.read_json(out / "finetune.jsonl", lines=True)
    assert list(finetune.columns) == ["prompt", "completion", "instruction", "input", "output"]
    assert finetune["completion"].str.endswith("<|endoftext|>").all()
    assert not finetune.duplicated(["prompt", "completion"]).any()
    chat = pd.read_json(out / "chat.jsonl", lines=True)
    assert all([m["role"] for m in row] == ["user", "assistant"] for row in chat["messages"])
    table = pq.read_table(out / "dataset.parquet")
    assert table.num_rows == len(alpaca) == len(chat)
    assert table.column_names == [
        "id",
        "instruction_id",
        "instruction",
        "input",
        "output",
        "is_classification",
        "source",
    ]
    # the card lists every file with its record count
    card = (out / "README.md").read_text()
    assert f"| `alpaca.json` | {len(alpaca)} |" in card


def test_finetune_records_follow_the_reference_templates(out):
    prompts = {p for p, _ in TEMPLATES_WITH_INPUT + TEMPLATES_WITHOUT_INPUT}
    for line in (out / "finetune.jsonl").read_text().splitlines():
        row = json.loads(line)
        templates = TEMPLATES_WITH_INPUT if row["input"] else TEMPLATES_WITHOUT_INPUT
        rendered = {t.format(instruction=row["instruction"], input=row["input"]) for t, _ in templates}
        assert row["prompt"] in rendered, row
    assert len(prompts) == 13


def test_formats_with_the_datasets_library(out, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import datasets

    rows = len(json.loads((out / "alpaca.json").read_text()))
    for builder, name in [("json", "alpaca.json"), ("json", "chat.jsonl"), ("parquet", "dataset.parquet")]:
        ds = datasets.load_dataset(
            builder, data_files=str(out / name), split="train", cache_dir=str(tmp_path / "c")
        )
        assert ds.num_rows == rows, name
    ft = datasets.load_dataset(
        "json", data_files=str(out / "finetune.jsonl"), split="train", cache_dir=str(tmp_path)
    )
    assert set(ft.column_names) == {"prompt", "completion", "instruction", "input", "output"}


def test_the_dataset_folder_loads_as_a_dataset(out, tmp_path, seed_tasks, monkeypatch):
    """The card's YAML header names the instance files as configurations, so datasets.load_dataset(<the
    folder>) gives the instances, with the Parquet file's columns and types; without Parquet, the
    Alpaca file is the default and the other JSON formats load by name."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import datasets

    ds = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "a"))
    table = pq.read_table(out / "dataset.parquet")
    assert ds.column_names == table.column_names and ds.num_rows == table.num_rows > 5
    assert ds.features["is_classification"].dtype == "bool" and ds[0] == table.slice(0, 1).to_pylist()[0]
    from tests.fake_llm import FakeLLM, Script

    with FakeLLM(Script()) as server:
        formats = ("alpaca", "finetune", "chat")
        _, json_only = generate(tmp_path, server, seed_tasks, num_instructions=10, export_formats=formats)
    alpaca = datasets.load_dataset(str(json_only), split="train", cache_dir=str(tmp_path / "b"))
    assert alpaca.column_names == ["instruction", "input", "output"] and alpaca.num_rows == table.num_rows
    chat = datasets.load_dataset(str(json_only), "chat", split="train", cache_dir=str(tmp_path / "c"))
    assert chat[0]["messages"][0]["role"] == "user" and chat.num_rows == table.num_rows
