"""The run machinery: configuration and run ids, files and locks, checks of what is given, memory
estimates, loading data, tokenizers and checkpoints for a run, the K-prompt trainer with checkpoints
and resume, PEFT adapters, and what the command lines share. It builds on the method (``minway``)
and is never imported by it."""
