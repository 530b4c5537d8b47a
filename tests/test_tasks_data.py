"""Tasks (names, output texts, label order) and data (reading, finding, downloading, sampling, truncation)."""
import gzip
import re
import sys
import types

import pytest

from fixtures import SHIPPED_DATA, TOKENIZER_DIR, ascii_locale, first_rows, tiny_checkpoint, write_tsv  # noqa: F401
from minway.run import data
from minway.run.data import HUB_SOURCES, Example, find_split, load_split, read_jsonl, read_tsv, sample_per_class
from minway.errors import MinwayError
from minway.tasks import TASKS, encode_options, get_task, split_options
from minway.run.config import RunConfig
from minway.run.model_and_data import Setup

# The option texts of the paper's code (Min et al.'s templates, index 1): the template is
# stripped, then a space is put in front of it (the "direct" formulation).
PAPER_OPTIONS = {
    "sst2": [" It was terrible .", " It was great ."],
    "sst5": [" It was terrible .", " It was bad .", " It was okay .", " It was good .", " It was great ."],
    "agnews": [" Subject: World.", " Subject: Sports.", " Subject: Business.", " Subject: Technology."],
    "subj": [" It's all subjective .", " It's all objective ."],
    "trec": [" Q: Description :", " Q: Entity :", " Q: Expression :", " Q: Human :", " Q: Location :",
             " Q: Number :"],
}

# The released code's split of those options, worked out by hand from its rule (the tokens
# before the first position where the options differ go after the input; the rest, then
# end-of-text, is the output): (text appended to every input, text of each label's output).
PAPER_SPLITS = {
    "sst2": (" It was", [" terrible .", " great ."]),
    "sst5": (" It was", [" terrible .", " bad .", " okay .", " good .", " great ."]),
    "agnews": (" Subject:", [" World.", " Sports.", " Business.", " Technology."]),
    "subj": (" It's all", [" subjective .", " objective ."]),
    "trec": (" Q:", [" Description :", " Entity :", " Expression :", " Human :", " Location :", " Number :"]),
}
EOT_ID = 50256

# max_length 256 for its "long datasets" (agnews, subj among the five), else 128; the text is cut to
# max_length - 16 tokens; the batch size (8) is halved for the long datasets
LONG_INPUT_TASKS = {"agnews", "subj"}


def one_line(error):
    message = str(error.value)
    assert "\n" not in message, message
    return message


# ---------------------------------------------------------------- tasks

@pytest.mark.parametrize("spelling, name", [
    ("sst2", "sst2"), ("SST-2", "sst2"), ("sst-2", "sst2"), ("SST2", "sst2"),
    ("sst-5", "sst5"), ("SST-5", "sst5"),
    ("AGNews", "agnews"), ("ag_news", "agnews"), ("AG-News", "agnews"),
    ("Subj", "subj"), ("SUBJ", "subj"), ("TREC", "trec"), ("trec", "trec"),
])
def test_task_name_spellings(spelling, name):
    assert get_task(spelling).name == name


@pytest.mark.parametrize("name", ["sst3", "mnli", "", "ag news extra"])
def test_unknown_task_lists_the_known_ones(name):
    with pytest.raises(MinwayError) as error:
        get_task(name)
    message = one_line(error)
    assert repr(name) in message
    for known in ("sst2", "sst5", "agnews", "subj", "trec"):
        assert known in message


def test_five_tasks_with_the_papers_class_counts():
    assert {name: task.n_classes for name, task in TASKS.items()} == {
        "sst2": 2, "sst5": 5, "agnews": 4, "subj": 2, "trec": 6}


@pytest.mark.parametrize("name", sorted(PAPER_OPTIONS))
def test_option_texts_are_the_papers(name):
    task = get_task(name)
    assert [task.option_text(c) for c in range(task.n_classes)] == PAPER_OPTIONS[name]


