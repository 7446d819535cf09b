"""Evaluations' parts that need no engine: datasets, scorers, grids, intervals, specs."""

from __future__ import annotations

import math

import pytest

from textgen.errors import InvalidRequest
from textgen.experiments import Config, EvaluationSpec, Item, datasets, grid, scorers
from textgen.experiments.results import confidence_interval


def test_jsonl_items_take_the_field_names_researchers_use() -> None:
    items = datasets.parse(
        '{"question": "Capital of France?", "answer": "Paris"}\n\n'
        '{"prompt": "2+2=", "reference": "4", "id": "sum"}\n'
        '{"messages": [{"role": "user", "content": "Hi"}]}\n'
        '{"question": "Sky?", "choices": ["Green", "Blue"], "answer": 1}\n', "jsonl")
    assert [i.id for i in items] == ["0", "sum", "2", "3"]
    assert items[0] == Item(id="0", prompt="Capital of France?", reference="Paris")
    assert items[2].messages == [{"role": "user", "content": "Hi"}] and items[2].prompt is None
    assert items[3].choices == ["Green", "Blue"] and items[3].answer == 1
    assert items[3].reference is None


def test_csv_items_with_choices_as_json_or_bars() -> None:
    items = datasets.parse('prompt,choices,answer\n"A?","[""x"", ""y""]",0\nB?,p | q | r,2\n',
                           "csv")
    assert items[0].choices == ["x", "y"] and items[1].choices == ["p", "q", "r"]
    assert items[1].answer == 2


@pytest.mark.parametrize(("text", "says"), [
    ('{"reference": "x"}', "needs a prompt"),
    ('{"prompt": "a", "messages": [{"role": "user", "content": "b"}]}', "not both"),
    ('{"prompt": "a", "choices": ["x", "y"], "answer": 5}', "not the index"),
    ('{"prompt": "a", "choices": ["x", "y"], "answer": "x"}', "right choice's index"),
    ('{"prompt": "a", "choices": ["x"], "answer": 0}', "two or more"),
    ("not json", "Line 1 of the dataset is not JSON"),
    ("", "no items"),
])
def test_a_bad_dataset_says_which_item_and_why(text: str, says: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        datasets.parse(text, "jsonl")
    assert says in raised.value.message and raised.value.param == "dataset"


def test_scorers() -> None:
    item = Item(id="0", prompt="?", reference="Paris")
    assert scorers.exact_match(item, " paris. ") == 1.0
    assert scorers.exact_match(item, "Paris, France") == 0.0
    assert scorers.contains(item, "It is Paris, France.") == 1.0
    assert scorers.exact_match(Item(id="1", prompt="?"), "x") is None  # nothing to compare
    assert scorers.scorer({"name": "regex", "pattern": r"\d+"})(item, "it is 42") == 1.0
    assert scorers.json_valid(item, '{"a": 1}') == 1.0 and scorers.json_valid(item, "{a") == 0.0
    schema = {"type": "object", "required": ["a"]}
    check = scorers.scorer({"name": "json_schema", "schema": schema})
    assert check(item, '{"a": 1}') == 1.0 and check(item, '{"b": 1}') == 0.0
    assert scorers.scorer("choice") == scorers.CHOICE
    with pytest.raises(InvalidRequest, match="Unknown scorer"):
        scorers.scorer("bleu")
    with pytest.raises(InvalidRequest, match="not a regular expression"):
        scorers.scorer({"name": "regex", "pattern": "("})


def test_a_grid_is_every_combination_with_readable_names() -> None:
    configs = grid(["a", "b"], {"temperature": [0, 0.7], "max_tokens": [8]}, [None, "Be brief."])
    assert len(configs) == 8 and len({c.label for c in configs}) == 8
    assert configs[0].label == "a max_tokens=8 temperature=0"
    with pytest.raises(InvalidRequest, match="cannot set messages"):
        Config(model="a", settings={"messages": []})


def test_a_spec_refuses_what_could_not_run() -> None:
    items = [Item(id="0", prompt="?", reference="x")]
    with pytest.raises(InvalidRequest, match="at least one configuration"):
        EvaluationSpec(configs=[], items=items)
    with pytest.raises(InvalidRequest, match="same name"):
        EvaluationSpec(configs=[Config(model="a"), Config(model="a")], items=items)
    with pytest.raises(InvalidRequest, match="needs every item to have a prompt and choices"):
        EvaluationSpec(configs=[Config(model="a")], items=items, scorer="choice")
    with pytest.raises(InvalidRequest, match="a dataset"):
        EvaluationSpec(configs=[Config(model="a")])
    spec = EvaluationSpec(configs=[Config(model="a", settings={"temperature": 0})], items=items,
                          scorer={"name": "regex", "pattern": "x"}, name="e")
    again = EvaluationSpec.from_json(spec.to_json())
    assert again.to_json() == spec.to_json() and again.total == 1


def test_intervals() -> None:
    low, high = confidence_interval([1.0] * 8 + [0.0] * 2)
    assert 0.4 < low < 0.8 < high <= 1.0  # Wilson: inside [0, 1], around 0.8
    assert confidence_interval([1.0, 1.0]) [1] == 1.0
    low, high = confidence_interval([0.5, 0.7, 0.9])
    assert math.isclose((low + high) / 2, 0.7)
    assert confidence_interval([]) == (None, None)


def test_results_carry_each_configurations_model_and_settings_and_say_which_varies() -> None:
    from textgen.experiments import Results

    configs = [{"model": "m", "settings": {"temperature": t, "max_tokens": 8, "stop": ["x"]}}
               for t in (0.0, 0.7)]
    labels = [Config(**c).label for c in configs]
    scores = [{"experiment": "e", "config": label, "item": "1", "request_id": "r", "output": "o",
               "score": s, "status": "ok", "seconds": 0.1, "completion_tokens": 3}
              for label, s in zip(labels, (1.0, 0.0), strict=True)]
    results = Results.of(labels, scores, configs)
    assert list(results.summary["temperature"]) == [0.0, 0.7]
    assert list(results.summary["model"]) == ["m", "m"]
    assert "stop" not in results.summary  # a list is not a plottable setting
    assert results.varying() == "temperature"  # max_tokens is the same in both
    assert Results.of(labels[:1], scores[:1], configs[:1]).varying() is None
