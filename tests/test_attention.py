"""The sdpa and triton attention backends against the naive one, forward and backward;
the Triton kernel on packed rows of different lengths against ``flash_attention.reference``,
each row on its own.

The Triton kernels run in the interpreter on CPU tensors: small shapes whose lengths are
not multiples of the block sizes (16 and 32 there), right-padded sequences and a
sequence that is all padding; and sweeps of query and prefix lengths around every multiple
of every block size, up to two, where each loop bound of each kernel changes.
"""
from itertools import accumulate

import pytest
import torch

from minway.kernels.attention import causal_attention, default_backend, varlen_attention
from minway.kernels.flash_attention import reference

B, H = 2, 3


def padding_mask(T):
    """Sequence 0 is right-padded (when T > 1), sequence 1 is all padding."""
    keep = torch.ones(B, T, dtype=torch.bool)
    keep[0, max(1, T - 3):] = False
    keep[1] = False
    return keep


def inputs(T, D, dtype, seed, transposed=False):
    """q, k, v and an output gradient; transposed ones come as (B, T, H, D) views, as in a model."""
    g = torch.Generator().manual_seed(seed)
    shape = (B, T, H, D) if transposed else (B, H, T, D)
    q, k, v, do = (torch.randn(shape, generator=g).to(dtype) for _ in range(4))
    if transposed:
        q, k, v, do = (x.transpose(1, 2) for x in (q, k, v, do))
    return q, k, v, do


def run(backend, q, k, v, do, keep, dtype=None):
    """Output and (dq, dk, dv) of one backend, on copies of the inputs cast to dtype."""
    q, k, v = (x.detach().to(dtype or x.dtype).requires_grad_() for x in (q, k, v))
    out = causal_attention(q, k, v, keep, backend=backend)
    grads = torch.autograd.grad(out, (q, k, v), do.to(out.dtype))
    return (out, *grads)