@pytest.mark.parametrize("name", sorted(PAPER_SPLITS))
def test_options_split_as_the_released_code_splits_them(name):
    from minway.run.tokenizer import load_tokenizer
    tokenizer = load_tokenizer(TOKENIZER_DIR)
    common_text, output_texts = PAPER_SPLITS[name]
    common, outputs = encode_options(get_task(name), tokenizer)
    assert common == tokenizer.encode(common_text)
    assert outputs == [tokenizer.encode(text) + [EOT_ID] for text in output_texts]
    # the pieces are the options' own tokens: nothing was re-tokenised differently
    for option, output in zip(PAPER_OPTIONS[name], outputs):
        assert common + output[:-1] == tokenizer.encode(option)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_input_length_and_batch_size_are_the_released_codes(name):
    task = get_task(name)
    assert task.max_input_tokens == (256 if name in LONG_INPUT_TASKS else 128) - 16
    assert task.batch_size == (4 if name in LONG_INPUT_TASKS else 8)
    assert RunConfig(task=name, target="x").batch_size == task.batch_size
    assert RunConfig(task=name, target="x", batch_size=3).batch_size == 3


@pytest.mark.parametrize("options, common, outputs", [
    ([[1, 2, 3], [1, 4]], [1], [[2, 3, 9], [4, 9]]),
    ([[5, 6], [7, 6], [8]], [], [[5, 6, 9], [7, 6, 9], [8, 9]]),
    ([[1, 2, 3], [1, 2, 4], [1, 5, 4]], [1], [[2, 3, 9], [2, 4, 9], [5, 4, 9]]),
])
def test_split_options_at_the_first_difference(options, common, outputs):
    assert split_options(options, 9) == (common, outputs)


@pytest.mark.parametrize("options", [[[1, 2], [1, 2]], [[1, 2], [1, 2, 3]], [[4], [4]]])
def test_options_that_never_differ_are_refused(options):
    with pytest.raises(MinwayError) as error:
        split_options(options, 9)
    assert "differ" in one_line(error)


def readme_label_words():
    """{task: [verbalizer word of label 0, 1, ...]} as the README of each shipped data folder lists them."""
    words = {}
    for readme in SHIPPED_DATA.glob("*/README.md"):
        labels = re.findall(r"^- (\d) = [^(\n]*?\(\"([^\"]+)\"\)", readme.read_text(encoding="utf-8"), flags=re.M)
        assert [int(i) for i, _ in labels] == list(range(len(labels))), readme
        words[readme.parent.name] = [w for _, w in labels]
    return words


def test_label_order_follows_the_data_readme():
    words = readme_label_words()
    assert set(words) == set(TASKS)
    for name, task in TASKS.items():
        assert list(task.label_words) == words[name], name


def test_label_order_on_known_rows():
    trec = load_split(get_task("trec"), "test")
    assert trec[0].text == "How far is it from Denver to Aspen ?"
    assert get_task("trec").label_words[trec[0].label] == "Number"
    assert get_task("trec").label_words[trec[1].label] == "Location"  # What county is Modesto , California in ?
    sst2 = load_split(get_task("sst2"), "test")
    assert sst2[0].text == "one long string of cliches ." and get_task("sst2").label_words[sst2[0].label] == "terrible"


# ---------------------------------------------------------------- reading

def test_read_tsv(tmp_path):
    path = write_tsv(tmp_path / "a.tsv", [("a good film", 1), ("\"quoted\" text", 0)])
    assert read_tsv(path, 2) == [Example("a good film", 1), Example("\"quoted\" text", 0)]


@pytest.mark.parametrize("content, where", [
    ("sentence\tlabel\nfine\t1\n", "header"),
    ("", "header"),
    ("text\tlabel\nfine\t1\nbad label\t2\n", ":3 "),
    ("text\tlabel\nbad label\tx\n", ":2 "),
    ("text\tlabel\nbad label\t-1\n", ":2 "),
    ("text\tlabel\nno tab here\n", ":2 "),
    ("text\tlabel\ntoo\tmany\t1\n", ":2 "),
    ("text\tlabel\nfine\t1\n \t0\n", ":3 has an empty text"),
])
def test_read_tsv_errors_are_one_line(tmp_path, content, where):
    path = tmp_path / "bad.tsv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(MinwayError) as error:
        read_tsv(path, 2)
    message = one_line(error)
    assert str(path) in message and where in message


