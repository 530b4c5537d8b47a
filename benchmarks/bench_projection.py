"""nearest_tokens against the full score matrix in torch, on GPT-2's vocabulary.

    python benchmarks/bench_projection.py [--quick] [--device cuda|cpu]

Baseline: ``(Q @ E.T).argmax(1)`` for k=1 and ``.topk(k)`` for k=8, in fp32 like
nearest_tokens (a bf16 E is upcast inside the timed call: torch has no fp32 x bf16
matmul, and a bf16 product would round the scores to 8 bits). minway: nearest_tokens
with the default backend, the Triton kernel on a GPU and the chunked torch path on a CPU.
The roofline is the time to read E once at the copy bandwidth measured here.
"""
import argparse

import torch

from common import bench, copy_bandwidth, print_table, save
from minway.kernels.projection import nearest_tokens

V = 50257
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}


def baseline(q, E, k):
    scores = q @ E.float().T
    return scores.argmax(1) if k == 1 else scores.topk(k, dim=1)


def measure(q, E, k, device, repeats, warmup, bandwidth, backend="auto"):
    """One row of the table: both sides' median time, the speed-up, the fraction of the roofline
    (one read of E at the copy bandwidth) and how often the top-1 agrees."""
    t_torch = bench(lambda: baseline(q, E, k), device, repeats, warmup)
    t_minway = bench(lambda: nearest_tokens(q, E, k=k, backend=backend), device, repeats, warmup)
    ours, theirs = nearest_tokens(q, E, k=k, backend=backend).indices[:, 0], baseline(q, E, 1)
    roofline = E.numel() * E.element_size() / bandwidth
    return dict(E=DTYPE_NAMES[E.dtype], d=E.shape[1], M=q.shape[0], k=k, torch_s=t_torch, minway_s=t_minway,
                speedup=t_torch / t_minway, roofline_fraction=roofline / t_minway,
                same_top1=(ours == theirs).float().mean().item())


def table_row(r):
    return [r["E"], r["d"], r["M"], r["k"], f"{r['torch_s'] * 1e3:.3f}", f"{r['minway_s'] * 1e3:.3f}",
            f"{r['speedup']:.2f}x", f"{100 * r['roofline_fraction']:.0f}%", f"{100 * r['same_top1']:.1f}%"]


HEADER = ["E", "d", "M", "k", "torch ms", "minway ms", "speedup", "% roofline", "same top-1"]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer shapes and repeats")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    Ms = [1, 14, 56, 1024, 8192]
    ds = [768, 1024, 1280, 1600]
    if args.quick:
        Ms, ds = [1, 56, 1024], [768, 1600]
    repeats, warmup = (20, 5) if gpu else (3, 1)

    bandwidth = copy_bandwidth(device, (1 << 30) if gpu else (1 << 28))
    print(f"{device}: copy bandwidth {bandwidth / 1e9:.0f} GB/s, V={V}, minway backend "
          f"{'triton' if gpu else 'torch (chunked)'}")
    rows, records = [], []
    g = torch.Generator(device).manual_seed(0)
    for dtype in DTYPES.values():
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
    save("projection", device, {"quick": args.quick, "V": V, "copy_bandwidth_Bps": bandwidth,
                                "repeats": repeats, "warmup": warmup, "rows": records})


if __name__ == "__main__":
    main()
