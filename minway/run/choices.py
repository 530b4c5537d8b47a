"""The choices the command-line tools offer, importable without torch (so that --help answers
at once). The modules that implement them hold the same names; a test keeps the two equal."""
METRICS = ("dot", "l2", "cos")                   # minway.kernels.projection.METRICS
DTYPES = ("fp32", "bf16")                        # minway.run.model_and_data.DTYPES
ATTENTIONS = ("auto", "naive", "sdpa", "triton")  # "auto" and minway.kernels.attention.BACKENDS
SIZES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")  # minway.model.SIZES
TRAIN_SPLITS = ("released", "all")             # minway.run.data.TRAIN_SPLITS
