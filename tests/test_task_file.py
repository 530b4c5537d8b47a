"""A user's own task, defined by a file: its checks, its split into input and output tokens, how a
run keeps it, and train.py, eval.py and sweep.py on it (the tiny random GPT-2, a few steps)."""
import importlib
import json
import shutil

import pytest

from fixtures import TOKENIZER_DIR, assert_one_line_error, first_rows, run_in_process, run_script, write_tsv
from fixtures import tiny_checkpoint  # noqa: F401  (pytest fixture)
from minway.run.config import RunConfig
from minway.run.data import load_split
from minway.errors import MinwayError
from minway.run.model_and_data import Setup
from minway.run.task_file import read_task_file
from minway.tasks import TASKS, encode_options, get_task
from minway.run.tokenizer import load_tokenizer

TARGET = "Write a question about the given fact."
DEFINITION = {"name": "reviews", "template": " All in all, it was {} .", "label_words": ["bad", "good"],
              "train_file": "train.jsonl", "test_file": "test.tsv"}


def write_task(directory, **fields):
    """A task file in ``directory``, beside 24 training examples (JSON lines) and 8 test ones (TSV) of SST-2."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "train.jsonl").write_text("".join(json.dumps({"text": text, "label": int(label)}) + "\n"
                                                   for text, label in first_rows("sst2", "train", 24)))
    write_tsv(directory / "test.tsv", first_rows("sst2", "test", 8))
    path = directory / "task.json"
    path.write_text(json.dumps({**DEFINITION, **fields}))
    return path


def error_of(path):
    with pytest.raises(MinwayError) as error:
        read_task_file(path)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"task file {path}"), message
    return message


# ---------------------------------------------------------------- the file, checked

@pytest.mark.parametrize("fields, fragment", [
    ({"label_word": ["a", "b"]}, "unknown field 'label_word'"),
    ({"template": " It was ."}, "must hold '{}'"),
    ({"template": " {} or {} ."}, "must hold '{}'"),
    ({"template": " It was {x} {} ."}, "no other brace"),
    ({"template": " It was {} }."}, "no other brace"),
    ({"template": " { It was {} ."}, "no other brace"),
    ({"template": 3}, "must hold '{}'"),
    ({"label_words": ["good"]}, "at least two distinct words"),
    ({"label_words": ["good", "good"]}, "at least two distinct words"),
    ({"label_words": "good bad"}, "at least two distinct words"),
    ({"label_words": ["good", 1]}, "at least two distinct words"),
    ({"label_words": ["good", " "]}, "at least two distinct words"),
    ({"max_input_tokens": 0}, "max_input_tokens must be a whole number of at least 1"),
    ({"max_input_tokens": "112"}, "max_input_tokens must be a whole number"),
    ({"batch_size": True}, "batch_size must be a whole number"),
    ({"name": "my task"}, "task name 'my task' must be letters, digits"),
    ({"name": "../up"}, "task name '../up'"),
    ({"name": "SST-2"}, "'SST-2' is one of the paper's tasks"),
    ({"train_file": "train.csv"}, "train_file 'train.csv' must end in .tsv, .tsv.gz, .jsonl"),
    ({"test_file": ""}, "test_file must be a file name"),
])
def test_a_mistake_in_the_file_is_one_line(tmp_path, fields, fragment):
    assert fragment in error_of(write_task(tmp_path, **fields))


@pytest.mark.parametrize("content, fragment", [
    ("{not json", "is not valid JSON"),
    ("", "is empty: write the task's fields in it"),
    (" \n", "is empty"),
    (b"\xff{}", "is not valid JSON"),
    ("[]", "must hold a JSON object"),
    (json.dumps({k: v for k, v in DEFINITION.items() if k != "test_file"}), "lacks test_file"),
])
def test_a_file_that_is_not_a_definition_is_one_line(tmp_path, content, fragment):
    path = tmp_path / "task.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert fragment in error_of(path)


def test_a_directory_for_a_task_file_is_one_line(tmp_path):
    assert "is not a regular file" in error_of(tmp_path)


def test_a_missing_task_file_is_one_line_before_torch(tmp_path):
    result = run_script("train.py", "--task-file", tmp_path / "nope.json", "--target", TARGET)
    assert_one_line_error(result, f"task file {tmp_path / 'nope.json'} does not exist")


def test_the_smallest_limits_are_one(tmp_path):
    definition = read_task_file(write_task(tmp_path, max_input_tokens=1, batch_size=1))
    assert (definition["max_input_tokens"], definition["batch_size"]) == (1, 1)


def test_a_task_file_of_up_to_a_mebibyte_is_read(tmp_path):
    """Padded with spaces to 2^20 bytes it is read; one byte more is refused unread."""
    path = write_task(tmp_path)
    text = path.read_text()
    path.write_text(text + " " * (2 ** 20 - len(text.encode())))
    assert read_task_file(path)["name"] == "reviews"
    path.write_text(text + " " * (2 ** 20 + 1 - len(text.encode())))
    assert "holds 1,048,577 bytes, more than the 1,048,576 it may" in error_of(path)


def test_the_definition_has_every_field_with_its_default(tmp_path):
    definition = read_task_file(write_task(tmp_path))
    assert definition == {**DEFINITION, "max_input_tokens": 112, "batch_size": 8}
    assert read_task_file(write_task(tmp_path, max_input_tokens=112)) == definition


@pytest.mark.parametrize("line, fragment", [
    ('{"text": "fine", "label": 2}', ":2 is not a JSON object"),
    ('{"text": "fine", "label": true}', ":2 is not a JSON object"),
    ('{"text": "  ", "label": 0}', ":2 is not a JSON object"),
    ('["fine", 0]', ":2 is not a JSON object"),
    ('{"text": "fine", "label": 0', ":2 is not a JSON object"),
])
def test_a_bad_line_of_json_data_is_one_line(tmp_path, line, fragment):
    task = get_task(read_task_file(write_task(tmp_path)))
    (tmp_path / "train.jsonl").write_text('{"text": "good", "label": 1}\n' + line + "\n")
    with pytest.raises(MinwayError, match=fragment) as error:
        load_split(task, "train", tmp_path)
    assert "\n" not in str(error.value) and "label\" in 0..1" in str(error.value)


def test_json_lines_and_tsv_read_the_same_examples(tmp_path):
    task = get_task(read_task_file(write_task(tmp_path)))
    train = load_split(task, "train", tmp_path)
    assert [(e.text, str(e.label)) for e in train] == first_rows("sst2", "train", 24)
    write_tsv(tmp_path / "train.tsv", first_rows("sst2", "train", 24))
    assert load_split(get_task({**DEFINITION, "train_file": "train.tsv"}), "train", tmp_path) == train


def test_missing_data_says_which_file_and_how_to_point_at_it(tmp_path):
    task = get_task(read_task_file(write_task(tmp_path)))
    with pytest.raises(MinwayError, match="the test file of task reviews: pass --data-dir"):
        load_split(task, "test", tmp_path / "elsewhere")


# ---------------------------------------------------------------- the split into input and output

def test_options_split_by_the_rule_of_the_papers_tasks():
    tokenizer = load_tokenizer(TOKENIZER_DIR)
    as_file = get_task({**DEFINITION, "name": "sst-like", "template": " It was {} .",
                        "label_words": ["terrible", "great"]})
    assert encode_options(as_file, tokenizer) == encode_options(TASKS["sst2"], tokenizer)
    # the shared tokens end where the options first differ, inside a word's tokens if need be
    common, outputs = encode_options(get_task({**DEFINITION, "label_words": ["good", "good!"]}), tokenizer)
    assert tokenizer.decode(common) == " All in all, it was good"
    assert [tokenizer.decode(o[:-1]) for o in outputs] == [" .", "! ."]
    assert all(o[-1] == tokenizer.eot_id for o in outputs)


def test_options_that_never_differ_are_refused_in_one_line(tmp_path, tiny_checkpoint):  # noqa: F811
    path = write_task(tmp_path, template=" It was {}", label_words=["great", "great fun"])
    config = RunConfig(task=read_task_file(path), target=TARGET, model=str(tiny_checkpoint), data_dir=str(tmp_path),
                       device="cpu")
    with pytest.raises(MinwayError, match="do not differ within their shortest one's tokens"):
        Setup(config)


def test_inputs_are_cut_to_the_tasks_length_then_take_the_shared_tokens(tmp_path, tiny_checkpoint):  # noqa: F811
    path = write_task(tmp_path, max_input_tokens=5)
    setup = Setup(RunConfig(task=read_task_file(path), target=TARGET, model=str(tiny_checkpoint),
                            data_dir=str(tmp_path), device="cpu"))
    texts = [text for text, _ in first_rows("sst2", "test", 8)]
    assert setup.test_inputs == [setup.tokenizer.encode(t)[:5] + setup.common for t in texts]
    assert setup.tokenizer.decode(setup.common) == " All in all, it was"


# ---------------------------------------------------------------- how a run keeps it

def test_the_run_id_hashes_the_definition_not_where_the_file_is(tmp_path):
    def run_id(path, **fields):
        return RunConfig(task=read_task_file(path), target=TARGET, model="gpt2", data_dir=str(path.parent),
                         **fields).run_id()
    here = run_id(write_task(tmp_path / "a"))
    assert here.startswith("reviews-gpt2-Write-a-question")
    assert run_id(write_task(tmp_path / "b")) == here
    assert run_id(write_task(tmp_path / "c", template=" In short, {} .")) != here
    assert run_id(write_task(tmp_path / "d", test_file="test.jsonl")) != here
    assert RunConfig(task=read_task_file(tmp_path / "a" / "task.json"), target=TARGET, model="gpt2").batch_size == 8


def test_a_stored_definition_is_checked_again(tmp_path):
    with pytest.raises(MinwayError, match="label_words"):
        RunConfig(task={**DEFINITION, "label_words": ["one"]}, target=TARGET)
    with pytest.raises(MinwayError, match="not a task definition"):
        RunConfig(task={**DEFINITION, "labels": ["a", "b"]}, target=TARGET)
    with pytest.raises(MinwayError, match="both its train_file and its test_file, or neither"):
        RunConfig(task={**DEFINITION, "test_file": None}, target=TARGET)


# ---------------------------------------------------------------- train.py, eval.py and sweep.py

def run_main(script, args, capsys):
    """What ``python script args`` prints when it succeeds."""
    importlib.import_module(script.removesuffix(".py")).main(list(map(str, args)))
    return capsys.readouterr().out


@pytest.mark.slow
def test_a_task_defined_only_by_a_file_trains_evaluates_and_sweeps(tmp_path, tiny_checkpoint, monkeypatch,  # noqa: F811
                                                                  capsys):
    task_file = write_task(tmp_path / "task", batch_size=2)
    common = ["--model", tiny_checkpoint, "--steps", 2, "--device", "cpu", "--out", tmp_path / "runs",
              "--no-progress"]
    trained = run_main("train.py", ["--task-file", task_file, "--target", TARGET, *common], capsys)
    [run_dir] = (tmp_path / "runs").iterdir()
    config, results = (json.loads((run_dir / name).read_text()) for name in ("config.json", "results.json"))
    assert run_dir.name.startswith("reviews-") and config["task"] == read_task_file(task_file)
    assert config["data_dir"] == str(task_file.parent) and config["batch_size"] == 2
    assert results["n_test"] == 8 and "task accuracy" in trained

    # measured again without the task file: the run holds the definition; its data are where they were
    task_file.unlink()
    run_main("eval.py", [run_dir, "--device", "cpu", "--no-progress"], capsys)
    again = json.loads((run_dir / "eval.json").read_text())
    assert {k: again[k] for k in ("accuracy", "hard_prompt_accuracy", "projections")} == \
           {k: results[k] for k in ("accuracy", "hard_prompt_accuracy", "projections")}
    # and when the data move too, --data-dir says where they went
    shutil.move(tmp_path / "task", tmp_path / "moved")
    missing = run_in_process("eval.py", [run_dir, "--device", "cpu", "--no-progress"])
    assert_one_line_error(missing, "file of task reviews: pass --data-dir")
    moved = run_main("eval.py", [run_dir, "--device", "cpu", "--no-progress", "--data-dir", tmp_path / "moved"],
                     capsys)
    assert f"task accuracy (continuous prompt): {100 * results['accuracy']:.1f}%" in moved

    task_file = write_task(tmp_path / "task", batch_size=2)  # the same definition, back in place
    swept = run_main("sweep.py", ["--task-file", task_file, "--groups", "PILE-4", "--targets-limit", 1, "--seeds", 1,
                                  "--sweep-dir", tmp_path / "sweep", "--no-figures", *common], capsys)
    assert "2 done, 0 failed, 0 pending" in swept
    state = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert [r["task"] for r in state["runs"]] == ["reviews", "reviews"]
    assert "| reviews | PILE-4 |" in (tmp_path / "sweep" / "report.md").read_text()
