"""The memory a run may use is the tightest of MemAvailable, RLIMIT_AS / RLIMIT_DATA and the
cgroup's limit; an allocation that fails anyway is one sentence (issue 37, N5)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from slatframe import memlimits

ROOT = Path(__file__).resolve().parents[1]
V1_CGROUP = "4:memory:/batch/job7\n1:cpu:/batch/job7\n0::/\n"
V1_MOUNTS = ("35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
             "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n")
V2_CGROUP = "0::/user.slice/job.scope\n"


def _v2_mounts(root) -> str:
    return f"30 23 0:26 / {root} rw,nosuid - cgroup2 cgroup2 rw\n"


def _group(folder, **files) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name.replace("_", ".", 1)).write_text(text)


def test_a_v2_limit_above_the_process_group_counts_its_working_set(tmp_path):
    """memory.max of the parent (2 GiB) with 1.5 GiB in use, 0.25 GiB of it reclaimable page
    cache: 0.75 GiB left; the group's own 'max' is no limit."""
    _group(tmp_path / "user.slice", memory_max=str(2 << 30), memory_current=str(3 << 29),
           memory_stat=f"anon 1\ninactive_file {1 << 28}\n")
    _group(tmp_path / "user.slice" / "job.scope", memory_max="max\n", memory_current=str(1 << 20))
    left, where = memlimits.cgroup_left(V2_CGROUP, _v2_mounts(tmp_path))
    assert left == (2 << 30) - ((3 << 29) - (1 << 28))
    assert where.endswith(str(tmp_path / "user.slice" / "memory.max") + ")")


def test_the_tightest_v1_limit_of_the_hierarchy_wins(tmp_path):
    mount = tmp_path / "sys/fs/cgroup/memory"
    mounts = V1_MOUNTS.replace("/sys/fs/cgroup", str(tmp_path / "sys/fs/cgroup"))
    _group(mount, memory_limit_in_bytes=str(2 ** 63 - 4096), memory_usage_in_bytes=str(5 << 30))
    _group(mount / "batch", memory_limit_in_bytes=str(8 << 30), memory_usage_in_bytes=str(7 << 30),
           memory_stat="total_inactive_file 0\n")
    _group(mount / "batch/job7", memory_limit_in_bytes=str(4 << 30), memory_usage_in_bytes=str(1 << 30),
           memory_stat=f"cache 5\ntotal_inactive_file {1 << 29}\n")
    left, where = memlimits.cgroup_left(V1_CGROUP, mounts)
    assert left == min((8 << 30) - (7 << 30), (4 << 30) - ((1 << 30) - (1 << 29))) == 1 << 30
    assert "batch/memory.limit_in_bytes" in where


def test_no_cgroup_limit_is_none(tmp_path):
    _group(tmp_path / "user.slice" / "job.scope", memory_max="max\n", memory_current="100\n")
    assert memlimits.cgroup_left(V2_CGROUP, _v2_mounts(tmp_path)) is None
    assert memlimits.cgroup_left("", "") is None


def test_memavailable_is_read_in_kib():
    assert memlimits.meminfo_available("MemTotal: 10 kB\nMemAvailable:  2048 kB\n") == (
        2 << 20, "available on this machine (MemAvailable)")


RLIMITED = textwrap.dedent('''
    import resource, sys
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from slatframe.footprint import memory_limit
    with open("/proc/self/status") as fh:
        size = next(int(l.split()[1]) * 1024 for l in fh if l.startswith("VmSize:"))
    left, where = memory_limit()
    print(limit - size - left, where)
''')


def _vm_size() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))


def test_rlimit_as_is_honoured_when_it_is_the_tightest():
    """What is left is the limit less the address space already mapped (VmSize), read
    here independently, within what the two reads' own allocations add."""
    limit = _vm_size() + (1 << 30)
    out = subprocess.run([sys.executable, "-c", RLIMITED, str(limit)], capture_output=True, text=True, check=True,
                         env={**os.environ, "SLATFRAME_MEMORY_LIMIT": ""})
    gap, where = out.stdout.split(" ", 1)
    assert where.strip() == "left under this process's RLIMIT_AS (ulimit -v)"
    assert 0 <= int(gap) < 16 << 20


QUICKSTART = textwrap.dedent('''
    [experiment]
    name = "big"
    engine = "reference"
    [machine]
    slat = "native"
    [[tlb.levels]]
    name = "l1"
    sets = {sets}
    ways = 4
    [[vms]]
    name = "vm0"
    [workload]
    source = "synthetic"
    accesses = 100
''')


