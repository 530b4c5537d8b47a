"""The layout of a packed pass (minway.packing), worked out by hand from its definition."""
from minway.packing import pack


def test_rows_that_start_their_sequences():
    layout = pack([2, 3])
    assert layout.lengths == [2, 3] and layout.key_lengths == [2, 3]
    assert layout.starts.tolist() == [0, 2, 5]
    assert layout.key_index.tolist() == [0, 1, 2, 3, 4]
    assert layout.positions.tolist() == [0, 1, 0, 1, 2]


def test_rows_that_continue_other_rows():
    # a 3-token prompt; an input of 2 that continues the prompt's first 2 tokens; an option of 1
    # that continues the whole prompt, then the input
    layout = pack([3, 2, 1], [(), [(0, 2)], [(0, 3), (1, 2)]])
    assert layout.lengths == [3, 2, 1] and layout.key_lengths == [3, 4, 6]
    assert layout.starts.tolist() == [0, 3, 5, 6]
    assert layout.key_index.tolist() == [0, 1, 2] + [0, 1, 3, 4] + [0, 1, 2, 3, 4, 5]
    assert layout.positions.tolist() == [0, 1, 2] + [2, 3] + [5]


def test_the_last_tokens_of_each_row_as_queries():
    layout = pack([3, 2, 1], [(), [(0, 2)], [(0, 3), (1, 2)]])
    queries, index = layout.last([1, 2, 0])
    assert index.tolist() == [2, 3, 4]
    assert queries.lengths == [1, 2, 0] and queries.starts.tolist() == [0, 1, 3, 3]
    assert queries.key_lengths == layout.key_lengths and queries.positions.tolist() == [2, 2, 3]


def test_the_example_of_the_docstring():
    layout = pack([3, 2], [(), [(0, 3)]])
    assert layout.starts.tolist() == [0, 3, 5] and layout.key_lengths == [3, 5]
    assert layout.positions.tolist() == [0, 1, 2, 3, 4]
    assert layout.key_index.tolist() == [0, 1, 2, 0, 1, 2, 3, 4]
