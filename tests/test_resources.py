"""The files that ship with minway and their lookup order: flag, else environment variable, else
the shipped copy; target names from the paper's prompt files; the tokenizer fallback."""
import json
import shutil

import pytest

from fixtures import SHIPPED_PROMPTS, TOKENIZER_DIR, assert_one_line_error, run_script, tiny_checkpoint  # noqa: F401
from minway import resources
from minway.run import tokenizer
from minway.errors import MinwayError
from minway.run.targets import find_named_target, resolve_target
from minway.run.tokenizer import load_checkpoint_tokenizer, load_tokenizer

PAPER_FILES = ["good_prompts.json", "natural_prompts.json", "pile.json", "pile_n=14.json", "pile_n=28.json",
               "pile_n=4.json", "pile_n=56.json", "pile_n=7.json"]


@pytest.fixture(autouse=True)
def no_variables(monkeypatch):
    for name in ("MINWAY_PROMPTS", "MINWAY_TOKENIZER", "MINWAY_DATA"):
        monkeypatch.delenv(name, raising=False)


def prompts(name):
    return json.loads((SHIPPED_PROMPTS / name).read_text())


def test_the_papers_prompt_files_ship_with_minway():
    assert sorted(p.name for p in SHIPPED_PROMPTS.glob("*.json")) == sorted(PAPER_FILES)
    assert len(prompts("natural_prompts.json")) == 32 and len(prompts("good_prompts.json")) == 25
    assert all(len(prompts(f)) == 30 for f in PAPER_FILES if f.startswith("pile"))