def max_errors(got, want):
    return [(g.double() - w.double()).abs().max().item() for g, w in zip(got, want)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("T,D", [(1, 16), (5, 32), (37, 64), pytest.param(70, 16, marks=pytest.mark.slow)])
def test_triton_matches_naive(T, D, dtype):
    q, k, v, do = inputs(T, D, dtype, seed=T + D, transposed=T == 37)
    keep = padding_mask(T)
    triton_results = run("triton", q, k, v, do, keep)
    exact = run("naive", q, k, v, do, keep, dtype=torch.float64)
    errors = max_errors(triton_results, exact)
    if dtype == torch.float32:
        assert max(errors) < 1e-5, errors
    else:
        # a few units of rounding of the largest value (the interpreter truncates when it
        # casts to bf16, where a GPU rounds to nearest, so bf16 needs the margin here)
        tolerances = [4 * torch.finfo(dtype).eps * w.abs().max().item() + 1e-4 for w in exact]
        assert all(e <= t for e, t in zip(errors, tolerances)), (errors, tolerances)

    out, dq, dk, dv = triton_results
    assert out.dtype == dtype and not any(torch.isnan(x).any() for x in triton_results)
    # the all-padding sequence: zero output, and nothing flows back through it
    for x in triton_results:
        assert torch.all(x[1] == 0)
    # padded keys get no gradient
    assert torch.all(dk[0, :, ~keep[0]] == 0) and torch.all(dv[0, :, ~keep[0]] == 0)


@pytest.mark.parametrize("T,D", [(37, 32), (20, 128)])
def test_triton_without_mask(T, D):
    q, k, v, do = inputs(T, D, torch.float32, seed=D)
    errors = max_errors(run("triton", q, k, v, do, None), run("naive", q, k, v, do, None, dtype=torch.float64))
    assert max(errors) < 1e-5, errors


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("T", [1, 5, 37])
def test_sdpa_matches_naive(T, masked):
    q, k, v, do = inputs(T, 32, torch.float32, seed=T)
    keep = padding_mask(T) if masked else None
    errors = max_errors(run("sdpa", q, k, v, do, keep), run("naive", q, k, v, do, keep, dtype=torch.float64))
    assert max(errors) < 1e-5, errors


def prefix_padding_mask(TK, TQ):
    """Sequence 0 has two padding keys at the end of its prefix (prompts of different lengths
    in one batch) and one at its end; sequence 1 has no key at all."""
    keep = torch.ones(B, TK, dtype=torch.bool)
    keep[0, max(0, TK - TQ - 2):TK - TQ] = False
    keep[0, -1] = False
    keep[1] = False
    return keep


def check_against_full_attention(backend, TQ, TK, masked, D=32):
    """Queries that follow TK - TQ cached keys attend exactly as the last TQ of TK queries do:
    checked against full naive attention, in which the prefix has queries too (zero gradient)."""
    q_all, k, v, do_all = inputs(TK, D, torch.float32, seed=TQ + TK)
    q, do = q_all[:, :, TK - TQ:], do_all[:, :, TK - TQ:]
    keep = prefix_padding_mask(TK, TQ) if masked else None
    out, dq, dk, dv = run(backend, q, k, v, do, keep)
    do_full = torch.cat([torch.zeros_like(do_all[:, :, :TK - TQ]), do], dim=2)
    full_out, full_dq, full_dk, full_dv = run("naive", q_all, k, v, do_full, keep, dtype=torch.float64)
    want = (full_out[:, :, TK - TQ:], full_dq[:, :, TK - TQ:], full_dk, full_dv)
    errors = max_errors((out, dq, dk, dv), want)
    assert max(errors) < 1e-5, errors
    if masked:
        assert torch.all(out[1] == 0) and torch.all(dk[1] == 0) and torch.all(dv[1] == 0)
        assert torch.all(dk[0, :, ~keep[0]] == 0) and torch.all(dv[0, :, ~keep[0]] == 0)


@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize("backend", ["triton", "sdpa", "naive"])
@pytest.mark.parametrize("TQ,TK", [(1, 17), (5, 40), (37, 50), (33, 49), (20, 20)])
def test_queries_after_a_cached_prefix_are_the_last_rows_of_full_attention(backend, TQ, TK, masked):
    check_against_full_attention(backend, TQ, TK, masked)


@pytest.mark.parametrize("D, dtype, arch", [(64, torch.float32, 90), (32, torch.float32, 80), (128, torch.bfloat16, 80),
                                            (16, torch.float16, 90)])
def test_triton_with_the_other_gpu_configurations(monkeypatch, D, dtype, arch):
    """The configurations a GPU gets for fp32 heads (small blocks for tf32x3) and for 16-bit heads other
    than 64, each kernel's own, in the interpreter on fp32 inputs: forward and both backward kernels."""
    from minway.kernels import flash_attention
    gpu_config = flash_attention._config(D, dtype, arch)
    assert set(gpu_config) == {"fwd", "dq", "dkdv"}
    assert all({"BLOCK_M", "BLOCK_N", "num_warps", "num_stages"} == set(c) for c in gpu_config.values())
    monkeypatch.setattr(flash_attention, "_config", lambda *args, **kwargs: gpu_config)
    check_against_full_attention("triton", 40, 75, masked=True, D=D)


def test_fewer_keys_than_queries_is_an_error():
    q, k = torch.zeros(1, 1, 5, 16), torch.zeros(1, 1, 4, 16)
    with pytest.raises(ValueError, match="5 queries need at least as many keys, got 4"):
        causal_attention(q, k, k)


def starts(lengths):
    """Where each row begins, and the end of the last: the offsets of packed rows."""
    return [0, *accumulate(lengths)]


def exact_rows(q, k, v, lengths, key_lengths, do):
    """Output and (dq, dk, dv) of ``reference`` on the packed rows, in fp64."""
    exact_inputs = [x.detach().double().requires_grad_() for x in (q, k, v)]
    exact = reference(*exact_inputs, starts(lengths), starts(key_lengths))
    return (exact, *torch.autograd.grad(exact, exact_inputs, do.double()))


def packed_rows(lengths, key_lengths, D, dtype, seed, heads=H, kv_heads=None):
    g = torch.Generator().manual_seed(seed)
    q, do = (torch.randn(sum(lengths), heads, D, generator=g).to(dtype) for _ in range(2))
    k, v = (torch.randn(sum(key_lengths), kv_heads or heads, D, generator=g).to(dtype) for _ in range(2))
    return q, k, v, do


def varlen_results(q, k, v, do, lengths, key_lengths, backend="triton"):
    q, k, v = (x.detach().requires_grad_() for x in (q, k, v))
    out = varlen_attention(q, k, v, lengths, key_lengths, backend=backend)
    return (out, *torch.autograd.grad(out, (q, k, v), do))


def check_varlen(lengths, key_lengths, D, dtype, seed=0, backend="triton", heads=H, kv_heads=None):
    """varlen_attention, output and gradients, against the reference: each row on its own."""
    q, k, v, do = packed_rows(lengths, key_lengths, D, dtype, seed, heads, kv_heads)
    got = varlen_results(q, k, v, do, lengths, key_lengths, backend)
    want = exact_rows(q, k, v, lengths, key_lengths, do)
    errors = max_errors(got, want)
    if dtype == torch.float32:
        tolerances = [1e-5] * 4
    else:  # a few units of rounding of the largest value, as in test_triton_matches_naive
        tolerances = [4 * torch.finfo(dtype).eps * w.abs().max().item() + 1e-4 for w in want]
    assert all(e <= t for e, t in zip(errors, tolerances)), (errors, tolerances)
    assert all(g.dtype == dtype and g.shape == w.shape for g, w in zip(got, want))


# rows of 1 to more than one query block (32 in the interpreter), some after a prefix of keys
VARLEN_QUERIES = [1, 2, 17, 33, 40, 5, 1]
VARLEN_KEYS = [1, 16, 17, 36, 71, 19, 30]


@pytest.mark.parametrize("dtype", [torch.float32, *(pytest.param(t, marks=pytest.mark.slow) for t in (torch.bfloat16, torch.float16))])
def test_triton_varlen_matches_each_row_alone(dtype):
    check_varlen(VARLEN_QUERIES, VARLEN_KEYS, 16, dtype)


def test_triton_varlen_never_uses_what_lies_past_the_keys():
    """The keys and values of the rows are followed in memory by NaN: a masked load that takes what
    lies there (instead of its zero) would turn the output or a gradient into NaN."""
    lengths, key_lengths = [3, 17, 20], [7, 17, 21]  # the last row ends inside a key block
    q, k, v, do = packed_rows(lengths, key_lengths, 16, torch.float32, seed=6)

    def before_nan(x):
        padded = torch.full((x.shape[0] + 64, *x.shape[1:]), float("nan"))
        padded[:x.shape[0]] = x
        return padded[:x.shape[0]]
    q, k, v, do = (before_nan(x) for x in (q, k, v, do))
    got = varlen_results(q, k, v, do, lengths, key_lengths)
    assert max(max_errors(got, exact_rows(q, k, v, lengths, key_lengths, do))) < 1e-5


def test_triton_varlen_backward_takes_a_gradient_that_is_not_contiguous():
    """The gradient of the output may come strided (the head dim not the fastest, or the heads the
    fastest): the kernel reads it as it reads a contiguous one."""
    lengths, key_lengths = [3, 9], [7, 9]
    q, k, v, do = packed_rows(lengths, key_lengths, 16, torch.float32, seed=5)
    strided = do.transpose(0, 2).contiguous().transpose(0, 2)
    heads_fastest = do.transpose(1, 2).contiguous().transpose(1, 2)  # strides (H * D, 1, H)
    assert strided.stride(-1) != 1 and heads_fastest.stride() == (H * 16, 1, H)
    assert torch.equal(strided, do) and torch.equal(heads_fastest, do)
    grads = []
    for gradient in (do, strided, heads_fastest):
        inputs = [x.clone().requires_grad_() for x in (q, k, v)]
        out = varlen_attention(*inputs, lengths, key_lengths, backend="triton")
        grads.append(torch.autograd.grad(out, inputs, gradient))
    for plain, *from_strided in zip(*grads):
        assert all(torch.equal(plain, other) for other in from_strided)


@pytest.mark.parametrize("backend", ["naive", "sdpa"])
def test_varlen_in_padded_buckets_matches_each_row_alone(backend):
    from minway.kernels.attention import _buckets
    assert _buckets(VARLEN_QUERIES) == [[0, 6], [1], [2], [3, 4], [5]]  # by queries: 1, 2, 17-32, 33-64, 5-8
    assert _buckets([3, 4, 8, 9, 16, 17]) == [[0, 1], [2], [3, 4], [5]]  # 3-4, 5-8, 9-16, 17-32
    check_varlen(VARLEN_QUERIES, VARLEN_KEYS, 16, torch.float32, backend=backend)


def test_triton_varlen_with_the_gpu_block_sizes(monkeypatch):
    """The block sizes a GPU gets for 16-bit heads of 64 (forward 128 x 32, dq 64 x 32, dkdv
    32 x 128), on fp32 inputs so that the comparison stays exact: rows across a query block."""
    from minway.kernels import flash_attention
    gpu_config = flash_attention._config(64, torch.bfloat16, 90)
    monkeypatch.setattr(flash_attention, "_config", lambda *args, **kwargs: gpu_config)
    check_varlen([130, 1, 64, 20], [144, 15, 64, 150], 64, torch.float32)


def sweep_failures(rows, D=16):
    """The (TQ, prefix, error) of each of ``rows`` (TQ, prefix), packed together and run once, whose
    output or gradients differ from the reference's by more than 1e-5 (fp32)."""
    lengths, key_lengths = [TQ for TQ, _ in rows], [TQ + prefix for TQ, prefix in rows]
    q, k, v, do = packed_rows(lengths, key_lengths, D, torch.float32, seed=len(rows), heads=1)
    got = varlen_results(q, k, v, do, lengths, key_lengths)
    want = exact_rows(q, k, v, lengths, key_lengths, do)
    failures = []
    for r, (TQ, prefix) in enumerate(rows):
        at_q, at_k = slice(*starts(lengths)[r:r + 2]), slice(*starts(key_lengths)[r:r + 2])
        error = max(max_errors([x[at] for x, at in zip(got, (at_q, at_q, at_k, at_k))],
                               [x[at] for x, at in zip(want, (at_q, at_q, at_k, at_k))]))
        if not error <= 1e-5:
            failures.append((TQ, prefix, error))
    return failures


def around_multiples(blocks, within, multiples):
    """The multiples of each block size up to ``multiples`` of it (0 included), and the lengths up to
    ``within`` on either side of each."""
    return sorted({m * b + d for b in blocks for m in range(multiples + 1) for d in range(-within, within + 1)
                   if m * b + d >= 0})


def swept_rows(config, multiples=2):
    """(TQ, prefix) rows that put every loop bound of the three kernels on and beside a block edge.

    A kernel's loops cover key blocks (forward, dq) or query blocks (dkdv) from the diagonal to the
    row's end: their bounds move with the number of queries against the query blocks (each
    kernel's BLOCK_M), and with the prefix against the blocks the diagonal crosses (BLOCK_N of
    forward and dq, BLOCK_M of dkdv). So: every query count on and beside a multiple of a query
    block, up to ``multiples`` of it (full blocks, one query more, one less), after no prefix and
    after one key past a diagonal block; and every prefix within 2 of a multiple of a diagonal
    block, up to ``multiples`` of it, after a full query block and a partial one.
    """
    query_blocks = {config[kernel]["BLOCK_M"] for kernel in ("fwd", "dq", "dkdv")}
    diagonal_blocks = {config["fwd"]["BLOCK_N"], config["dq"]["BLOCK_N"], config["dkdv"]["BLOCK_M"]}
    queries = [n for n in around_multiples(query_blocks, 1, multiples) if n > 0]
    prefixes = around_multiples(diagonal_blocks, 2, multiples)
    full = max(query_blocks)
    return sorted({(TQ, p) for TQ in queries for p in (0, min(diagonal_blocks) + 1)}
                  | {(TQ, p) for TQ in (full, full + 1) for p in prefixes})


def test_a_full_query_block_sees_its_last_key_block():
    """32 queries (one full block of the interpreter's forward and dq) after 17 keys (1 mod their
    key block of 16): the diagonal loop must reach key 48, alone in its block. Packed and padded."""
    assert sweep_failures([(32, 17)]) == []
    check_against_full_attention("triton", 32, 49, masked=False)


@pytest.mark.slow
def test_every_loop_bound_at_the_interpreter_block_sizes():
    """The swept rows, packed, each kernel launched once for all of them (forward 32 x 16, dq 32 x 16,
    dkdv 16 x 32): query counts 1 to 65, prefixes 0 to 34."""
    from minway.kernels import flash_attention
    rows = swept_rows(flash_attention._config(16, torch.float32, None))
    assert {TQ for TQ, _ in rows} == {1, 15, 16, 17, 31, 32, 33, 63, 64, 65}
    assert {p for _, p in rows} == {0, 1, 2, 14, 15, 16, 17, 18, 30, 31, 32, 33, 34}
    assert sweep_failures(rows) == []


@pytest.mark.slow
def test_every_loop_bound_at_gpu_block_sizes(monkeypatch):
    """The same at the block sizes a GPU gets for 16-bit heads of 64 (forward 128 x 32, dq 64 x 32,
    dkdv 32 x 128), to one multiple of each block: query counts 1 to 129, prefixes 0 to 34."""
    from minway.kernels import flash_attention
    gpu_config = flash_attention._config(64, torch.bfloat16, 90)
    monkeypatch.setattr(flash_attention, "_config", lambda *args, **kwargs: gpu_config)
    assert sweep_failures(swept_rows(gpu_config, multiples=1)) == []


def test_every_loop_bound_of_a_padded_batch():
    """The kernels' other entry, a padded (B, H, T, D) batch with a key mask (here the prefix's last
    key, or the first): one and two full query blocks and partial ones, after prefixes of 1, 14 and
    17 keys (1 and 14 mod the key block) and none."""
    failures = []
    for TQ, prefix in [(32, 1), (33, 14), (64, 17), (65, 0), (32, 17)]:
        g = torch.Generator().manual_seed(TQ + prefix)
        q, do = (torch.randn(1, 1, TQ, 16, generator=g) for _ in range(2))
        k, v = (torch.randn(1, 1, TQ + prefix, 16, generator=g) for _ in range(2))
        keep = torch.ones(1, TQ + prefix, dtype=torch.bool)
        keep[0, max(prefix - 1, 0)] = False
        error = max(max_errors(run("triton", q, k, v, do, keep), run("naive", q, k, v, do, keep, torch.float64)))
        if not error <= 1e-5:
            failures.append((TQ, prefix, error))
    assert failures == []


# (query heads, key/value heads): groups of 1 (plain multi-head attention), 2, 4 and 8; with two
# key/value heads where the group allows, so that a query head reading the wrong one shows
GROUPS = [(2, 2), (4, 2), pytest.param(8, 2, marks=pytest.mark.slow), pytest.param(8, 1, marks=pytest.mark.slow)]


@pytest.mark.parametrize("heads,kv_heads", GROUPS)
@pytest.mark.parametrize("backend", ["triton", "sdpa", "naive"])
def test_grouped_query_heads_match_the_reference(backend, heads, kv_heads):
    """Query head h reads key/value head h // (heads // kv_heads), and dk, dv sum the gradients of
    its group's query heads: against the reference, which repeats each key/value head for its group.
    Rows across a query block and a key block of every kernel, one after a prefix."""
    check_varlen([2, 33], [19, 49], 16, torch.float32, backend=backend, heads=heads, kv_heads=kv_heads)


@pytest.mark.parametrize("backend", ["triton", "sdpa"])
def test_grouped_query_heads_in_a_padded_batch(backend):
    """causal_attention on (B, H, T, D) queries and (B, H_kv, T, D) keys and values, with a padding
    mask: as the naive formula on the key/value heads repeated, in fp64."""
    g = torch.Generator().manual_seed(8)
    q, do = (torch.randn(B, 8, 20, 16, generator=g) for _ in range(2))
    k, v = (torch.randn(B, 2, 37, 16, generator=g) for _ in range(2))
    keep = prefix_padding_mask(37, 20)
    got = run(backend, q, k, v, do, keep)
    exact = run("naive", q, k.repeat_interleave(4, dim=1), v.repeat_interleave(4, dim=1), do, keep, dtype=torch.float64)
    want = (*exact[:2], *(x.view(B, 2, 4, 37, 16).sum(2) for x in exact[2:]))  # each group's gradients summed
    assert max(max_errors(got, want)) < 1e-5
    assert all(x.shape == y.shape for x, y in zip(got, (q, q, k, v)))


def test_sdpa_repeats_grouped_heads_before_torch_2_5(monkeypatch):
    """Where SDPA has no enable_gqa (torch before 2.5), the key/value heads are repeated for it."""
    from minway.kernels import attention
    repeated = []

    def each_query_head(k, v, H):
        repeated.append((k.shape[-3], H))
        return attention_each_query_head(k, v, H)
    attention_each_query_head = attention._each_query_head
    monkeypatch.setattr(attention, "SDPA_TAKES_GROUPS", False)
    monkeypatch.setattr(attention, "_each_query_head", each_query_head)
    check_varlen([2, 33], [19, 49], 16, torch.float32, backend="sdpa", heads=4, kv_heads=2)
    assert repeated and all(shapes == (2, 4) for shapes in repeated)


def test_grouped_query_heads_at_gpu_block_sizes(monkeypatch):
    """The block sizes a GPU gets for grouped 16-bit heads of 128 (forward 128 x 32, dq 64 x 32, dkdv 16 x 64)."""
    from minway.kernels import flash_attention
    gpu_config = flash_attention._config(128, torch.bfloat16, 90, grouped=True)
    assert gpu_config["dkdv"]["BLOCK_M"] == 16
    monkeypatch.setattr(flash_attention, "_config", lambda *args, **kwargs: gpu_config)
    check_varlen([130], [150], 128, torch.float32, heads=2, kv_heads=1)


@pytest.mark.parametrize("backend", ["naive", "sdpa", "triton"])
def test_key_heads_that_do_not_divide_the_query_heads_are_an_error(backend):
    q, _, _, _ = packed_rows([3], [5], 16, torch.float32, seed=4, heads=6)
    k, v = torch.zeros(5, 4, 16), torch.zeros(5, 4, 16)
    with pytest.raises(ValueError, match="6 query heads need keys and values of one head count that divides it"):
        varlen_attention(q, k, v, [3], [5], backend=backend)
    with pytest.raises(ValueError, match="6 query heads need keys and values of one head count that divides it"):
        causal_attention(q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None], backend=backend)


