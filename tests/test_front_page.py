"""README.md is a front page, and what it says of the code stays true: the two commands on the first
screen, the reading-order table's files and sizes, the links, the kernels' reason to be under minway/."""
import re

from conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
LINES = README.splitlines()
READING_ROW = re.compile(r"^\| \[`([\w/.]+\.py)`\]\(\1\) \| (.+?) \| (\d+) \|$")
TOTAL_ROW = re.compile(r"^\| \| the method \| (\d+) \|$")
SLACK = 5  # lines a file may grow or shrink before its row must be brought up to date


def reading_table():
    """[(path, what, lines)] of the reading-order table, and its stated total."""
    rows = [m.groups() for m in map(READING_ROW.match, LINES) if m]
    [total] = [int(m.group(1)) for m in map(TOTAL_ROW.match, LINES) if m]
    return [(path, what, int(n)) for path, what, n in rows], total


def test_the_front_page_is_short_with_the_two_commands_first():
    assert len(LINES) <= 180
    first_screen = "\n".join(LINES[:40])
    assert "bash scripts/demo.sh" in first_screen and "bash scripts/test.sh" in first_screen


def test_the_reading_path_is_at_most_seven_files_of_the_method_and_says_its_size():
    rows, total = reading_table()
    assert 5 <= len(rows) <= 7
    for path, _, stated in rows:
        assert path.startswith("minway/") and path.count("/") == 1, path  # the method, not the machinery
        actual = len((ROOT / path).read_text(encoding="utf-8").splitlines())
        assert abs(actual - stated) <= SLACK, f"{path} has {actual} lines, the README says {stated}"
    assert total == sum(n for _, _, n in rows)
    said = re.search(r"The method is about (\d+) lines in (\d+) files", " ".join(LINES))
    assert said and int(said.group(2)) == len(rows) and abs(int(said.group(1)) - total) <= 0.1 * total


def test_the_reading_path_covers_the_method():
    """The forward pass, the prompt, the loss tokens, the objective, the projection, F1 and the loop."""
    rows, _ = reading_table()
    paths = {path for path, _, _ in rows}
    defined = {name for path in paths for name in
               re.findall(r"^(?:def|class) (\w+)", (ROOT / path).read_text(encoding="utf-8"), re.M)}
    for name in ("forward", "c_proj", "d_proj", "split_options", "output_nll", "wayward_loss", "c_dist",
                 "prompt_f1", "train_prompt"):
        assert name in defined, name


def test_every_link_and_path_it_names_exists():
    for target in re.findall(r"\]\(([^)#]+)\)", README):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target
    # files named in the text, and the directories of the layout table (not those a run writes, weights/gpt2/)
    files = re.findall(r"`((?:minway|weights|docs|benchmarks|scripts|examples|tests)/[\w/.-]+\.(?:py|md|sh|json))", README)
    directories = re.findall(r"^\| `([\w/]+/)`", README, re.M)
    assert len(files) >= 10 and {"minway/", "minway/kernels/", "minway/run/", "minway/experiments/"} <= set(directories)
    for path in files + directories:
        assert (ROOT / path).exists(), path


def test_the_kernels_say_why_they_are_not_a_top_level_package():
    [row] = [line for line in LINES if line.startswith("| `minway/kernels/`")]
    assert "transformers 5.25" in row and "`kernels`" in row and "top-level" in row