@pytest.mark.parametrize("name", ["train.tsv", "train.jsonl"])
def test_a_data_file_over_4_gib_is_refused_unread(tmp_path, name):
    path = tmp_path / name
    with open(path, "wb") as f:  # sparse: nothing is written
        f.truncate(2 ** 32 + 1)
    with pytest.raises(MinwayError) as error:
        (read_tsv if name.endswith(".tsv") else read_jsonl)(path, 2)
    assert "holds 4,294,967,297 bytes, more than the 4,294,967,296 it may" in str(error.value)


def test_a_line_of_a_16_mib_text_and_its_label_is_read(tmp_path):
    """The longest line read: a text of 16 MiB, then 64 characters (the tab, the label, spaces, the line end)."""
    path = tmp_path / "train.tsv"
    text = "x" * 2 ** 24
    path.write_text("text\tlabel\n" + text + "\t1" + " " * 61 + "\n" + "short\t0\n", encoding="utf-8")
    assert read_tsv(path, 2) == [Example(text, 1), Example("short", 0)]


def test_a_line_longer_than_a_text_and_its_label_is_refused_unread(tmp_path):
    """A text may hold 16 MiB, its line 64 characters more; beyond that nothing more is read."""
    path = tmp_path / "train.tsv"
    with open(path, "wb") as f:  # sparse: 16 MiB + 66 NUL bytes and no line end
        f.truncate(16 * 2 ** 20 + 66)
    with pytest.raises(MinwayError) as error:
        read_tsv(path, 2)
    assert (f"{path} has a line of more than 16,777,280 characters: one example a line, a text of at most 16 MiB"
            in str(error.value))


def test_data_files_are_utf8_whatever_the_locale(tmp_path, ascii_locale):  # noqa: F811
    rows = [("un café très réussi", 1), ("naïve", 0)]
    plain = write_tsv(tmp_path / "a.tsv", rows)
    packed = tmp_path / "a.tsv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert read_tsv(plain, 2) == read_tsv(packed, 2) == [Example(*row) for row in rows]


def test_json_lines_are_utf8_whatever_the_locale(tmp_path, ascii_locale):  # noqa: F811
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "un café très réussi", "label": 1}\n{"text": "naïve", "label": 0}\n', encoding="utf-8")
    assert read_jsonl(path, 2) == [Example("un café très réussi", 1), Example("naïve", 0)]


# Each Hub copy's labels, as its dataset card names them, and the label word each must become.
HUB_LABELS = {
    "sst2": {"negative": "terrible", "positive": "great"},
    "sst5": {"very negative": "terrible", "negative": "bad", "neutral": "okay", "positive": "good",
             "very positive": "great"},
    "agnews": {0: "World", 1: "Sports", 2: "Business", 3: "Technology"},  # World, Sports, Business, Sci/Tech
    "subj": {"subjective": "subjective", "objective": "objective"},
    # coarse_label: ABBR, ENTY, DESC, HUM, LOC, NUM
    "trec": {0: "Expression", 1: "Entity", 2: "Description", 3: "Human", 4: "Location", 5: "Number"},
}


@pytest.mark.parametrize("task", sorted(HUB_LABELS))
def test_each_hub_label_becomes_its_label_word(task):
    label_map = HUB_SOURCES[task][3]
    assert {source: TASKS[task].label_words[ours] for source, ours in label_map.items()} == HUB_LABELS[task]


def test_read_tsv_without_examples(tmp_path):
    path = tmp_path / "empty.tsv"
    path.write_text("text\tlabel\n")
    with pytest.raises(MinwayError, match="no examples"):
        read_tsv(path, 2)


# ---------------------------------------------------------------- finding

