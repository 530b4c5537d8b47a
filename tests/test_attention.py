"""The sdpa and triton attention backends against the naive one, forward and backward;
the Triton kernel on packed rows of different lengths against each row on its own.

The Triton kernels run in the interpreter on CPU tensors: small shapes whose lengths are
not multiples of the block sizes (16 and 32 there), right-padded sequences and a
sequence that is all padding.
"""
import pytest
import torch

from minway.kernels.attention import causal_attention, default_backend, varlen_attention

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
@pytest.mark.parametrize("T,D", [(1, 16), (5, 32), (37, 64), (70, 16)])
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


@pytest.mark.parametrize("TQ,TK", [(130, 200), (1, 129), (150, 150), (40, 300)])
def test_triton_with_the_gpu_block_sizes(monkeypatch, TQ, TK):
    """The interpreter with the block sizes a GPU gets for 16-bit heads of 64 (forward 128 x 32,
    dq 64 x 32, dkdv 32 x 128), on fp32 inputs so that the comparison stays exact."""
    from minway.kernels import flash_attention
    gpu_config = flash_attention._config(64, torch.bfloat16, 90)
    monkeypatch.setattr(flash_attention, "_config", lambda D, dtype, arch: gpu_config)
    check_against_full_attention("triton", TQ, TK, masked=True, D=64)


@pytest.mark.parametrize("D, dtype, arch", [(64, torch.float32, 90), (32, torch.float32, 80), (128, torch.bfloat16, 80),
                                            (16, torch.float16, 90)])
def test_triton_with_the_other_gpu_configurations(monkeypatch, D, dtype, arch):
    """The configurations a GPU gets for fp32 heads (small blocks for tf32x3) and for 16-bit heads other
    than 64, each kernel's own, in the interpreter on fp32 inputs: forward and both backward kernels."""
    from minway.kernels import flash_attention
    gpu_config = flash_attention._config(D, dtype, arch)
    assert set(gpu_config) == {"fwd", "dq", "dkdv"}
    assert all({"BLOCK_M", "BLOCK_N", "num_warps", "num_stages"} == set(c) for c in gpu_config.values())
    monkeypatch.setattr(flash_attention, "_config", lambda D, dtype, arch: gpu_config)
    check_against_full_attention("triton", 40, 75, masked=True, D=D)


def prefix_sweep_failures(TQs, prefixes, D):
    """(TQ, prefix, error) of every case where queries after ``prefix`` cached keys differ from
    the last TQ rows of full attention (naive, fp64), one sequence, no padding."""
    failures = []
    for TQ in TQs:
        for prefix in prefixes:
            TK = TQ + prefix
            g = torch.Generator().manual_seed(TK)
            q_all, k, v, do_all = (torch.randn(1, 1, TK, D, generator=g) for _ in range(4))
            q, do = q_all[:, :, prefix:], do_all[:, :, prefix:]
            do_full = torch.cat([torch.zeros_like(do_all[:, :, :prefix]), do], dim=2)
            full_out, full_dq, full_dk, full_dv = run("naive", q_all, k, v, do_full, None, dtype=torch.float64)
            want = (full_out[:, :, prefix:], full_dq[:, :, prefix:], full_dk, full_dv)
            error = max(max_errors(run("triton", q, k, v, do, None), want))
            if error > 1e-5:
                failures.append((TQ, prefix, error))
    return failures


def diagonal_period(config):
    """The forward and dq kernels mask the key blocks (of BLOCK_N) that straddle the diagonal,
    dkdv the query blocks (of its BLOCK_M): which blocks those are repeats with this period of
    the prefix length."""
    return max(config["fwd"]["BLOCK_N"], config["dq"]["BLOCK_N"], config["dkdv"]["BLOCK_M"])


def test_every_prefix_length_across_a_block():
    """Every prefix length from 0 to one period + 1, at the interpreter's block sizes."""
    from minway.kernels import flash_attention
    period = diagonal_period(flash_attention._config(16, torch.float32, None))
    assert prefix_sweep_failures((1, 5, 20), range(period + 2), D=16) == []


