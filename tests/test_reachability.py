"""Which tokens a d-projection can produce: checked against brute force over random queries."""
import pytest
import torch

from fixtures import TOKENIZER_DIR
from minway.evaluation import projection_report
from minway.reachability import REACHABLE, UNREACHABLE, reachability
from minway.run.tokenizer import load_tokenizer


def sphere_points(n, d, seed):
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    return x / x.norm(dim=1, keepdim=True)


@pytest.fixture(scope="module")
def embeddings():
    """Rows 0..7 on the unit sphere (every one a vertex of the hull), then:
    8: the mean of rows 0..3, strictly inside the hull;
    9: 2 x row 4, which leaves row 4 inside the hull (of row 9 and the origin, itself inside);
    10: the origin."""
    vertices = torch.cat([sphere_points(6, 3, seed=0), torch.eye(3)[:2] * -1])
    return torch.cat([vertices, vertices[:4].mean(0, keepdim=True), 2 * vertices[4:5], torch.zeros(1, 3)])


def dot_argmax_hits(E, n_queries=200_000, seed=1):
    """The set of rows that win the dot product for at least one random query."""
    queries = torch.randn(n_queries, E.shape[1], generator=torch.Generator().manual_seed(seed))
    return set((queries @ E.T).argmax(1).tolist())


def test_origin_is_inside_the_hull(embeddings):
    # premise of the construction: every direction has a vertex in front of the origin
    queries = torch.randn(10_000, 3, generator=torch.Generator().manual_seed(2))
    assert bool(((queries @ embeddings.T).max(1).values > 0).all())


def test_dot_reachability_matches_brute_force(embeddings):
    status = reachability(list(range(len(embeddings))), embeddings, "dot")
    expected_unreachable = {4, 8, 10}
    assert [i for i, s in enumerate(status) if s == UNREACHABLE] == sorted(expected_unreachable)
    assert all(status[i] == REACHABLE for i in range(len(embeddings)) if i not in expected_unreachable)
    hits = dot_argmax_hits(embeddings)
    assert hits.isdisjoint(expected_unreachable)
    assert hits == set(range(len(embeddings))) - expected_unreachable


def test_dot_reachability_of_a_subset_and_repeats(embeddings):
    assert reachability([8, 0, 8, 9], embeddings, "dot") == [UNREACHABLE, REACHABLE, UNREACHABLE, REACHABLE]


def test_random_points_in_higher_dimension_match_brute_force():
    # 40 Gaussian points in 4-d: some are vertices, some are not; the random queries decide
    E = torch.randn(40, 4, generator=torch.Generator().manual_seed(5))
    status = reachability(list(range(40)), E, "dot")
    hits = dot_argmax_hits(E, n_queries=400_000, seed=6)
    unreachable = {i for i, s in enumerate(status) if s == UNREACHABLE}
    assert hits.isdisjoint(unreachable)
    assert hits == {i for i, s in enumerate(status) if s == REACHABLE}
    assert 0 < len(unreachable) < 40  # the case is not trivial


def test_l2_every_distinct_vector_is_reachable(embeddings):
    assert reachability(list(range(len(embeddings))), embeddings, "l2") == [REACHABLE] * len(embeddings)


def test_cos_parallel_vectors_tie_to_the_lowest_id(embeddings):
    # rows 4 and 9 point the same way: only row 4 (the lower id) can be a cosine projection
    status = reachability(list(range(10)), embeddings[:10], "cos")
    assert status == [REACHABLE] * 9 + [UNREACHABLE]


def test_coincident_rows_under_l2_go_to_the_lowest_id():
    E = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    assert reachability([0, 1, 2], E, "l2") == [REACHABLE, REACHABLE, UNREACHABLE]


def test_f1_ceiling_from_an_unreachable_target_word():
    """Target "cat dog fish" where " fish" sits at the origin, inside the hull of the vocabulary:
    the best any dot projection can do is "cat dog", F1 = 2 * 1 * (2/3) / (1 + 2/3) = 0.8."""
    tokenizer = load_tokenizer(TOKENIZER_DIR)
    target_ids = tokenizer.encode("cat dog fish")
    assert len(target_ids) == 3
    cat, dog, fish = target_ids
    E = torch.zeros(tokenizer.n_vocab, 4)
    # +-e_i on eight tokens, cat and dog among them, surround the origin; every other row is zero
    E[[cat, dog, 10, 11, 12, 13, 14, 15]] = torch.cat([torch.eye(4), -torch.eye(4)])
    prompt = E[target_ids].clone()
    report = projection_report(prompt, target_ids, tokenizer, E, "dot")
    assert report["unreachable_target_tokens"] == [fish]
    assert report["f1_ceiling"] == pytest.approx(0.8)
    assert report["reachability_counts"] == {REACHABLE: 2, UNREACHABLE: 1}
    # under l2 the zero rows coincide: fish is not the lowest id among them, so also unreachable there
    l2 = projection_report(prompt, target_ids, tokenizer, E, "l2")
    assert l2["unreachable_target_tokens"] == [fish] and l2["f1_ceiling"] == pytest.approx(0.8)
    # a target whose every token is reachable has no ceiling below 1
    assert projection_report(E[[cat, dog]], [cat, dog], tokenizer, E, "dot")["f1_ceiling"] == 1.0


def test_a_point_inside_is_declared_inside_within_the_tolerance_of_its_own_norm():
    # Gilbert's iterates only approach a point strictly inside a triangle (here far from the
    # origin, all coordinates negative): it is inside once the gap is below 1e-5 of its squared norm
    E = torch.tensor([[-100.0, -100.0], [-100.0, -20.0], [-20.0, -100.0], [-70.0, -60.0]])
    assert reachability([0, 1, 2, 3], E, "dot") == [REACHABLE] * 3 + [UNREACHABLE]