def _run_limited(tmp_path, sets: int, headroom: int, memory_limit: str = ""):
    """``slatframe run`` of a config with a ``sets``-set TLB, under an RLIMIT_AS of the
    interpreter's start-up size plus ``headroom`` bytes."""
    config = tmp_path / "big.toml"
    config.write_text(QUICKSTART.format(sets=sets))
    probe = subprocess.run([sys.executable, "-c", "import slatframe.cli, numpy, attrs\n"
                            "print(next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') "
                            "if l.startswith('VmSize:')))"], capture_output=True, text=True, check=True)
    limit = int(probe.stdout) + headroom

    def cap() -> None:
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return subprocess.run([sys.executable, "-m", "slatframe.cli", "run", str(config), "--out",
                           str(tmp_path / "out.json")], capture_output=True, text=True, preexec_fn=cap,
                          env={**os.environ, "SLATFRAME_MEMORY_LIMIT": memory_limit}, cwd=tmp_path)


def test_a_config_beyond_rlimit_as_is_refused_by_the_estimate(tmp_path):
    done = _run_limited(tmp_path, 4_000_000, 600 << 20)
    assert done.returncode == 2, done.stderr
    assert re.fullmatch(r"slatframe: error: \S+big.toml: tlb.levels\[0\] \(sets = 4000000, ways = 4\) is not "
                        r"allowed: .* left under this process's RLIMIT_AS \(ulimit -v\); .*\n", done.stderr)
    assert not (tmp_path / "out.json").exists()


def test_an_allocation_that_fails_anyway_is_one_sentence(tmp_path):
    """The estimate told to allow anything (SLATFRAME_MEMORY_LIMIT): the lists of a
    4-million-set TLB do not fit in 300 MiB more than the interpreter's start-up."""
    done = _run_limited(tmp_path, 4_000_000, 300 << 20, memory_limit="1T")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("slatframe: error: the run ran out of memory (this process may use ")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "out.json").exists()


@pytest.mark.skipif(not os.path.exists("/proc/self/cgroup"), reason="no cgroups here")
def test_the_machine_limit_is_at_most_memavailable():
    """On the machine running the tests: whatever applies, never more than MemAvailable."""
    with open("/proc/meminfo") as fh:
        available = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("MemAvailable:"))
    left, _ = memlimits.tightest()
    assert 0 < left <= available * 1.05


def test_a_result_reports_its_peak_resident_set_and_the_estimate_bounds_it(tmp_path):
    """A fresh process runs a config dominated by one large TLB (2^17 entries): the result's
    peak resident set is at least the resident set the process has right after the run
    (pages of /proc/self/statm; a few MiB allowed for what Python allocates in between) and lies below the estimate made before the run (an upper bound,
    slatframe/footprint.py), which the result records as check_footprint computes it."""
    script = textwrap.dedent("""
        import json, sys
        import slatframe
        from slatframe.config import load_config
        from slatframe.footprint import estimated_bytes
        overrides = {"tlb.levels[1].sets": 8192, "workload.accesses": 2000, "experiment.engine": "reference"}
        result = slatframe.run("examples/quickstart.toml", set=overrides)
        import os
        now = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        config, registry = load_config("examples/quickstart.toml", [f"{k}={v!r}".replace("'", '"')
                                                                     for k, v in overrides.items()])
        print(json.dumps({**result.memory, "now": now, "again": estimated_bytes(config, registry)}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    memory = json.loads(done.stdout.strip().splitlines()[-1])
    assert 50 << 20 < memory["now"] <= memory["peak_rss_bytes"] + (4 << 20)  # the statm read comes a moment later
    assert memory["peak_rss_bytes"] < memory["estimate_bytes"] == memory["again"]


def test_validate_says_the_estimate_the_run_records(capsys):
    """What validate prints before any run is the estimate the result records after it."""
    import slatframe
    from slatframe.cli import main
    from slatframe.footprint import human

    overrides = ["workload.accesses=3000", "experiment.engine='reference'"]
    args = ["validate", str(ROOT / "examples" / "quickstart.toml")]
    for text in overrides:
        args += ["--set", text]
    assert main(args) == 0
    line = capsys.readouterr().out.splitlines()[1]
    result = slatframe.run(ROOT / "examples" / "quickstart.toml",
                           set={"workload.accesses": 3000, "experiment.engine": "reference"})
    assert line.startswith(f"memory: about {human(result.memory['estimate_bytes'])} estimated for the run")
