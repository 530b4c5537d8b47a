"""What the Triton kernels share. Imported only on the Triton path, never at package import."""
import os

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
        # the interpreter multiplies bf16 operands as raw 16-bit integers
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision=PRECISION)
