"""minway.kernels.projection.nearest_tokens against the reference of the kernel's file
(``projection_triton.reference``: the whole float64 score matrix and a stable sort).

The Triton backend runs in the interpreter on CPU tensors, so shapes stay small but
awkward: V and d are not multiples of the block sizes, and M=1 splits the vocabulary
across programs, which exercises the merge of their candidates.
"""
from types import SimpleNamespace

import pytest
import torch

import minway.kernels.projection as projection
from minway.kernels.projection import nearest_tokens
from minway.kernels.projection_triton import reference, reference_scores

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
METRICS = ("dot", "l2", "cos")
BACKENDS = ("torch", "triton")


def expected(q, E, k, metric):
    """The reference's indices, scores and margins, and its whole score matrix."""
    return (*reference(q, E, k, metric), reference_scores(q, E, metric))


def grid(*shape, generator):
    """Multiples of 1/8 in [-1, 1]: exact in every dtype, so dot and l2 sums are exact in fp32
    whatever the order of summation, and ties are common."""
    return torch.randint(-8, 9, shape, generator=generator).float() / 8


@pytest.fixture
def small_chunks(monkeypatch):
    """Makes the torch backend walk the vocabulary in many chunks, the last one partial."""
    monkeypatch.setattr(projection, "CHUNK_ELEMENTS", 2048)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("M,k", [(1, 1), (37, 8)])
