"""The paper's experiments: grids of runs (presets), a resumable sweep of them (locally or on Ray),
its state on disk, and its tables and figures. Built on the run machinery; nothing below imports it."""
