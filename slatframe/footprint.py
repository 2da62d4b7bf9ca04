"""How much memory a run of a config needs, estimated before anything is built.

Config resolution calls :func:`check_footprint`, which refuses a config whose estimate
exceeds the memory the run may use (the tightest of ``MemAvailable`` of /proc/meminfo,
this process's RLIMIT_AS and RLIMIT_DATA, and its cgroup's memory limit:
:mod:`slatframe.memlimits`; or the ``SLATFRAME_MEMORY_LIMIT`` environment variable, a
size such as ``"8G"``), naming the key whose structures dominate. The estimate is an upper bound of the order of magnitude,
not an exact figure: per-entry costs below are measured on CPython 3.11 / numpy.

- TLB levels and walk caches: the reference tier's lists (tag, value, policy stamp per
  entry, three lists per set) plus, unless ``engine = "reference"``, the compiled tier's
  tag array, sized by the largest level in every dimension (see engine/compiled.py).
- Data caches of the cost model (``data_caches`` spec): two lists per set in the
  reference tier, two int64 arrays of levels x sets x ways in the compiled tier.
- Simulated memory (slatframe/memory.py): an int64 content id per host frame up to the
  highest frame allocated (doubled on growth), a dict entry per mapped page, and 4 KiB
  of words per page-table page (tables counted by the address span each level covers).
- The workload's own arrays (its options' ``memory_items()``) and the records in flight
  (``min(chunk_size, accesses)`` records with their hPAs and temporaries).
- With dedup: per 4 KiB page of touched guest memory, the strategy's bookkeeping, and
  per page of each ``vms[].image`` its content id.
"""
from __future__ import annotations

import math
import os
from typing import Any, Iterable

import attrs

from .smp import is_smp
from .units import format_size, parse_size

ENV = "SLATFRAME_MEMORY_LIMIT"
PAGE = 4096
ENTRY_BYTES = 40  #: per TLB / walk-cache entry, reference tier: tag, value, stamp slots, key dict
SET_BYTES = 3 * 64  #: per set, reference tier: three list headers
COMPILED_INDEX_WORDS = 32 + 1  #: per set of the compiled tier's tag array: index heads and count (loop.py BUCKETS + 1)
LINE_BYTES = 16 + 16  #: per data-cache line: tag and age, reference lists and compiled arrays
FRAME_BYTES = 24  #: per 4 KiB host frame: an int64 content id, twice while the array grows
MAPPED_PAGE_BYTES = 400  #: per mapped page: the kernel's leaf dict, the backing's page dict
TABLE_BYTES = 3 * PAGE  #: per page-table page: its words row, doubled on growth
RECORD_BYTES = 200  #: per trace record in flight: the chunk, its hPAs, generator temporaries
DEDUP_PAGE_BYTES = 200  #: per 4 KiB page of touched guest memory under a dedup strategy
IMAGE_PAGE_BYTES = 200  #: per page of a VM image: its id and the digest dict entry
BASELINE_BYTES = 400 << 20  #: the process itself: Python, numpy, numba, the plugins


@attrs.frozen
class Item:
    """One contribution to the estimate: the key that sizes it, its value and its bytes."""

    key: str
    shown: str
    nbytes: int


def human(nbytes: float) -> str:
    """``1.5 GiB`` style, for messages."""
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{int(nbytes)} bytes"


def memory_limit() -> tuple[int, str] | None:
    """The bytes a run may use and where that figure comes from (None: unknown)."""
    text = os.environ.get(ENV)
    if text:
        from .errors import ConfigError

        try:
            return parse_size(text.strip()), f"{ENV}={text.strip()}"
        except ValueError as exc:
            raise ConfigError(f"{ENV} = {text!r} is not allowed: {exc}.") from None
    from .memlimits import tightest

    return tightest()


