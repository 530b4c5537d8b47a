"""nearest_tokens against the full score matrix in torch, and against its roofline.

    python benchmarks/bench_projection.py [--quick] [--device cuda|cpu] [--vocab gpt2|large]

Baseline: the arithmetic of the kernel's reference (``minway.kernels.projection_triton.reference``)
as one writes it in torch, ``(Q @ E.T).argmax(1)`` for k=1 and ``.topk(k)`` for k=8, in fp32
like nearest_tokens (a bf16 E is upcast inside the timed call: torch has no fp32 x bf16
matmul, and a bf16 product would round the scores to 8 bits). minway: nearest_tokens with
the default backend, the Triton kernel on a GPU and the chunked torch path on a CPU. The
roofline is the time to read E once at the copy bandwidth measured here: no projection can
do with less, for it must see every row. The last column is how often minway's top-1 is the
reference's (computed in fp32, on the first 64 queries).

``--vocab gpt2``: GPT-2's 50257 rows of 768 to 1600. ``--vocab large``: the vocabularies of
Llama 3 (128256 rows) and Qwen 2.5 (151936) at widths 2048 and 4096; M up to 64 on a CPU.
"""
import argparse

import torch

from common import bench, copy_bandwidth, print_table, save
from minway.kernels.projection import nearest_tokens
from minway.kernels.projection_triton import reference

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}
# name: (vocabulary rows, widths, widths with --quick)
VOCABULARIES = {"gpt2": ((50257,), (768, 1024, 1280, 1600), (768, 1600)),
                "large": ((128256, 151936), (2048, 4096), (4096,))}


def baseline(q, E, k):
    scores = q @ E.float().T
    return scores.argmax(1) if k == 1 else scores.topk(k, dim=1)


def measure(q, E, k, device, repeats, warmup, bandwidth, backend="auto"):
    """One row of the table: both sides' median time, the speed-up, the roofline (one read of E at
    the copy bandwidth) and the fraction of it minway reaches, and how often the top-1 agrees."""
    t_torch = bench(lambda: baseline(q, E, k), device, repeats, warmup)
    t_minway = bench(lambda: nearest_tokens(q, E, k=k, backend=backend), device, repeats, warmup)
    checked = q[:64]
    ours = nearest_tokens(checked, E, k=1, backend=backend).indices[:, 0]
    theirs = reference(checked, E, 1, dtype=torch.float32)[0][:, 0]
    roofline = E.numel() * E.element_size() / bandwidth
    return dict(E=DTYPE_NAMES[E.dtype], V=E.shape[0], d=E.shape[1], M=q.shape[0], k=k, torch_s=t_torch,
                minway_s=t_minway, speedup=t_torch / t_minway, roofline_s=roofline,
                roofline_fraction=roofline / t_minway, same_top1=(ours == theirs).float().mean().item())


def table_row(r):
    return [r["E"], r["V"], r["d"], r["M"], r["k"], f"{r['torch_s'] * 1e3:.3f}", f"{r['minway_s'] * 1e3:.3f}",
            f"{r['speedup']:.2f}x", f"{r['roofline_s'] * 1e3:.3f}", f"{100 * r['roofline_fraction']:.0f}%",
            f"{100 * r['same_top1']:.1f}%"]


HEADER = ["E", "V", "d", "M", "k", "torch ms", "minway ms", "speedup", "roofline ms", "% roofline", "same top-1"]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer shapes and repeats")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--vocab", choices=sorted(VOCABULARIES), default="gpt2",
                   help="GPT-2's vocabulary, or Llama 3's and Qwen 2.5's")
    args = p.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    vocabularies, widths, quick_widths = VOCABULARIES[args.vocab]
    Ms = [1, 14, 56, 1024, 8192] if gpu or args.vocab == "gpt2" else [1, 14, 64]
    ds = widths
    if args.quick:
        Ms, ds = [M for M in Ms if M in (1, 56, 64, 1024)], quick_widths
    repeats, warmup = (20, 5) if gpu else (3, 1)

    bandwidth = copy_bandwidth(device, (1 << 30) if gpu else (1 << 28))
    print(f"{device}: copy bandwidth {bandwidth / 1e9:.0f} GB/s, V={', '.join(map(str, vocabularies))}, "
          f"minway backend {'triton' if gpu else 'torch (chunked)'}")
    rows, records = [], []
    g = torch.Generator(device).manual_seed(0)
    for dtype in DTYPES.values():
        for V in vocabularies:
            for d in ds:
                E = (0.1 * torch.randn(V, d, generator=g, device=device)).to(dtype)
                for M in Ms:
                    q = 0.1 * torch.randn(M, d, generator=g, device=device)
                    for k in (1, 8):
                        records.append(measure(q, E, k, device, repeats, warmup, bandwidth))
                        rows.append(table_row(records[-1]))
                        print(*rows[-1], flush=True)
                del E
    print()
    print_table(HEADER, rows)
    save("projection" + ("-large-vocab" if args.vocab == "large" else ""), device,
         {"quick": args.quick, "vocab": args.vocab, "V": list(vocabularies), "copy_bandwidth_Bps": bandwidth,
          "repeats": repeats, "warmup": warmup, "rows": records})


if __name__ == "__main__":
    main()