def test_every_prefix_length_across_a_block_at_gpu_block_sizes(monkeypatch):
    """The same sweep with the block sizes a GPU gets for GPT-2's heads (64) in bf16."""
    from minway.kernels import flash_attention
    gpu_config = flash_attention._config(64, torch.bfloat16, 90)
    monkeypatch.setattr(flash_attention, "_config", lambda D, dtype, arch: gpu_config)
    assert prefix_sweep_failures((1, 20), range(diagonal_period(gpu_config) + 2), D=64) == []


def test_fewer_keys_than_queries_is_an_error():
    q, k = torch.zeros(1, 1, 5, 16), torch.zeros(1, 1, 4, 16)
    with pytest.raises(ValueError, match="5 queries need at least as many keys, got 4"):
        causal_attention(q, k, k)


def naive_rows(q, k, v, lengths, key_lengths):
    """Packed rows one at a time, in fp64: the i-th of a row's n queries sees the first
    m - n + i + 1 of its m keys."""
    out = []
    for qr, kr, vr in zip(q.double().split(lengths), k.double().split(key_lengths), v.double().split(key_lengths)):
        n, m = len(qr), len(kr)
        scores = torch.einsum("qhd,khd->hqk", qr, kr) / qr.shape[-1] ** 0.5
        allowed = torch.ones(n, m, dtype=torch.bool).tril(m - n)
        weights = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
        out.append(torch.einsum("hqk,khd->qhd", weights, vr))
    return torch.cat(out)


def packed_rows(lengths, key_lengths, D, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    q, do = (torch.randn(sum(lengths), H, D, generator=g).to(dtype) for _ in range(2))
    k, v = (torch.randn(sum(key_lengths), H, D, generator=g).to(dtype) for _ in range(2))
    return q, k, v, do


def check_varlen(lengths, key_lengths, D, dtype, seed=0, backend="triton"):
    """varlen_attention, output and gradients, against each row on its own."""
    q, k, v, do = packed_rows(lengths, key_lengths, D, dtype, seed)
    q, k, v = (x.requires_grad_() for x in (q, k, v))
    out = varlen_attention(q, k, v, lengths, key_lengths, backend=backend)
    got = (out, *torch.autograd.grad(out, (q, k, v), do))
    exact_inputs = [x.detach().double().requires_grad_() for x in (q, k, v)]
    exact = naive_rows(*exact_inputs, lengths, key_lengths)
    want = (exact, *torch.autograd.grad(exact, exact_inputs, do.double()))
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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
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
    q, k, v = (x.requires_grad_() for x in (q, k, v))
    out = varlen_attention(q, k, v, lengths, key_lengths, backend="triton")
    got = (out, *torch.autograd.grad(out, (q, k, v), do))
    exact_inputs = [x.detach().double().requires_grad_() for x in (q, k, v)]
    exact = naive_rows(*exact_inputs, lengths, key_lengths)
    want = (exact, *torch.autograd.grad(exact, exact_inputs, do.double()))
    assert max(max_errors(got, want)) < 1e-5


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
    monkeypatch.setattr(flash_attention, "_config", lambda D, dtype, arch: gpu_config)
    check_varlen([130, 1, 64, 20], [144, 15, 64, 150], 64, torch.float32)


def test_triton_varlen_pads_nothing(monkeypatch):
    """The Triton backend takes the packed rows as they are: the padding helper is never called."""
    from minway.kernels import attention

    def refuse(*args):
        raise AssertionError("padded")
    monkeypatch.setattr(attention, "_scatter", refuse)
    q, k, v, _ = packed_rows([3, 1], [5, 1], 16, torch.float32, seed=1)
    out = varlen_attention(q, k, v, [3, 1], [5, 1], backend="triton")
    torch.testing.assert_close(out.double(), naive_rows(q, k, v, [3, 1], [5, 1]), atol=1e-6, rtol=1e-6)


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
    torch.testing.assert_close(out.double(), naive_rows(q, k, v, [3, 1], [5, 1]), atol=1e-6, rtol=1e-6)
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
