"""Memory of the drift stage per live key, measured with tracemalloc on the real tracker.

One key receives `--windows` full windows of answers (so its open reservoir and its
trimmed history are both full); the Python heap growth divided by keys is the figure.
Usage: python benchmarks/bench_drift_memory.py [--keys 20] [--windows 12] [--calls 1500]
"""

from __future__ import annotations

import argparse
import json
import sys
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from processors.core.drift.stream import DriftStageConfig, DriftTracker

WINDOW = 900


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, default=20)
    parser.add_argument("--windows", type=int, default=12)
    parser.add_argument("--calls", type=int, default=1500, help="calls per key and window (above the reservoir size)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    words = "order refund shipping account policy delivery status help update details summary options".split()
    clock = [1_764_000_000.0]
    tracker = DriftTracker(DriftStageConfig(window_s=WINDOW, lateness_s=0, idle_close_s=1e12), clock=lambda: clock[0])
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    t0 = int(clock[0]) // WINDOW * WINDOW
    for w in range(args.windows):
        for k in range(args.keys):
            calls = []
            for i in range(args.calls):
                text = " ".join(rng.choice(words, size=int(rng.integers(20, 200))))
                message = json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": text}]}])
                calls.append(
                    {
                        "ts_ns": int((t0 + w * WINDOW + i * WINDOW / args.calls) * 1e9),
                        "span_id": f"{i:016x}",
                        "trace_id": f"{w:016x}{k:016x}",
                        "model": "m",
                        "prompt_name": f"p{k}",
                        "prompt_version": "v1",
                        "output_tokens": 100,
                        "ttft_ms": 300.0,
                        "finish_reason": "stop",
                        "attributes": {"gen_ai.output.messages": message},
                    }
                )
            tracker.add("svc", calls)
        tracker.close()
        print(f"window {w + 1}/{args.windows} done", file=sys.stderr)
    current = tracemalloc.get_traced_memory()[0] - base
    print(f"live keys {tracker.live_keys}, reservoir {tracker.config.reservoir_size}, windows {args.windows}")
    print(
        f"python heap for drift state: {current / 2**20:.1f} MiB = "
        f"{current / tracker.live_keys / 2**20:.2f} MiB per live key"
    )


if __name__ == "__main__":
    main()
