"""What the Triton kernels share. Imported only on the Triton path, never at package import."""
import os

import torch
import triton
import triton.language as tl

# Triton reads the variable when it is imported; older releases have no knob to ask. A
# constexpr so that kernels may read it.
INTERPRET = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes"))


def check_device(device, what):
    """Raise a ValueError unless Triton kernels can run on tensors of ``device``."""
    if device.type != "cuda" and not INTERPRET.value:
        raise ValueError(f"{what} with backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1 "
                         f"set before triton is imported); got {device} tensors: use the torch backend")


@triton.jit
def dot(a, b, acc, PRECISION: tl.constexpr):
    """``acc + a @ b`` (``a @ b`` if acc is None), accumulated in fp32."""
    if INTERPRET:
        # The interpreter multiplies bf16 operands as raw 16-bit integers, and its fp32 product
        # (BLAS) rounds a row differently depending on where it falls in the block. Summing
        # the products in one order for every element gives equal rows equal results, as
        # the tensor cores do.
        product = tl.sum(a.to(tl.float32)[:, :, None] * b.to(tl.float32)[None, :, :], axis=1)
        return product if acc is None else acc + product
    return tl.dot(a, b, acc, input_precision=PRECISION)


def gpu_arch(device):
    """Compute capability of a CUDA device as one number (80 for an A100, 90 for an H100)."""
    major, minor = torch.cuda.get_device_capability(device)
    return 10 * major + minor