def test_exact_on_grid_data(M, k, metric, dtype, backend, small_chunks):
    g = torch.Generator().manual_seed(M * 31 + k)
    q, E = grid(M, 40, generator=g), grid(517, 40, generator=g).to(dtype)
    got = nearest_tokens(q, E, k=k, metric=metric, backend=backend)
    ref_i, ref_s, ref_margin, rank = expected(q, E, k, metric)

    assert got.indices.dtype == torch.int64 and got.indices.shape == (M, k)
    assert got.scores.dtype == torch.float32 and got.margin.shape == (M,)
    torch.testing.assert_close(got.scores.double(), ref_s, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(got.margin.double(), ref_margin, atol=1e-5, rtol=1e-6)
    if metric == "cos":
        # cosines are rounded; rows may swap only where their true cosines are that close
        torch.testing.assert_close(rank.gather(1, got.indices), rank.gather(1, ref_i), atol=1e-6, rtol=0)
    else:
        assert torch.equal(got.indices, ref_i)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("M,d,k", [(1, 24, 8), pytest.param(300, 64, 1, marks=pytest.mark.slow)])
def test_backends_agree_on_random_data(M, d, k, metric, dtype):
    g = torch.Generator().manual_seed(M + d)
    q, E = torch.randn(M, d, generator=g), torch.randn(600, d, generator=g).to(dtype)
    by_torch = nearest_tokens(q, E, k=k, metric=metric, backend="torch")
    by_triton = nearest_tokens(q, E, k=k, metric=metric, backend="triton")
    assert torch.equal(by_triton.indices, by_torch.indices)
    torch.testing.assert_close(by_triton.scores, by_torch.scores, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(by_triton.margin, by_torch.margin, atol=1e-4, rtol=1e-5)

    ref_i, ref_s, ref_margin, rank = expected(q, E, k, metric)
    torch.testing.assert_close(rank.gather(1, by_triton.indices), rank.gather(1, ref_i), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(by_triton.scores.double(), ref_s, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(by_triton.margin.double(), ref_margin, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("metric", METRICS)
def test_duplicate_rows_go_to_the_lowest_index(metric, backend, small_chunks):
    g = torch.Generator().manual_seed(0)
    E = grid(700, 32, generator=g)
    E[5:15] *= 4  # long rows, so that each is its own best match under every metric
    E[400:410] = E[5:15]
    got = nearest_tokens(E[5:15].clone(), E.bfloat16(), k=2, metric=metric, backend=backend)
    rows = torch.arange(5, 15)
    assert torch.equal(got.indices, torch.stack([rows, rows + 395], dim=1))
    assert torch.equal(got.scores[:, 0], got.scores[:, 1])
    assert torch.all(got.margin == 0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("metric", ["dot", "l2"])
@pytest.mark.parametrize("V", [60, 517])
def test_many_ties_at_the_kth_score_go_to_the_lowest_indices(V, metric, backend, small_chunks):
    """Entries in {-1, 0, 1} and d = 4: a few dozen distinct rows, so many rows tie at each score,
    often more at the k-th best than top-k can return. V = 60 lies in one chunk of the torch
    path and one tile of the kernel's; V = 517 spans many of both (and several vocabulary
    slices of the kernel)."""
    g = torch.Generator().manual_seed(V)
    q = torch.randint(-1, 2, (40, 4), generator=g).float()
    E = torch.randint(-1, 2, (V, 4), generator=g).float()
    for k in (1, 3, 8):
        got = nearest_tokens(q, E, k=k, metric=metric, backend=backend)
        ref_i, ref_s, ref_margin, _ = expected(q, E, k, metric)
        assert torch.equal(got.indices, ref_i), k
        assert torch.equal(got.scores.double(), ref_s) and torch.equal(got.margin.double(), ref_margin)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_equal_rows_score_equal_wherever_they_fall(dtype, metric):
    """Copies of a few rows at every position of a tile, in other tiles and in other vocabulary
    slices of the kernel, among random rows whose scores are rounded: each copy must score
    exactly as its original, so that the lowest index wins."""
    g = torch.Generator().manual_seed(7)
    E = torch.randn(517, 40, generator=g).to(dtype)
    originals = torch.tensor([3, 65, 130])
    copies = torch.arange(1, 517, 9)  # every residue modulo the tile of 64
    E[copies] = E[originals].repeat(len(copies) // 3 + 1, 1)[:len(copies)]
    q = torch.randn(24, 40, generator=g)
    q[:3] = 4 * E[originals].float()  # a copy is then the best match
    for backend in BACKENDS:
        got = nearest_tokens(q, E, k=8, metric=metric, backend=backend)
        for row, original in enumerate(originals.tolist()):
            same = [original] + [c for i, c in enumerate(copies.tolist()) if i % 3 == row]
            expected = sorted(same)[:8]
            assert got.indices[row].tolist() == expected, (backend, row)
            assert torch.all(got.scores[row] == got.scores[row, 0]), (backend, row)


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_vectors_have_cosine_zero(backend):
    g = torch.Generator().manual_seed(1)
    q, E = torch.randn(3, 24, generator=g), torch.randn(300, 24, generator=g)
    q[1] = 0
    E[7] = 0
    got = nearest_tokens(q, E, k=4, metric="cos", backend=backend)
    assert torch.equal(got.indices[1], torch.arange(4))
    assert torch.all(got.scores[1] == 0) and got.margin[1] == 0
    assert not torch.isnan(got.scores).any()
    assert 7 not in got.indices[[0, 2]]


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_embeddings_in_any_layout_give_the_same_neighbours(backend, metric):
    """A transposed matrix (columns contiguous) and every other column of a wider one, as a caller may pass."""
    g = torch.Generator().manual_seed(3)
    q, E = torch.randn(4, 24, generator=g), torch.randn(150, 24, generator=g)
    wide = torch.randn(150, 48, generator=g)
    wide[:, ::2] = E
    expected = nearest_tokens(q, E, k=3, metric=metric, backend=backend)
    for layout in (E.t().contiguous().t(), wide[:, ::2]):
        assert layout.stride(1) != 1 and torch.equal(layout, E)
        got = nearest_tokens(q, layout, k=3, metric=metric, backend=backend)
        assert torch.equal(got.indices, expected.indices) and torch.equal(got.scores, expected.scores)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_cosine_is_the_same_at_any_norm(backend):
    """Embeddings scaled to norms far below and above 1 give the cosines of the unscaled ones."""
    g = torch.Generator().manual_seed(2)
    q, E = torch.randn(5, 24, generator=g), torch.randn(300, 24, generator=g)
    unscaled = nearest_tokens(q, E, k=4, metric="cos", backend=backend)
    for scale in (1e-2, 1e3):
        got = nearest_tokens(q, E * scale, k=4, metric="cos", backend=backend)
        assert torch.equal(got.indices, unscaled.indices), scale
        torch.testing.assert_close(got.scores, unscaled.scores, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_minus_zero_ties_with_zero(backend):
    """0 x -1 is -0.0, which equals +0.0: the tie goes to the lowest index, whatever the zero's sign."""
    E = torch.tensor([[-1.0], [1.0], [-1.0]])
    got = nearest_tokens(torch.zeros(2, 1), E, k=3, metric="dot", backend=backend)
    assert torch.equal(got.indices, torch.tensor([[0, 1, 2]] * 2))


def test_the_triton_kernel_takes_more_queries_than_one_block_holds():
    """Queries past a block's rows (64 in the interpreter, 128 on a GPU) go to more programs."""
    g = torch.Generator().manual_seed(3)
    q, E = grid(200, 16, generator=g), grid(90, 16, generator=g)
    indices, scores, margin = reference(q, E, 2, "dot")
    got = nearest_tokens(q, E, k=2, metric="dot", backend="triton")
    assert torch.equal(got.indices, indices) and torch.equal(got.scores.double(), scores)


@pytest.mark.parametrize("arch", [80, 90])
def test_every_query_count_gets_a_gpu_configuration_that_was_compiled(arch):
    """On a GPU the block of queries is one of the sizes minway.kernels.gpu_compile checks (16 to 128), and holds
    up to 128 queries in one block, for one query or a million."""
    from minway.kernels.projection_triton import _BLOCKS, _config

    for M in [*range(1, 300), 1000, 1024, 1025, 8192, 10 ** 6]:
        for dtype in DTYPES:
            blocks, options = _config(M, dtype, arch)
            assert blocks["BLOCK_M"] in _BLOCKS["bf16"] and blocks["BLOCK_M"] >= min(M, 128), M
            block_v, block_d, stages = _BLOCKS["bf16" if dtype == torch.bfloat16 else "tf32x3"][blocks["BLOCK_M"]]
            assert blocks == dict(BLOCK_M=blocks["BLOCK_M"], BLOCK_V=block_v, BLOCK_D=block_d), M
            assert options == dict(num_warps=8, num_stages=stages)


@pytest.mark.parametrize("kwargs,message", [
    (dict(queries=torch.zeros(2, 3, 4)), "queries must be a non-empty (M, d) tensor"),
    (dict(queries=torch.zeros(0, 4)), "queries must be a non-empty (M, d) tensor"),
    (dict(queries=torch.zeros(2, 4, dtype=torch.long)), "queries must be floating point"),
    (dict(embeddings=torch.zeros(10)), "embeddings must be a (V, d) tensor"),
    (dict(embeddings=torch.zeros(10, 4, dtype=torch.float64)), "embeddings must be float32, bfloat16"),
    (dict(embeddings=torch.zeros(10, 5)), "queries have d=4 but embeddings have d=5"),
    (dict(k=0), "k must be an int from 1 to 8"),
    (dict(k=9), "k must be an int from 1 to 8"),
    (dict(k=3, embeddings=torch.zeros(2, 4)), "fewer than max(k, 2) = 3"),
    (dict(k=1, embeddings=torch.zeros(1, 4)), "fewer than max(k, 2) = 2"),  # no runner-up for the margin
    (dict(metric="euclid"), "unknown metric 'euclid': use one of dot, l2, cos"),
    (dict(backend="cuda"), "unknown backend 'cuda': use one of auto, triton, torch"),
])
def test_bad_input_says_what_to_do(kwargs, message):
    args = dict(queries=torch.zeros(2, 4), embeddings=torch.zeros(10, 4), k=1, metric="dot", backend="torch")
    with pytest.raises(ValueError) as error:
        nearest_tokens(**{**args, **kwargs})
    assert message in str(error.value) and "\n" not in str(error.value)


def test_auto_picks_the_kernel_for_cuda_tensors_until_it_has_failed(monkeypatch):
    """Stand-ins for a CUDA tensor and for an installed triton: the choice itself, which a CPU never makes."""
    cuda, cpu = SimpleNamespace(is_cuda=True), SimpleNamespace(is_cuda=False)
    monkeypatch.setattr(projection, "_TRITON_FAILURES", [])
    monkeypatch.setattr(projection.importlib.util, "find_spec", lambda name: object() if name == "triton" else None)
    assert (projection._auto_backend(cuda), projection._auto_backend(cpu)) == ("triton", "torch")
    projection._TRITON_FAILURES.append(RuntimeError("no kernel for this device"))
    assert projection._auto_backend(cuda) == "torch"
    projection._TRITON_FAILURES.clear()
    monkeypatch.setattr(projection.importlib.util, "find_spec", lambda name: None)
    assert projection._auto_backend(cuda) == "torch"


def test_a_gpu_launch_aims_for_four_programs_per_sm(monkeypatch):
    import minway.kernels.projection_triton as projection_triton
    monkeypatch.setattr(projection_triton, "gpu_arch", lambda device: 90)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(multi_processor_count=132))
    assert projection_triton.target(torch.device("cuda", 0)) == (90, 528)
    assert projection_triton.target(torch.device("cpu")) == (None, 3)


def test_auto_falls_back_to_torch_when_the_kernel_fails(monkeypatch):
    """A kernel that fails to build on some GPU must not end a run: auto warns and uses torch
    from then on; asking for triton by name still raises."""
    import minway.kernels.projection_triton as projection_triton

    def broken(*args):
        raise RuntimeError("no kernel for this device")
    monkeypatch.setattr(projection_triton, "candidates", broken)
    monkeypatch.setattr(projection, "_auto_backend", lambda q: "torch" if projection._TRITON_FAILURES else "triton")
    monkeypatch.setattr(projection, "_TRITON_FAILURES", [])
    g = torch.Generator().manual_seed(0)
    q, E = torch.randn(3, 16, generator=g), torch.randn(50, 16, generator=g)
    expected = nearest_tokens(q, E, k=2, backend="torch")
    with pytest.warns(UserWarning, match="Triton projection kernel failed .*no kernel for this device"):
        got = nearest_tokens(q, E, k=2)
    assert torch.equal(got.indices, expected.indices) and len(projection._TRITON_FAILURES) == 1
    assert torch.equal(nearest_tokens(q, E, k=2).indices, expected.indices)  # no second warning, no retry
    with pytest.raises(RuntimeError, match="no kernel"):
        nearest_tokens(q, E, k=2, backend="triton")
