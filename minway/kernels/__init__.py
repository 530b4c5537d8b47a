"""Triton kernels of minway, each with a plain torch path for CPU.

Importing this package never requires Triton: the Triton code is imported
lazily, on CUDA or under ``TRITON_INTERPRET=1``.
"""
