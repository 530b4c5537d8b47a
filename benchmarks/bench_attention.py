"""Causal attention, forward and forward+backward: minway's Triton kernel against PyTorch (issue 4).

    python benchmarks/bench_attention.py [--quick] [--device cuda|cpu] [--prefix N]

Backends of ``minway.kernels.attention.causal_attention``: ``triton`` (minway's flash attention),
``sdpa`` (torch.nn.functional.scaled_dot_product_attention, the baseline) and ``naive``
(the T x T formula). GPT-2 large heads (20 heads of 64), batch 8, T from 64 to 1024, in
bf16, fp16 and fp32, without and with a right-padding key mask (row b keeps its first
``lengths[b]`` keys). Each output and input gradient is compared with the naive formula
computed in fp64 (on two rows of the batch); the table gives the largest absolute difference.

``--prefix N``: the T queries follow N cached keys and values, as in training, where the
prompt is run once and every row's text attends to its keys (``minway.packing``).

``--packed``: a batch as the model runs it, a prompt row of N keys and text rows of
different lengths after it, packed end to end: the Triton kernel on the packed rows against
``varlen_attention``'s SDPA path, which pads them into a batch. The text rows are between a
quarter and all of T long, one of them T: about 62% of the padded batch is real tokens, as
in a batch of 8 SST-2 training rows.

On a CPU the Triton kernel runs only in the interpreter (TRITON_INTERPRET=1), far too slowly
to time: there sdpa is measured against naive alone.
"""
import argparse
from itertools import accumulate

import torch

from common import bench, print_table, save
from minway.kernels.attention import causal_attention, varlen_attention

B, H, D = 8, 20, 64
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}
PASSES = ("fwd", "fwd+bwd")