def compiled_set_bytes(ways: int) -> int:
    """Bytes of one set of the compiled tier's tag array of up to ``ways`` ways: four int64
    fields per way and the index, in whole 64-byte lines (engine/loop.py row_words)."""
    return -(-(4 * ways + COMPILED_INDEX_WORDS) * 8 // 64) * 64


def _arrays(arrays: list[tuple[str, int, int]], compiled: bool) -> list[Item]:
    """Items of set-associative arrays ``(key, sets, ways)``: each array's reference
    lists, and the compiled tier's tag array (``len x max sets x max ways``) charged to
    the largest array."""
    if not arrays:
        return []
    items = [Item(key, f"(sets = {sets}, ways = {ways})", sets * (ways * ENTRY_BYTES + SET_BYTES))
             for key, sets, ways in arrays]
    if compiled:
        tags = len(arrays) * max(s for _, s, _ in arrays) * compiled_set_bytes(max(w for _, _, w in arrays))
        big = max(range(len(arrays)), key=lambda i: arrays[i][1] * arrays[i][2])
        items[big] = attrs.evolve(items[big], nbytes=items[big].nbytes + tags)
    return items


def _tables(touched: int, leaf: int, levels: int, mapped: int) -> int:
    """Page-table pages of a radix table mapping ``mapped`` pages of ``leaf`` bytes spread
    over ``touched`` bytes: per level, at most one table per span it covers."""
    count = 0
    for level in range(levels):
        span = PAGE << (9 * (level + 1))  # bytes one table at this level maps
        if span <= leaf:
            continue
        count += min(mapped, touched // span + 2)
    return count


def estimate(config: Any, registry: Any, guest_fmt: Any, host_fmt: Any) -> list[Item]:
    """Every item of the estimate of ``config``'s run."""
    compiled = config.experiment.engine != "reference"
    items = _arrays([(f"tlb.levels[{i}]", lv.sets, lv.ways) for i, lv in enumerate(config.tlb.levels)], compiled)
    caches = []
    for i, choice in enumerate(config.walk_caches):
        sets, ways = getattr(choice.options, "sets", None), getattr(choice.options, "ways", None)
        if isinstance(sets, int) and isinstance(ways, int):
            caches.append((f"walk_caches[{i}]", sets, ways or 32))  # psc: 0 is ChampSim's size, at most 32
    items += _arrays(caches, compiled)
    cores = config.machine.cores
    if cores > 1:  # each core has its own arrays, but the TLB levels that say shared
        private = [not lv.shared for lv in config.tlb.levels] + [True] * len(caches)
        items = [attrs.evolve(item, shown=f"{item.shown} x {cores} cores", nbytes=item.nbytes * cores) if own else item
                 for item, own in zip(items, private)]
    record = registry.get("cost models", config.cost.name)
    spec = record.data_caches(config.cost.options) if record.data_caches is not None else None
    for level in (spec.levels if spec is not None else ()):
        key = f"cost.{level.name}_size" if hasattr(config.cost.options, f"{level.name}_size") else "cost"
        items.append(Item(key, f"= {format_size(level.size)!r}", level.sets * level.ways * LINE_BYTES))
    hypervisor = registry.get("SLAT schemes", config.machine.slat.name).backs_guest_memory
    items += _memory_items(config, guest_fmt, host_fmt, hypervisor)
    options = config.workload.options
    own = getattr(options, "memory_items", None)
    for key, nbytes in (own() if callable(own) else ()):
        items.append(Item(f"workload.{key}", f"= {_value(options, key)}", nbytes))
    accesses = getattr(options, "accesses", None)
    scheduler = config.machine.scheduler.options
    own = getattr(scheduler, "memory_items", None)  # given the workload's records, when it says
    for key, nbytes in (own(accesses if isinstance(accesses, int) else None) if callable(own) and is_smp(config)
                        else ()):
        items.append(Item(f"machine.scheduler.{key}", f"= {_value(scheduler, key)}", nbytes))
    in_flight = min(config.experiment.chunk_size, accesses if isinstance(accesses, int) else math.inf)
    items.append(Item("experiment.chunk_size", f"= {config.experiment.chunk_size}", int(in_flight) * RECORD_BYTES))
    for i, vm in enumerate(config.vms):
        if config.dedup is not None and vm.image:
            try:
                pages = os.stat(vm.image).st_size // PAGE + 1
            except (OSError, ValueError):
                continue  # reported when the run reads it
            items.append(Item(f"vms[{i}].image", f"= {vm.image!r}", pages * IMAGE_PAGE_BYTES))
    return items


def _value(options: Any, key: str) -> str:
    value: Any = options
    for part in key.replace("[", ".").replace("]", "").split("."):
        value = value[int(part)] if part.isdigit() else getattr(value, part, None)
    return format_size(value) if isinstance(value, int) and key.endswith(("footprint", "working_set")) else repr(value)


def _memory_items(config: Any, guest_fmt: Any, host_fmt: Any, hypervisor: bool) -> list[Item]:
    """Simulated memory: host frames, mapped pages, page tables (and dedup's per-page state).
    A workload whose options do not say how many bytes it touches (``touched_bytes()``,
    trace files) adds nothing here."""
    options = config.workload.options
    touched_of = getattr(options, "touched_bytes", None)
    touched = touched_of() if callable(touched_of) else None
    if touched is None:
        return []
    key = next((k for k in ("footprint", "working_set") if hasattr(options, k)), None)
    shown = f"= {_value(options, key)}" if key else f"({config.workload.name})"
    accesses = getattr(options, "accesses", None)
    host_bytes = pages = tables = 0
    for vm in config.vms:
        grain = max(vm.guest_page_size, vm.host_page_size if hypervisor else 0)
        bound = vm.memory if hypervisor else config.machine.host_memory
        mapped = min(touched // vm.guest_page_size + 2, bound // vm.guest_page_size + 1)
        if isinstance(accesses, int):
            mapped = min(mapped, accesses + 1)
        allocated = min(bound, mapped * grain)
        vm_tables = _tables(touched, vm.guest_page_size, guest_fmt.levels, mapped)
        if host_fmt is not None:
            vm_tables += _tables(allocated, vm.host_page_size, host_fmt.levels, allocated // vm.host_page_size + 1)
        host_bytes += allocated + vm_tables * PAGE
        pages += mapped
        tables += vm_tables
    used = min(host_bytes, config.machine.host_memory)
    items = [Item("machine.host_memory", f"= {format_size(config.machine.host_memory)!r}", used // PAGE * FRAME_BYTES),
             Item(f"workload.{key}" if key else "workload", shown, pages * MAPPED_PAGE_BYTES + tables * TABLE_BYTES)]
    if config.dedup is not None:
        items.append(Item("dedup", f"({config.dedup.name})", used // PAGE * DEDUP_PAGE_BYTES))
    return items


def check_footprint(config: Any, ctx: Any, guest_fmt: Any, host_fmt: Any) -> None:
    """Refuse ``config`` (through ``ctx.fail``) when its estimate exceeds the memory limit;
    ``guest_fmt`` and ``host_fmt`` are its resolved formats."""
    limit = memory_limit()
    if limit is None or ctx.registry is None:
        return
    items = estimate(config, ctx.registry, guest_fmt, host_fmt)
    total = BASELINE_BYTES + sum(item.nbytes for item in items)
    if total <= limit[0]:
        return
    top = max(items, key=lambda item: item.nbytes)
    ctx.fail(top.key, f"{top.shown} is not allowed: the run would need about {human(total)} of memory "
                      f"({human(top.nbytes)} for this key), more than the {human(limit[0])} {limit[1]}; "
                      f"make it smaller (or set {ENV} to another limit).")


def estimated_bytes(config: Any, registry: Any) -> int:
    """The estimate's total for ``config`` (what :func:`check_footprint` compares with the
    limit): the process's baseline plus every item."""
    from .config import resolved_format

    items = estimate(config, registry, resolved_format(config, "guest", registry),
                     resolved_format(config, "host", registry))
    return BASELINE_BYTES + sum(item.nbytes for item in items)


def estimate_line(config: Any, registry: Any) -> str:
    """What ``slatframe validate`` says of a config's memory before any run: the estimate
    and the limit it is checked against."""
    limit = memory_limit()
    against = f"; the run may use {human(limit[0])}, {limit[1]}" if limit else ""
    return (f"memory: about {human(estimated_bytes(config, registry))} estimated for the run (an upper bound of "
            f"the order of magnitude; the result records its peak resident set){against}.")


def peak_rss_bytes() -> int | None:
    """This process's peak resident set since it started its program: ``VmHWM`` of
    /proc/self/status (ru_maxrss would include the image of a parent that forked it
    before the exec); ``ru_maxrss`` where there is no /proc; None where neither is."""
    try:
        with open("/proc/self/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return None
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # macOS: bytes; elsewhere KiB


def memory_text(memory: Any) -> str | None:
    """A result's ``memory`` in words (None when it does not hold both figures)."""
    if not isinstance(memory, dict):
        return None
    peak, estimate_ = memory.get("peak_rss_bytes"), memory.get("estimate_bytes")
    if any(isinstance(v, bool) or not isinstance(v, int) for v in (peak, estimate_)):
        return None
    return f"peak resident set {human(peak)} (the process's), estimated {human(estimate_)} before the run"


def summary(items: Iterable[Item]) -> dict[str, int]:
    """Bytes by key (for tests and diagnostics)."""
    out: dict[str, int] = {}
    for item in items:
        out[item.key] = out.get(item.key, 0) + item.nbytes
    return out


def out_of_memory(exc: MemoryError) -> str:
    """The one sentence for an allocation that failed although the estimate allowed the run."""
    from .memlimits import tightest

    what = str(exc).strip().rstrip(".") or "an allocation failed"
    limit = tightest()
    under = f" (this process may use {human(limit[0])} more, {limit[1]})" if limit else ""
    return (f"the run ran out of memory{under}: {what}; the estimate made before the run (slatframe/footprint.py) "
            "is of the order of magnitude only: make the config's largest tables or footprint smaller, or give the "
            f"run more memory (set {ENV} lower to have such configs refused before they start).")
