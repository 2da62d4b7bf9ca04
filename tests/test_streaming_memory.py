"""A long synthetic trace streams: peak memory does not grow with the trace's length."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart.toml"
SCRIPT = """
import resource, sys
from slatframe.cli import main
code = main(["run", sys.argv[1], "--out", sys.argv[2], "--quiet", "--engine", "compiled",
             "--set", "workload.accesses=" + sys.argv[3], "--set", "workload.footprint='16M'"])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
sys.exit(code)
"""


def peak_rss_mib(tmp_path, accesses: int) -> int:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(QUICKSTART), str(tmp_path / "r.json"), str(accesses)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return int(proc.stdout.split()[-1])


def test_peak_memory_does_not_grow_with_trace_length(tmp_path):
    peak_rss_mib(tmp_path, 1000)  # compile or load the engine once, outside the measurement
    short = peak_rss_mib(tmp_path, 200_000)
    long = peak_rss_mib(tmp_path, 4_000_000)
    # the long trace is 64 MB as TRACE_DTYPE records (more in the engine's column copies);
    # streamed in 65536-record chunks it must need no more than a few MiB beyond the short one
    assert long - short < 16, (short, long)