def test_flash_attention_varlen_refuses_key_heads_that_do_not_divide():
    from minway.kernels.flash_attention import flash_attention_varlen
    q, k, v = torch.zeros(3, 6, 16), torch.zeros(5, 4, 16), torch.zeros(5, 4, 16)
    with pytest.raises(ValueError, match=r"k, v \(Nk, H_kv, D\), H a multiple of H_kv, got \(3, 6, 16\)"):
        flash_attention_varlen(q, k, v, torch.tensor([0, 3]), torch.tensor([0, 5]))


def test_triton_varlen_pads_nothing(monkeypatch):
    """The Triton backend takes the packed rows as they are: the padding helper is never called."""
    from minway.kernels import attention

    def refuse(*args):
        raise AssertionError("padded")
    monkeypatch.setattr(attention, "_scatter", refuse)
    q, k, v, _ = packed_rows([3, 1], [5, 1], 16, torch.float32, seed=1)
    out = varlen_attention(q, k, v, [3, 1], [5, 1], backend="triton")
    torch.testing.assert_close(out.double(), reference(q, k, v, [0, 3, 4], [0, 5, 6]), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("backend", ["naive", "triton"])
def test_varlen_rows_with_fewer_keys_than_queries_are_an_error(backend):
    q, k, v, _ = packed_rows([3, 4], [5, 2], 16, torch.float32, seed=2)
    with pytest.raises(ValueError, match="at least as many keys as queries"):
        varlen_attention(q, k, v, [3, 4], [5, 2], backend=backend)


def test_triton_varlen_reads_the_longest_row_from_the_offsets():
    """Without max lengths from the caller the kernel reads them from the offsets, and checks them."""
    from minway.kernels.flash_attention import flash_attention_varlen
    q, k, v, _ = packed_rows([3, 1], [5, 1], 16, torch.float32, seed=3)
    out = flash_attention_varlen(q, k, v, torch.tensor([0, 3, 4]), torch.tensor([0, 5, 6]))
    torch.testing.assert_close(out.double(), reference(q, k, v, [0, 3, 4], [0, 5, 6]), atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="at least as many keys as queries"):
        flash_attention_varlen(q, k[:5], v[:5], torch.tensor([0, 3, 4]), torch.tensor([0, 5, 5]))


def test_default_backend_on_cpu_is_sdpa():
    assert default_backend(torch.device("cpu")) == "sdpa"


def test_unknown_backend_says_what_to_use():
    q = torch.zeros(1, 1, 4, 16)
    with pytest.raises(ValueError, match="unknown attention backend 'flash': use one of naive, sdpa, triton or auto"):
        causal_attention(q, q, q, backend="flash")


def test_triton_rejects_unsupported_head_dim():
    q = torch.zeros(1, 1, 4, 24)
    with pytest.raises(ValueError, match="head dims 16, 32, 64, 128 .* use backend='sdpa'"):
        causal_attention(q, q, q, backend="triton")