@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """cwd in an empty tmp dir, no $MINWAY_DATA, no downloads, no shipped data, an empty download cache."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MINWAY_DATA", raising=False)
    monkeypatch.setenv("MINWAY_OFFLINE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "SHIPPED_DATA", tmp_path / "no-shipped-data")
    fake_datasets(monkeypatch, {}, [])
    return tmp_path


def test_k_shot_layout(clean_env):
    root = clean_env / "d"
    write_tsv(root / "k-shot" / "sst2" / "16-42" / "train.tsv", [("k-shot row", 1)])
    write_tsv(root / "sst2" / "train.tsv", [("full row", 0)])
    task = get_task("sst2")
    assert find_split(task, "train", root, k_shot=(16, 42)) == root / "k-shot" / "sst2" / "16-42" / "train.tsv"
    assert load_split(task, "train", root, k_shot=(16, 42)) == [Example("k-shot row", 1)]
    assert load_split(task, "train", root) == [Example("full row", 0)]
    with pytest.raises(MinwayError) as error:
        find_split(task, "train", root, k_shot=(16, 13))
    assert "16-13" in one_line(error)


def test_data_dir_precedence(clean_env, monkeypatch):
    task = get_task("sst2")
    for name in ("flag", "env", "shipped", "data"):
        write_tsv(clean_env / name / "sst2" / "train.tsv", [(name, 0)])
    write_tsv(data.download_dir() / "sst2" / "train.tsv", [("downloaded", 0)])
    monkeypatch.setattr(data, "SHIPPED_DATA", clean_env / "shipped")

    def text():
        return load_split(task, "train")[0].text
    assert text() == "shipped"                                 # data/ in the working directory is not looked at
    (clean_env / "shipped" / "sst2" / "train.tsv").unlink()
    assert text() == "downloaded"                              # the download cache after the shipped data
    monkeypatch.setenv("MINWAY_DATA", str(clean_env / "env"))
    assert text() == "env"                                     # $MINWAY_DATA before both
    assert load_split(task, "train", clean_env / "flag")[0].text == "flag"  # --data-dir before all


def test_gzipped_files_read_as_plain_ones(clean_env):
    rows = [("a good film", 1), ("a dull one", 0)]
    write_tsv(clean_env / "plain" / "sst2" / "train.tsv", rows)
    packed = clean_env / "packed" / "sst2" / "train.tsv.gz"
    packed.parent.mkdir(parents=True)
    packed.write_bytes(gzip.compress((clean_env / "plain" / "sst2" / "train.tsv").read_bytes()))
    task = get_task("sst2")
    assert find_split(task, "train", clean_env / "packed") == packed
    assert load_split(task, "train", clean_env / "packed") == load_split(task, "train", clean_env / "plain")
    packed.write_bytes(packed.read_bytes()[:-10])
    with pytest.raises(MinwayError) as error:
        load_split(task, "train", clean_env / "packed")
    assert str(packed) in one_line(error) and "gzip" in one_line(error)


@pytest.mark.parametrize("how, fragments", [
    ("flag", ["--data-dir", "empty"]),
    ("env", ["$MINWAY_DATA", "empty"]),
    ("nowhere", ["no-shipped-data", "could not be downloaded", "--data-dir", "MINWAY_DATA", "minway[datasets]"]),
])
def test_missing_data_says_what_to_do(clean_env, monkeypatch, how, fragments):
    data_dir = None
    if how == "flag":
        data_dir = clean_env / "empty"
    elif how == "env":
        monkeypatch.setenv("MINWAY_DATA", str(clean_env / "empty"))
    with pytest.raises(MinwayError) as error:
        load_split(get_task("subj"), "train", data_dir)
    message = one_line(error)
    for fragment in ["subj/train.tsv", *fragments]:
        assert fragment in message, (fragment, message)
    assert not data.download_dir().exists()
    assert sys.modules["datasets"].calls == []  # offline: no download was even tried


def test_shipped_data_is_found_from_any_directory(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MINWAY_DATA", raising=False)
    assert find_split(get_task("SST-2"), "test") == SHIPPED_DATA / "sst2" / "test.tsv.gz"
    assert len(load_split(get_task("sst2"), "test")) == 872


def test_shipped_data_has_the_readmes_split_sizes():
    for task in TASKS:
        readme = (SHIPPED_DATA / task / "README.md").read_text(encoding="utf-8")
        for split in ("train", "test"):
            rows = re.search(rf"^\| {split} \| ([\d,]+) \|", readme, flags=re.M).group(1)
            assert len(load_split(get_task(task), split)) == int(rows.replace(",", "")), (task, split)


# ---------------------------------------------------------------- downloading

def fake_datasets(monkeypatch, tables, calls):
    fake = types.ModuleType("datasets")

    def load_dataset(dataset_id, *args, **kwargs):
        calls.append(dataset_id)
        if dataset_id not in tables:
            raise ConnectionError("no network")
        return tables[dataset_id]
    fake.load_dataset, fake.calls = load_dataset, calls
    monkeypatch.setitem(sys.modules, "datasets", fake)


@pytest.mark.parametrize("task, dataset_id, columns, expected", [
    ("sst2", "SetFit/sst2",
     {"text": ["a  fine\tfilm", "dull"], "label": [1, 0], "label_text": ["positive", "negative"]},
     [("a fine film", 1), ("dull", 0)]),
    ("sst5", "SetFit/sst5",
     {"text": ["a", "b", "c", "d", "e"], "label": [0, 1, 2, 3, 4],
      "label_text": ["very positive", "negative", "very negative", "neutral", "positive"]},
     [("a", 4), ("b", 1), ("c", 0), ("d", 2), ("e", 3)]),
    ("trec", "CogComp/trec",
     {"text": ["What is NASA ?", "Who ?", "Why ?"], "coarse_label": [0, 3, 2], "fine_label": [1, 2, 3]},
     [("What is NASA ?", 2), ("Who ?", 3), ("Why ?", 0)]),
    ("agnews", "fancyzhx/ag_news", {"text": ["w", "t"], "label": [0, 3]}, [("w", 0), ("t", 3)]),
    ("subj", "SetFit/subj", {"text": ["s", "o"], "label": [9, 9], "label_text": ["subjective", "objective"]},
     [("s", 0), ("o", 1)]),
])
def test_download_writes_tsv_with_our_labels(clean_env, monkeypatch, task, dataset_id, columns, expected):
    monkeypatch.delenv("MINWAY_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    calls = []
    test_columns = {k: v[:1] for k, v in columns.items()}
    fake_datasets(monkeypatch, {dataset_id: {"train": columns, "test": test_columns}}, calls)
    t = get_task(task)
    assert find_split(t, "train") == data.download_dir() / task / "train.tsv"
    assert calls == [dataset_id]
    assert load_split(t, "train") == [Example(*row) for row in expected]
    assert load_split(t, "test") == [Example(*expected[0])]
    assert calls == [dataset_id]  # found on disk the second time
    assert not list((data.download_dir() / task).glob("*.tmp"))


def test_a_download_is_written_in_utf8_whatever_the_locale(clean_env, monkeypatch, ascii_locale):  # noqa: F811
    monkeypatch.delenv("MINWAY_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    split = {"text": ["un café très réussi"], "label": [1], "label_text": ["positive"]}
    fake_datasets(monkeypatch, {"SetFit/sst2": {"train": split, "test": split}}, [])
    assert load_split(get_task("sst2"), "train") == [Example("un café très réussi", 1)]
    assert (data.download_dir() / "sst2" / "train.tsv").read_text(encoding="utf-8").endswith("réussi\t1\n")


def test_a_download_goes_into_a_task_folder_left_by_an_earlier_one(clean_env, monkeypatch):
    """A download killed before its files were written leaves the task's folder: the next one uses it."""
    monkeypatch.delenv("MINWAY_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    (data.download_dir() / "sst2").mkdir(parents=True)
    split = {"text": ["fine"], "label": [1], "label_text": ["positive"]}
    fake_datasets(monkeypatch, {"SetFit/sst2": {"train": split, "test": split}}, [])
    assert load_split(get_task("sst2"), "train") == [Example("fine", 1)]


def test_failed_download_is_the_missing_data_error(clean_env, monkeypatch):
    monkeypatch.delenv("MINWAY_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    calls = []
    fake_datasets(monkeypatch, {}, calls)
    with pytest.raises(MinwayError) as error:
        load_split(get_task("sst2"), "train")
    assert calls == ["SetFit/sst2"] and "--data-dir" in one_line(error)


@pytest.mark.parametrize("variable", ["MINWAY_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_never_downloads(clean_env, monkeypatch, variable):
    monkeypatch.delenv("MINWAY_OFFLINE")
    monkeypatch.setenv(variable, "1")
    calls = []
    fake_datasets(monkeypatch, {"SetFit/sst2": {}}, calls)
    with pytest.raises(MinwayError):
        load_split(get_task("sst2"), "train")
    assert calls == []


# ---------------------------------------------------------------- sampling

def labelled(counts):
    return [Example(f"{label}-{i}", label) for label, n in enumerate(counts) for i in range(n)]


def test_sample_per_class():
    examples = labelled([10, 7, 2])
    chosen = sample_per_class(examples, 4, seed=1)
    by_label = [sum(e.label == c for e in chosen) for c in range(3)]
    assert by_label == [4, 4, 2]                       # all of a class with fewer than k
    assert len(set(chosen)) == len(chosen) and set(chosen) <= set(examples)
    assert sample_per_class(examples, 4, seed=1) == chosen
    assert sample_per_class(list(examples), 4, seed=2) != chosen
    orders = {tuple(e.label for e in sample_per_class(examples, 4, seed=s)) for s in range(5)}
    assert len(orders) > 1


def test_sample_per_class_on_real_data():
    train = load_split(get_task("trec"), "train")
    chosen = sample_per_class(train, 16, seed=13)
    assert sorted(e.label for e in chosen) == [c for c in range(6) for _ in range(16)]
    assert sample_per_class(train, 16, seed=13) == chosen


# ---------------------------------------------------------------- truncation in Setup

@pytest.mark.parametrize("task", sorted(TASKS))
def test_inputs_are_truncated_and_outputs_never(tiny_checkpoint, tmp_path, task):
    from minway.run.tokenizer import load_tokenizer
    tokenizer = load_tokenizer(TOKENIZER_DIR)
    limit = (256 if task in LONG_INPUT_TASKS else 128) - 16
    common_text, output_texts = PAPER_SPLITS[task]
    common = tokenizer.encode(common_text)
    long_text = " ".join(f"word{i}" for i in range(400))
    rows = [(long_text, 0), ("short one", 1)] + first_rows(task, "train", 6)
    write_tsv(tmp_path / task / "train.tsv", rows)
    write_tsv(tmp_path / task / "test.tsv", [(long_text, 1), ("tiny", 0)])
    config = RunConfig(task=task, target="Write a question.", model=str(tiny_checkpoint), data_dir=str(tmp_path),
                       train_split="all")  # every row, in the file's order
    setup = Setup(config)
    assert setup.options == [tokenizer.encode(text) + [EOT_ID] for text in output_texts]
    full = [tokenizer.encode(text) for text, _ in rows]
    assert len(full[0]) > limit
    assert setup.train_inputs == [ids[:limit] + common for ids in full]
    assert len(setup.train_inputs[0]) == limit + len(common)
    assert setup.train_outputs == [setup.options[int(label)] for _, label in rows]
    assert setup.test_inputs == [tokenizer.encode(long_text)[:limit] + common, tokenizer.encode("tiny") + common]
    assert setup.test_labels == [1, 0]
    assert setup.target_ids(config) == tokenizer.encode("Write a question.")


def test_setup_k_shot_and_max_eval(tiny_checkpoint, tmp_path):
    write_tsv(tmp_path / "sst2" / "train.tsv", [(f"row {i}", i % 2) for i in range(20)])
    write_tsv(tmp_path / "sst2" / "test.tsv", [(f"test {i}", i % 2) for i in range(9)])
    setup = Setup(RunConfig(task="sst2", target="x y", model=str(tiny_checkpoint), data_dir=str(tmp_path),
                            k=3, seed=5, max_eval=4))
    assert len(setup.train_inputs) == 6 and sorted(setup.train_outputs) == sorted(
        [setup.options[0]] * 3 + [setup.options[1]] * 3)
    assert len(setup.test_inputs) == 4 and setup.test_labels == [0, 1, 0, 1]
