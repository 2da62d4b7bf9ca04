"""The memory a run may still use: the tightest of the machine's available memory, this
process's address-space and data limits, and its cgroup's memory limit.

Batch schedulers cap a job with ``ulimit -v`` (RLIMIT_AS) or ``ulimit -d`` (RLIMIT_DATA),
containers and systemd units with a cgroup (v2 ``memory.max``, v1
``memory.limit_in_bytes``, on the process's own group or any group above it). Each is
read from the running system; every reader returns None where its limit is absent or
unreadable, so a machine without cgroups or limits gives MemAvailable alone.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

try:
    import resource
except ImportError:  # pragma: no cover - not POSIX
    resource = None  # type: ignore[assignment]

Limit = tuple[int, str]  #: bytes left, and where that figure comes from (for messages)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def meminfo_available(text: str | None = None) -> Limit | None:
    """MemAvailable of ``/proc/meminfo`` (or of ``text``)."""
    text = _read(Path("/proc/meminfo")) if text is None else text
    for line in (text or "").splitlines():
        if line.startswith("MemAvailable:"):
            try:
                return int(line.split()[1]) * 1024, "available on this machine (MemAvailable)"
            except (IndexError, ValueError):
                return None
    return None


def _status_kib(field: str) -> int | None:
    """A ``VmSize``-style field of ``/proc/self/status``, in bytes."""
    for line in (_read(Path("/proc/self/status")) or "").splitlines():
        if line.startswith(field + ":"):
            try:
                return int(line.split()[1]) * 1024
            except (IndexError, ValueError):
                return None
    return None


def rlimit_left(kind: str = "AS") -> Limit | None:
    """What this process may still map under its soft ``RLIMIT_AS`` (``ulimit -v``,
    counting its address space, ``VmSize``) or ``RLIMIT_DATA`` (``ulimit -d``, counting
    its data, ``VmData``)."""
    if resource is None or not hasattr(resource, f"RLIMIT_{kind}"):
        return None
    soft, _ = resource.getrlimit(getattr(resource, f"RLIMIT_{kind}"))
    if soft == resource.RLIM_INFINITY or soft < 0:
        return None
    used = _status_kib("VmSize" if kind == "AS" else "VmData") or 0
    flag = "-v" if kind == "AS" else "-d"
    return max(0, soft - used), f"left under this process's RLIMIT_{kind} (ulimit {flag})"


def _mounts(mountinfo: str) -> list[tuple[str, str, str, str]]:
    """(fstype, super options, mount root, mount point) of each line of /proc/self/mountinfo."""
    out = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if sep and len(fields) >= 5 and len(tail) >= 3:
            out.append((tail[0], tail[2], fields[3], fields[4]))
    return out


def _group_dirs(cgroup: str, mountinfo: str) -> list[tuple[Path, int]]:
    """The folders of this process's memory cgroup, with their version (1 or 2)."""
    mounts = _mounts(mountinfo)
    found = []
    for line in cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            version = 2
            candidates = [(root, point) for fstype, _, root, point in mounts if fstype == "cgroup2"]
        elif "memory" in controllers.split(","):
            version = 1
            candidates = [(root, point) for fstype, opts, root, point in mounts
                          if fstype == "cgroup" and "memory" in opts.split(",")]
        else:
            continue
        for root, point in candidates:
            rel = os.path.relpath(path, root) if path.startswith(root) else "."
            found.append((Path(point) / ("" if rel == "." else rel), version))
    return found


def _number(text: str | None) -> int | None:
    text = (text or "").strip()
    return int(text) if text.isdigit() else None


def _inactive_file(folder: Path, version: int) -> int:
    """Page cache the kernel reclaims before it refuses the group memory."""
    key = "inactive_file" if version == 2 else "total_inactive_file"
    for line in (_read(folder / "memory.stat") or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return 0


def cgroup_left(cgroup: str | None = None, mountinfo: str | None = None) -> Limit | None:
    """The least memory left under any limit of this process's memory cgroup or its
    ancestors: limit minus usage, usage without reclaimable page cache (as container
    runtimes count a working set). ``cgroup`` and ``mountinfo`` default to
    ``/proc/self/cgroup`` and ``/proc/self/mountinfo``."""
    cgroup = _read(Path("/proc/self/cgroup")) if cgroup is None else cgroup
    mountinfo = _read(Path("/proc/self/mountinfo")) if mountinfo is None else mountinfo
    best: Limit | None = None
    for folder, version in _group_dirs(cgroup or "", mountinfo or ""):
        limit_file, usage_file = (("memory.max", "memory.current") if version == 2
                                  else ("memory.limit_in_bytes", "memory.usage_in_bytes"))
        level = folder
        while True:
            limit = _number(_read(level / limit_file))  # "max" (v2) is no limit
            usage = _number(_read(level / usage_file))
            if limit is not None and usage is not None and limit < 1 << 62:
                left = max(0, limit - max(0, usage - _inactive_file(level, version)))
                if best is None or left < best[0]:
                    best = left, f"left under the cgroup memory limit ({level / limit_file})"
            if level.parent == level or not (level.parent / limit_file).exists():
                break
            level = level.parent
    return best


READERS: tuple[Callable[[], Limit | None], ...] = (meminfo_available, lambda: rlimit_left("AS"),
                                                   lambda: rlimit_left("DATA"), cgroup_left)


def tightest() -> Limit | None:
    """The smallest of every limit that applies (None when none can be read)."""
    limits = [limit for limit in (read() for read in READERS) if limit is not None]
    if not limits:
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "available on this machine"
        except (ValueError, OSError, AttributeError):
            return None
    return min(limits, key=lambda limit: limit[0])
