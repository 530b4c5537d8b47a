"""The choices the command-line tools offer, importable without torch (so that --help answers
at once). The modules that implement them hold the same names; a test keeps the two equal."""
METRICS = ("dot", "l2", "cos")                   # minway.kernels.projection.METRICS
DTYPES = ("fp32", "bf16")                        # minway.run.config.DTYPES
ATTENTIONS = ("auto", "naive", "sdpa", "triton")  # "auto" and minway.kernels.attention.BACKENDS
TRAIN_SPLITS = ("released", "all")             # minway.run.data.TRAIN_SPLITS