def inputs(T, dtype, device, padded, prefix=0, seed=0, B=B, H=H):
    """q (B, H, T, D), k and v (B, H, prefix + T, D), an output gradient and the key mask."""
    g = torch.Generator(device).manual_seed(seed)
    q, k, v = (torch.randn(B, H, n, D, generator=g, device=device).to(dtype).requires_grad_()
               for n in (T, prefix + T, prefix + T))
    grad = torch.randn(B, H, T, D, generator=g, device=device).to(dtype)
    mask = None
    if padded:  # one full row, the others between half and all of T
        lengths = torch.randint(T // 2, T + 1, (B,), generator=g, device=device)
        lengths[0] = T
        mask = torch.arange(prefix + T, device=device)[None, :] < prefix + lengths[:, None]
    return (q, k, v), grad, mask


def run(backend, qkv, grad, mask, backward):
    out = causal_attention(*qkv, key_padding_mask=mask, backend=backend)
    if not backward:
        return (out,)
    return (out, *torch.autograd.grad(out, qkv, grad))


def max_errors(backends, qkv, grad, mask, rows=2):
    """{backend: largest |difference| to the fp64 naive formula}, over the output and q, k, v gradients.

    Checked on the first ``rows`` rows of the batch (the full one and a padded one) to spare memory."""
    qkv = tuple(x.detach()[:rows].requires_grad_() for x in qkv)
    grad, mask = grad[:rows], None if mask is None else mask[:rows]
    exact = run("naive", tuple(x.detach().double().requires_grad_() for x in qkv), grad.double(), mask, True)
    errors = {}
    for backend in backends:
        got = run(backend, qkv, grad, mask, backward=True)
        errors[backend] = max(float((a.double() - b).abs().max()) for a, b in zip(got, exact))
    return errors


def ratio_pairs(backends):
    pairs = [("triton", "sdpa"), ("triton", "naive")] if "triton" in backends else [("sdpa", "naive")]
    return [(fast, slow) for fast, slow in pairs if fast in backends and slow in backends]


def ratios(seconds):
    """{"fast/slow": how many times faster fast is than slow}."""
    return {f"{fast}/{slow}": seconds[slow] / seconds[fast] for fast, slow in ratio_pairs(seconds)}


def timed_backends(device):
    if device.type != "cuda":
        print("CPU: the Triton kernel only runs in the interpreter, far too slow to time; sdpa against naive only")
        return ["sdpa", "naive"]
    try:
        import minway.kernels.flash_attention  # noqa: F401
    except ImportError as e:
        print(f"no Triton ({e}): sdpa against naive only")
        return ["sdpa", "naive"]
    return ["triton", "sdpa", "naive"]


def measure(T, dtype, padded, prefix, backends, device, repeats, warmup, B=B, H=H):
    """Records of the forward and forward+backward passes at one shape: each backend's median
    time, the speed-ups and each backend's largest difference to the fp64 formula."""
    qkv, grad, mask = inputs(T, dtype, device, padded, prefix, B=B, H=H)
    errors = max_errors(backends, qkv, grad, mask)
    records = []
    for name in PASSES:
        backward = name == "fwd+bwd"
        seconds = {b: bench(lambda: run(b, qkv, grad, mask, backward), device, repeats, warmup) for b in backends}
        records.append({"dtype": DTYPE_NAMES[dtype], "padded": padded, "T": T, "prefix": prefix, "pass": name,
                        "seconds": seconds, "speedup": ratios(seconds), "max_abs_error": errors})
    return records


def packed_rows(T, prefix, dtype, device, seed=0, B=B, H=H, H_kv=None, D=D):
    """A prompt row of ``prefix`` tokens and B text rows of T // 4 to T tokens after it, packed:
    (q, k, v), an output gradient, the rows' queries and keys. ``H_kv``: key/value heads, each
    shared by H // H_kv query heads (default H)."""
    g = torch.Generator(device).manual_seed(seed)
    text = torch.randint(max(1, T // 4), T + 1, (B,), generator=g, device=device).tolist()
    text[0] = T
    lengths, key_lengths = [prefix] * (prefix > 0) + text, [prefix] * (prefix > 0) + [prefix + n for n in text]
    q, k, v = (torch.randn(sum(n), heads, D, generator=g, device=device).to(dtype).requires_grad_()
               for n, heads in ((lengths, H), (key_lengths, H_kv or H), (key_lengths, H_kv or H)))
    grad = torch.randn(sum(lengths), H, D, generator=g, device=device).to(dtype)
    return (q, k, v), grad, lengths, key_lengths


def run_packed(backend, qkv, grad, lengths, key_lengths, backward):
    out = varlen_attention(*qkv, lengths, key_lengths, backend)
    if not backward:
        return (out,)
    return (out, *torch.autograd.grad(out, qkv, grad))


def each_row(backend, qkv, grad, lengths, key_lengths):
    """Output and gradients of ``causal_attention`` run on one row at a time, packed again."""
    q, k, v = (x.detach().requires_grad_() for x in qkv)
    out = torch.cat([causal_attention(*(x.transpose(0, 1)[None] for x in row), backend=backend)[0].transpose(0, 1)
                     for row in zip(q.split(lengths), k.split(key_lengths), v.split(key_lengths))])
    return (out, *torch.autograd.grad(out, (q, k, v), grad))


def packed_errors(qkv, grad, lengths, key_lengths):
    """Largest |difference| to the kernel's reference (``flash_attention.reference``: each row alone,
    in fp64), over the output and gradients: the Triton kernel on the packed rows, and SDPA on each
    row alone."""
    from minway.kernels.flash_attention import reference

    exact_inputs = tuple(x.detach().double().requires_grad_() for x in qkv)
    starts = [[0, *accumulate(n)] for n in (lengths, key_lengths)]
    exact_out = reference(*exact_inputs, *starts)
    exact = (exact_out, *torch.autograd.grad(exact_out, exact_inputs, grad.double()))
    got = {"triton": run_packed("triton", tuple(x.detach().requires_grad_() for x in qkv), grad, lengths,
                                key_lengths, backward=True),
           "sdpa": each_row("sdpa", qkv, grad, lengths, key_lengths)}
    return {name: max(float((a.double() - b).abs().max()) for a, b in zip(results, exact))
            for name, results in got.items()}


def measure_packed(T, dtype, prefix, device, repeats, warmup, B=B, H=H):
    """Record of the forward+backward pass of packed rows: Triton on them as they are against
    SDPA on them padded (``varlen_attention``), time and real tokens."""
    qkv, grad, lengths, key_lengths = packed_rows(T, prefix, dtype, device, B=B, H=H)
    seconds = {b: bench(lambda: run_packed(b, qkv, grad, lengths, key_lengths, True), device, repeats, warmup)
               for b in ("triton", "sdpa")}
    return {"dtype": DTYPE_NAMES[dtype], "T": T, "prefix": prefix, "pass": "fwd+bwd", "lengths": lengths,
            "key_lengths": key_lengths, "real_share": sum(lengths) / (len(lengths) * max(lengths)),
            "seconds": seconds, "speedup": ratios(seconds)}


def table_row(r):
    backends = list(r["seconds"])
    return [r["dtype"], "right-pad" if r["padded"] else "none", r["T"], r["pass"],
            *(f"{1e3 * r['seconds'][b]:.3f}" for b in backends), *(f"{s:.2f}x" for s in r["speedup"].values()),
            *(f"{r['max_abs_error'][b]:.1e}" for b in backends)]


def header(backends):
    return (["dtype", "mask", "T", "pass", *(f"{b} ms" for b in backends)]
            + [f"{fast}/{slow}" for fast, slow in ratio_pairs(backends)] + [f"{b} err" for b in backends])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="T in 64 and 256 only, fewer repeats")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--prefix", type=int, default=0, help="cached keys before the T queries (14: a prompt)")
    p.add_argument("--packed", action="store_true", help="packed rows of different lengths, Triton against "
                                                         "SDPA on them padded (needs a GPU)")
    args = p.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    Ts = [64, 256] if args.quick else [64, 128, 256, 512, 1024]
    repeats, warmup = (20, 5) if gpu else (3, 1)
    if args.quick:
        repeats, warmup = (5, 2) if gpu else (1, 1)
    backends = timed_backends(device)
    if args.packed:
        return main_packed(args, Ts, repeats, warmup, device, backends)
    print(f"{device}: batch {B}, {H} heads of {D}, {args.prefix} cached keys before the queries; "
          f"median of {repeats} after {warmup} warm-up calls")

    rows, records = [], []
    for dtype in DTYPES.values():
        for padded in (False, True):
            for T in Ts:
                for record in measure(T, dtype, padded, args.prefix, backends, device, repeats, warmup):
                    records.append(record)
                    rows.append(table_row(record))
                    print(*rows[-1], flush=True)
    print()
    print_table(header(backends), rows)
    if "triton" in backends:
        print("targets, fwd+bwd: triton/sdpa >= 1.0x for T <= 256, >= 0.8x at T = 1024")
    save("attention" + (f"-prefix{args.prefix}" if args.prefix else ""), device,
         {"quick": args.quick, "B": B, "H": H, "D": D, "prefix": args.prefix, "repeats": repeats,
                               "warmup": warmup, "backends": backends, "rows": records})


def main_packed(args, Ts, repeats, warmup, device, backends):
    if "triton" not in backends:
        raise SystemExit("error: --packed times the Triton kernel, which needs a GPU")
    records = []
    for dtype in (torch.bfloat16, torch.float16):
        for T in Ts:
            r = measure_packed(T, dtype, args.prefix, device, repeats, warmup)
            records.append(r)
            print(f"{r['dtype']} T={T} after {args.prefix} keys ({100 * r['real_share']:.0f}% real when padded): "
                  f"triton packed {1e3 * r['seconds']['triton']:.3f} ms, sdpa padded "
                  f"{1e3 * r['seconds']['sdpa']:.3f} ms, {r['speedup']['triton/sdpa']:.2f}x", flush=True)
    save(f"attention-packed-prefix{args.prefix}", device, {"B": B, "H": H, "D": D, "prefix": args.prefix,
                                                          "repeats": repeats, "warmup": warmup, "rows": records})


if __name__ == "__main__":
    main()
