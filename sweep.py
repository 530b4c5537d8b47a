"""Run the paper's experiments as one resumable sweep (see minway/sweep.py).

    python sweep.py --preset main --device cuda --dtype bf16
    python sweep.py --preset gamma --tasks sst2 --seeds 1 --targets-limit 4 --dry-run
"""
from minway.cli import run_cli
from minway.sweep import main

if __name__ == "__main__":
    run_cli(main)