def test_a_paper_name_is_found_from_any_directory(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    name = "subtask047_misc_answering_science_questions"
    assert resolve_target(name=name) == prompts("natural_prompts.json")[name]
    assert resolve_target(name="SST-2_0") == prompts("good_prompts.json")["SST-2_0"]


def test_a_name_in_several_files_is_refused_with_the_files():
    with pytest.raises(MinwayError) as error:
        find_named_target("prompt00")
    message = str(error.value)
    assert "\n" not in message and "6 prompt files" in message and "--prompts-file" in message
    for name in PAPER_FILES:
        assert (name in message) == name.startswith("pile"), name


GROUPS = {"natural_prompts.json": "NI", "pile.json": "PILE", "good_prompts.json": "TRUE",
          **{f"pile_n={n}.json": f"PILE-{n}" for n in (4, 7, 14, 28, 56)}}


def list_targets(*text):
    result = run_script("train.py", "--list-targets", *text)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["name", "group", "file", "tokens", "text"]
    return [row.split(None, 4) for row in rows]


def test_the_papers_targets_are_listed_with_group_file_length_and_text():
    tokenizer = load_tokenizer(TOKENIZER_DIR)
    rows = list_targets()
    assert len(rows) == sum(len(prompts(f)) for f in PAPER_FILES)
    for name, group, file, tokens, text in rows:
        target = prompts(file)[name]
        assert group == GROUPS[file] and int(tokens) == len(tokenizer.encode(target))
        assert text == " ".join(target.split())
        if group.startswith("PILE-"):
            assert tokens == group.removeprefix("PILE-")


@pytest.mark.parametrize("text, names", [
    ("subtask047", {"subtask047_misc_answering_science_questions"}),  # part of a name
    ("SUBTASK047", {"subtask047_misc_answering_science_questions"}),  # any case
    ("prompt00", {"prompt00"}),                                       # in six files: six rows
    ("Positive, Negative", {f"SST-2_{i}" for i in (0, 1, 2)}),        # part of a text
])
def test_the_targets_listed_are_those_holding_the_text(text, names):
    rows = list_targets(text)
    assert {row[0] for row in rows} == names
    assert len(rows) == (6 if text == "prompt00" else len(names))


def test_a_part_of_a_target_name_gets_the_name_meant():
    with pytest.raises(MinwayError) as error:
        find_named_target("subtask047")
    assert str(error.value).endswith("did you mean subtask047_misc_answering_science_questions? (train.py "
                                     "--list-targets lists them)")
    with pytest.raises(MinwayError, match=r"did you mean prompt00, "):
        find_named_target("promt00")  # a typo


def test_a_listing_that_finds_nothing_is_a_one_line_error_with_the_nearest_names():
    assert_one_line_error(run_script("train.py", "--list-targets", "subtask04_"), "holds 'subtask04_'",
                          "did you mean subtask040_qasc_question_generation")


def test_prompts_file_by_path_or_by_the_name_of_a_paper_file(tmp_path):
    assert find_named_target("prompt00", "pile_n=14.json") == prompts("pile_n=14.json")["prompt00"]
    own = tmp_path / "mine.json"
    own.write_text(json.dumps({"prompt00": "my own target"}))
    assert find_named_target("prompt00", own) == "my own target"
    with pytest.raises(MinwayError, match="does not exist"):
        find_named_target("prompt00", "pile_n=99.json")


def test_minway_prompts_replaces_the_shipped_prompts(monkeypatch, tmp_path):
    (tmp_path / "set.json").write_text(json.dumps({"SST-2_0": "a target of my own"}))
    monkeypatch.setenv("MINWAY_PROMPTS", str(tmp_path))
    assert resolve_target(name="SST-2_0") == "a target of my own"
    with pytest.raises(MinwayError, match=r"no target named 'subtask047"):
        resolve_target(name="subtask047_misc_answering_science_questions")
    monkeypatch.setenv("MINWAY_PROMPTS", str(tmp_path / "nowhere"))
    with pytest.raises(MinwayError, match=r"nowhere \(\$MINWAY_PROMPTS\) is not a directory"):
        resources.prompts_dir()
    assert resources.prompts_dir(SHIPPED_PROMPTS) == SHIPPED_PROMPTS  # the flag before the variable


def test_tokenizer_dir_order(monkeypatch, tmp_path):
    assert resources.tokenizer_dir() == TOKENIZER_DIR
    for name in resources.TOKENIZER_FILES:
        shutil.copy(TOKENIZER_DIR / name, tmp_path / name)
    monkeypatch.setenv("MINWAY_TOKENIZER", str(tmp_path))
    assert resources.tokenizer_dir() == tmp_path
    assert resources.tokenizer_dir(TOKENIZER_DIR) == TOKENIZER_DIR
    (tmp_path / "merges.txt").unlink()
    with pytest.raises(MinwayError, match=r"merges.txt is missing: \$MINWAY_TOKENIZER must name"):
        resources.tokenizer_dir()


@pytest.mark.parametrize("kept", ["vocab.json", "merges.txt"])
def test_a_checkpoint_with_one_bpe_file_of_two_uses_gpt2s(tiny_checkpoint, tmp_path, capsys, monkeypatch,  # noqa: F811
                                                          kept):
    """Its own files are used only as a pair: one alone is not read."""
    monkeypatch.setattr(tokenizer, "_FALLBACK_NOTED", set())
    half = tmp_path / "half"
    shutil.copytree(tiny_checkpoint, half)
    (half / kept).write_text("not read")
    (half / ({"vocab.json", "merges.txt"} - {kept}).pop()).unlink()
    text = "A target, tokenised."
    assert load_checkpoint_tokenizer(half).encode(text) == load_checkpoint_tokenizer(tiny_checkpoint).encode(text)
    assert str(TOKENIZER_DIR) in capsys.readouterr().err


def test_a_checkpoint_without_bpe_files_uses_gpt2s_and_says_so_once(tiny_checkpoint, tmp_path, capsys,  # noqa: F811
                                                                     monkeypatch):
    monkeypatch.setattr(tokenizer, "_FALLBACK_NOTED", set())
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_checkpoint / name, bare / name)
    text = "A target, tokenised."
    assert load_checkpoint_tokenizer(bare).encode(text) == load_checkpoint_tokenizer(tiny_checkpoint).encode(text)
    load_checkpoint_tokenizer(bare)
    notes = capsys.readouterr().err.strip().splitlines()
    assert len(notes) == 1 and str(bare) in notes[0] and str(TOKENIZER_DIR) in notes[0]
