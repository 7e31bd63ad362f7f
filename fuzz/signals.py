"""Random SIGTERM/SIGINT against `bpcbench compress` and `decompress` on the tiny test model.

    python fuzz/signals.py [-n 100] [--seed 0] [--min-delay 0.03] [--max-delay 1.5]

Each signal hits its own subprocess at a random moment (imports, model load, coding, writing);
tests/signal_runs.py says what counts as a good ending. Prints one line per signal and a summary;
exits 1 if any run ended otherwise. tests/cli/test_signals.py runs a few of the same in the suite.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from signal_runs import campaign
from tiny_gguf import write_tiny_gguf


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=100, help="signals to send (default 100)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-delay", type=float, default=0.03,
                    help="seconds after the start before a signal (default 0.03: the interpreter's own start, "
                         "before any bpcbench code runs, is out of reach of any handler)")
    ap.add_argument("--max-delay", type=float, default=1.5)
    args = ap.parse_args()
    tally, bad = Counter(), 0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = write_tiny_gguf(work / "tiny.gguf", seed=0)
        for case, sig, delay, out, problem in campaign(model, work, args.n, args.seed, args.min_delay,
                                                        args.max_delay):
            ending = "finished first" if out.rc == 0 else f"exit {out.rc}"
            tally[(case.name, signal.Signals(sig).name, ending if problem is None else "FAILED")] += 1
            bad += problem is not None
            print(f"{case.name:<10} {signal.Signals(sig).name:<7} at {delay:5.3f} s: {ending:<14} "
                  f"{out.seconds:5.2f} s  {problem or 'ok'}", flush=True)
    print(f"\n{args.n} signals, {bad} failed")
    for (name, sig, ending), count in sorted(tally.items()):
        print(f"  {name:<10} {sig:<7} {ending:<14} {count}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
