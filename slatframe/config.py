"""Experiment configuration: TOML -> frozen attrs objects.

Every user mistake is reported as one sentence naming the file, the key path, the bad
value and what is allowed. Unknown keys are errors.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Iterable

import attrs

from .errors import ConfigError, PluginError, SlatframeError
from .options import BuildContext, ConfigFacts, PluginChoice, build, nonempty_name, option, to_plain
from .paging import PageTableFormat
from .units import format_size

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

PAGE_4K = 1 << 12


MAX_VMS = 1 << 16  #: trace records' VM index is a uint16
MAX_CORES = 1 << 10  #: cores of a machine, and vCPUs of a VM
PHYS_LIMIT = 1 << 52  #: physical addresses of the formats' entries: 52 bits


def _power_of_two_page(value: int) -> None:
    if value < PAGE_4K or value & (value - 1):
        raise ValueError("a page size is a power of two of at least 4K")


def _distinct_sizes(values: tuple) -> None:
    if not values:
        raise ValueError("list at least one page size")
    if len(set(values)) != len(values):
        raise ValueError("each page size may appear once")


@attrs.frozen
class ExperimentConfig:
    """``[experiment]``: naming, seeding and how the run is executed."""

    name: str = option("experiment", "name of the experiment, copied into the result")
    seed: int = option(1, "seed of every random choice in the run (workloads, random policies)", min=0)
    engine: str = option("auto", "engine tier: auto takes compiled when it honours every plugin on the "
                                 "per-access path, else reference (the result says why), and reference for a run "
                                 "of at most 10^6 accesses while the compiled engine is not compiled yet; "
                                 "compiled refuses otherwise",
                         choices=("auto", "reference", "compiled"))
    loop: str = option("auto", "the compiled tier's loop: shaped compiles one for this config's TLB shape (which "
                               "levels an access looks up, the page sizes each holds; about half a minute once per "
                               "shape, then cached); exact compiles one for this config's whole TLB (the shape and "
                               "each level's sets, ways and policy: faster on hit-heavy traces, but a module per "
                               "TLB config); both refuse a config with a data-only or instruction-only level; "
                               "generic is the one loop for every config; auto takes the exact loop when it is "
                               "compiled already, else the shaped one when it is, else the generic one, and after "
                               "a generic run of a minute or more starts compiling the shaped one in the background "
                               "for the next run; while not even the generic loop is compiled (a first "
                               "installation), auto compiles the exact one, which compiles sooner and runs faster, "
                               "and the generic one in the background (the result says which ran, and whether a "
                               "build started)",
                       choices=("auto", "generic", "shaped", "exact"))
    plugins: tuple[str, ...] = option([], "extra plugin files, relative to the config file", path=True)
    chunk_size: int = option(65536, "trace records per chunk handed to the engine", min=1)
    warmup: int = option(0, "trace records run before the statistics start: TLBs, caches, page "
                         "tables and dedup state stay warm, every counter restarts from zero", min=0)
    observers: tuple[PluginChoice, ...] = option([], "run observers to attach", plugin="run observers")
    per_asid: bool = option(False, "also report each VM's metrics per address space "
                                   "(vm.<vm name>.asid.<n>.<metric>)")


@attrs.frozen
class MachineConfig:
    """``[machine]``: the SLAT scheme and page-table formats of the host."""

    slat: PluginChoice = option("native", "SLAT scheme", plugin="SLAT schemes")
    guest_format: PluginChoice | None = option(
        None, "page-table format of the guest (the scheme's default if absent)",
        plugin="page-table formats")
    host_format: PluginChoice | None = option(
        None, "page-table format of the second level (the scheme's default if absent; "
        "ignored by schemes without one, so one config can sweep machine.slat)",
        plugin="page-table formats")
    host_memory: int = option(64 << 30, "host physical memory", size=True, min=PAGE_4K, max=PHYS_LIMIT)
    cores: int = option(1, "physical cores; each has its own TLB levels (but those with shared = true) and walk "
                           "caches, and runs the vCPUs the scheduler places on it (docs/architecture.md, "
                           "\"Cores and vCPUs\")", min=1, max=MAX_CORES)
    scheduler: PluginChoice = option("pinned", "how vCPUs are placed on cores, record by record",
                                     plugin="schedulers")
    ipi_virtualization: bool = option(False, "a guest's IPI reaches a running vCPU without a VM exit (Intel IPI "
                                             "virtualization, AMD AVIC); without it each IPI a guest sends exits "
                                             "(vm_exits.ipi). Receivers take posted interrupts either way")


@attrs.frozen
class TlbLevelConfig:
    """``[[tlb.levels]]``: one set-associative TLB array."""

    name: str = option(help="name used in metrics: tlb.<name>.hits", check=nonempty_name)
    sets: int = option(help="number of sets (1 = fully associative)", min=1)
    ways: int = option(help="entries per set", min=1)
    policy: PluginChoice = option("lru", "replacement policy", plugin="TLB policies")
    page_sizes: tuple[int, ...] = option([PAGE_4K], "page sizes this array holds", size=True,
                                         check=_power_of_two_page, check_all=_distinct_sizes)
    latency: int = option(1, "cycles of a lookup in this level, used by cost models", min=0, max=1 << 32)
    side: str = option("unified", "accesses this level serves: data (read, write), instruction "
                       "(ifetch) or both", choices=("data", "instruction", "unified"))
    shared: bool = option(False, "one array for all cores (machine.cores) instead of one per core")

    @property
    def entries(self) -> int:
        return self.sets * self.ways


@attrs.frozen
class TlbConfig:
    """``[tlb]``: the TLB hierarchy, looked up level by level."""

    levels: tuple[TlbLevelConfig, ...] = option([], "TLB levels in lookup order; a miss in the last is a walk")
    tagged: bool = option(True, "entries are tagged by VPID and PCID/ASID; if false, a context "
                          "switch flushes the VM's entries and a VM switch flushes all")
    inclusion: str = option("non-inclusive", "fill policy between levels (see docs/architecture.md)",
                            choices=("non-inclusive", "inclusive", "exclusive"))

    def split_level(self) -> tuple[int, TlbLevelConfig] | None:
        """The first level (index, level) serving only data or only instruction accesses, or
        None. The two kinds of access then look up different levels, which a loop compiled
        for the TLB's shape cannot run (slatframe.engine.shape)."""
        return next(((i, lv) for i, lv in enumerate(self.levels) if lv.side != "unified"), None)


def _fraction_sum(value: "ContentConfig") -> None:
    if value.zero_fraction + value.pool_fraction > 1:
        raise ValueError("zero_fraction + pool_fraction must be at most 1")


@attrs.frozen
class ContentConfig:
    """``vms[].content``: the synthetic content model of a VM's memory (without an image)."""

    zero_fraction: float = option(1.0, "fraction of pages that are zero-filled", min=0.0, max=1.0)
    pool_fraction: float = option(0.0, "fraction of pages drawn from a pool shared by every VM "
                                  "(a common OS image)", min=0.0, max=1.0)
    pool_pages: int = option(4096, "distinct pages in the shared pool", min=1)

    def __attrs_post_init__(self) -> None:
        _fraction_sum(self)


@attrs.frozen
class VmConfig:
    """``[[vms]]``: one virtual machine (under ``native``: one OS on bare metal)."""

    name: str = option(help="name used in messages and per-VM metrics", check=nonempty_name)
    memory: int = option(1 << 30, "guest physical memory", size=True, min=PAGE_4K, max=PHYS_LIMIT)
    guest_page_size: int = option(PAGE_4K, "page size the guest OS maps data with", size=True,
                                  check=_power_of_two_page)
    host_page_size: int = option(PAGE_4K, "page size the hypervisor backs guest memory with",
                                 size=True, check=_power_of_two_page)
    image: str | None = option(None, "a memory image, resident from the start (as after a snapshot restore): "
                                     "page i of the file is guest-physical page i (a short last page is "
                                     "zero-filled); the guest kernel allocates above it, so vms[].memory must "
                                     "be larger; contents are read only when a dedup strategy runs", path=True)
    content: ContentConfig = option(ContentConfig(), "synthetic content model (when there is no image)")
    vcpus: int = option(1, "virtual CPUs; guest thread t of the VM runs on its vCPU t mod vcpus, and the "
                           "scheduler (machine.scheduler) places vCPUs on cores", min=1, max=MAX_CORES)


@attrs.frozen(kw_only=True)
class ConsolidationConfig:
    """``[consolidation]``: how many sessions a host fits, from the run's cycles per access
    (see docs/cost-models.md)."""

    cores: int = option(help="host cores that run sessions", min=1, max=1 << 20)
    core_ghz: float = option(help="core clock in GHz (cycles per nanosecond)", min=0.001, max=1000.0)
    memory: int = option(help="host memory for sessions and the hypervisor", size=True, min=PAGE_4K)
    reserved_memory: int = option(0, "host memory the hypervisor and management OS keep", size=True, min=0)
    cpu_target: float = option(1.0, "fraction of each core sessions may use", min=0.01, max=1.0)
    session_accesses_per_s: float = option(help="memory accesses per second one session issues", min=1.0,
                                           max=1e15)
    work_per_access: float = option(help="cycles of work per access besides the memory access and "
                                    "its translation (the session's own computation)", min=0.0, max=1e15)
    session_memory: int = option(help="resident memory of one session before dedup", size=True, min=PAGE_4K)
    run_sessions: int = option(1, "sessions the run's VMs stand for: the host memory its translation tables "
                                  "held at their peak (every <name>.table_bytes.peak gauge: shadow tables, "
                                  "second-level tables) is charged to them in equal shares", min=1, max=1 << 40)


@attrs.frozen(kw_only=True)
class Config:
    """A whole experiment."""

    experiment: ExperimentConfig = option(ExperimentConfig(), "naming, seed, engine")
    machine: MachineConfig = option(MachineConfig(), "SLAT scheme and formats")
    tlb: TlbConfig = option(TlbConfig(), "TLB hierarchy")
    walk_caches: tuple[PluginChoice, ...] = option(
        [], "walk caches: paging-structure caches, page walk caches, nested TLBs",
        plugin="walk caches", name_key="type")
    vms: tuple[VmConfig, ...] = option([], "virtual machines; one named vm0 if absent")
    workload: PluginChoice = option(help="trace source", plugin="workloads", name_key="source")
    dedup: PluginChoice | None = option(None, "page deduplication strategy (none if absent)",
                                        plugin="dedup strategies", name_key="strategy")
    cost: PluginChoice = option("fixed", "cost model", plugin="cost models", name_key="model")
    consolidation: ConsolidationConfig | None = option(None, "sessions per host from the run's costs "
                                                       "(none if absent)")

    def to_dict(self) -> dict[str, Any]:
        """Plain data that loads back to an equal config (stored in every result)."""
        return to_plain(self)


REFUSED_INPUTS = """## Inputs that are refused

`slatframe validate`, `run` and `sweep` resolve the whole config before anything runs, and
refuse a bad input with one sentence (`slatframe: error: FILE: KEY.PATH = VALUE is not
allowed: ...`, exit status 2) naming the key path and what is allowed; whatever `run`
would refuse, `validate` refuses too (it also reads the workload's first 4,096 records,
through the workload and the checks a run uses, so a damaged trace file or a bad first
record is refused there with the run's sentence: docs/trace-format.md). A valid config's
`validate` also prints the memory estimate its run is checked against (for a sweep, each
point is checked as it is planned); the result records it beside the run's peak resident
set (`memory`). Refused:

- a config file that does not exist, is a folder, is not UTF-8 text or not TOML;
- a key that is not known here, a required key that is missing, a value of the wrong
  type: a string, a boolean or a table where a number is expected (booleans are not
  numbers), a float where an integer is expected;
- a float that is NaN or infinite (no option here allows them), so every number in a
  result is finite and the result is strict JSON;
- an integer or size outside a key's range, and always outside int64 (-2^63 to 2^63-1):
  for example a negative `experiment.seed`, `machine.host_memory` or `vms[].memory` above
  4096T (52-bit physical addresses), `[consolidation]` values beyond what a host can be
  (`cores` > 2^20, `core_ghz` > 1000, `session_accesses_per_s` or `work_per_access` > 1e15);
- workload addresses beyond the guest format's virtual address width (48 bits for
  `x86-64`, 57 for `x86-64-la57`): `base` + `footprint` (or + `working_set`), and a
  `sequential` stream whose `accesses` x `stride` reaches 2^63;
- a workload or mix part whose `vm` index is not a configured VM, a `mix` with no parts,
  more than 65536 VMs (trace records carry a 16-bit VM index);
- an empty or duplicate `tlb.levels[].name` or `vms[].name`, two walk caches with the
  same name (their counters would merge), an empty walk-cache name (`pwc`, `nested-tlb`),
  and a TLB level, VM or walk-cache name with a dot: names are parts of metric paths
  joined by dots (`vm.<name>.asid.<n>.accesses`), so VMs `a` and `a.asid.0` would share
  metrics;
- TLB `page_sizes` that are empty, repeated, or not a leaf size of the configured
  formats (`4K`, `2M`, `1G` on every built-in format); the message lists the sizes;
- a walk cache of a level its dimension's format does not have (`psc` `level = 5` or
  `pwc` `levels = [5]` on a 4-level format; a dimension the scheme lacks is allowed, so
  one config can sweep `machine.slat`);
- `vms[].guest_page_size` that the guest format does not map, `vms[].host_page_size` that
  the second-level format does not map or, under a scheme that backs guest memory without
  one (`shadow`: its tables map host pages in the guest format), that the guest format
  does not map (`8K` is refused everywhere), and a `host_page_size` other than the
  default `4K` under a scheme with no hypervisor (`native`), where it would mean nothing;
- a `cost.exit_work` reason that neither a registered SLAT scheme nor the core counts
  (`pt_wirte`, with a "did you mean"; schemes say which reasons they count,
  `SlatSchemeRecord.exit_reasons`, the core counts `ipi`, `remote_flush` and `hypercall`
  on several vCPUs, and a reason of any registered scheme is allowed so that one config can sweep
  `machine.slat`), and a `cache-aware` cache size that is not a whole number of sets of
  its ways x 64-byte lines (`l1d_size = 256` with 8 ways);
- an input file (`workload.path`, `vms[].image`) that does not exist or is a folder, and
  an `experiment.plugins` entry that does not exist, is a folder, or is not a regular
  file (`/dev/null`);
- an output file (`walk-trace`'s `path`) that is a folder, or whose nearest existing
  folder is a file or takes no new file (refused before the run, not when it ends);
- a `[dedup]` strategy under a scheme with no hypervisor backing guest memory (`native`);
- `machine.host_format` under a scheme without second-level tables (`native`, `shadow`),
  a VM larger than the second-level format's input addresses reach (`vms[].memory` above
  512G under a 39-bit ARM stage-2 format), guest or host memory wider than the physical
  addresses its format's entries hold (above 4G under `x86-32`), a page-table format
  whose factory fails, returns something other than a `slatframe.paging.PageTableFormat`,
  or describes a geometry that cannot be walked (a table below the root that is not one
  4K page, a root above 16 pages, entries other than 4 or 8 bytes);
- `experiment.engine = "compiled"` for a config the compiled tier cannot run exactly
  (docs/architecture.md, "Which tier runs a config"), and an `experiment.name` that
  `run` could not use as a result file name (`validate` only);
- a config whose estimated memory (TLB and walk-cache arrays, the cost model's data
  caches, simulated-memory bookkeeping, the workload's arrays, records in flight; see
  `slatframe/footprint.py`) exceeds the memory the run may use: the tightest of the
  memory available on this machine (`MemAvailable`), what this process may still map
  under its `RLIMIT_AS` (`ulimit -v`, as batch schedulers set) and `RLIMIT_DATA`
  (`ulimit -d`), and what is left under its cgroup's memory limit (`memory.max`, or v1's
  `memory.limit_in_bytes`, of its group or any above it); the message names the key
  that dominates and the limit. The environment variable `SLATFRAME_MEMORY_LIMIT` (a
  size such as `"8G"`) sets another limit instead. The estimate is of the order of
  magnitude: an allocation that fails anyway ends the run with one sentence (exit 2).
"""

# -- overrides -------------------------------------------------------------------

_SEGMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*)((?:\[\d+\])*)$")


def key_path(key: str) -> list[str | int] | None:
    """``"tlb.levels[1].ways"`` -> ``["tlb", "levels", 1, "ways"]``; None if it is not a key path."""
    keys: list[str | int] = []
    for part in key.strip().split("."):
        m = _SEGMENT.match(part.strip())
        if not m:
            return None
        keys.append(m.group(1))
        keys.extend(int(i) for i in re.findall(r"\[(\d+)\]", m.group(2)))
    return keys


def shown(text: str) -> str:
    """``text`` as an error message shows it: as it is, or quoted with escapes when it
    holds a newline or another character that does not print."""
    return text if text.isprintable() else repr(text)


def parse_override(text: str) -> tuple[list[str | int], Any]:
    """Split ``"tlb.levels[1].ways=8"`` into a key path and a TOML value."""
    if "=" not in text:
        raise ConfigError(f"--set {shown(text)}: expected KEY.PATH=VALUE, for example tlb.levels[0].ways=8.")
    key, raw = text.split("=", 1)
    keys = key_path(key)
    if keys is None:
        raise ConfigError(f"--set {shown(text)}: {key!r} is not a key path such as tlb.levels[0].ways.")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word is a string: --set machine.slat=shadow
    return keys, value


def _name_key(keys: list[str | int]) -> str:
    """The key naming the plugin a (sub)table of ``keys[0]`` refers to: ``model`` for
    ``cost``, ``type`` for ``walk_caches[i]``, ... and ``name`` below the top level."""
    field = next((f for f in attrs.fields(Config) if f.name == keys[0]), None)
    return field.metadata.get("name_key", "name") if field is not None else "name"


def apply_override(raw: dict[str, Any], keys: list[str | int], value: Any, text: str) -> None:
    """Set ``value`` at ``keys`` inside the raw TOML data, creating tables as needed. A
    plugin written as its name becomes a table when a key below it is set:
    ``cost = "cache-aware"`` with ``cost.preset=NAME`` -> ``{model = "cache-aware", preset = NAME}``."""
    node: Any = raw
    for i, key in enumerate(keys[:-1]):
        nxt = keys[i + 1]
        top = i == 0 or (i == 1 and isinstance(key, int))  # cost, walk_caches[0]: their own name key
        if isinstance(key, int):
            if not isinstance(node, list) or key >= len(node):
                raise ConfigError(f"--set {shown(text)}: index [{key}] does not exist in the config.")
            if isinstance(node[key], str) and not isinstance(nxt, int):
                node[key] = {_name_key(keys) if top else "name": node[key]}
            node = node[key]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"--set {shown(text)}: {key!r} is inside a value that is not a table.")
        if key not in node:
            node[key] = [] if isinstance(nxt, int) else {}
        elif isinstance(node[key], str) and not isinstance(nxt, int):
            node[key] = {_name_key(keys) if top else "name": node[key]}  # "lru" -> {name = "lru", ...}
        node = node[key]
    last = keys[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last >= len(node):
            raise ConfigError(f"--set {shown(text)}: index [{last}] does not exist in the config.")
    elif not isinstance(node, dict):
        raise ConfigError(f"--set {shown(text)}: {keys[-2]!r} is not a table.")
    node[last] = value


# -- loading -------------------------------------------------------------------------


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; a syntax error names the file and the line."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file does not exist.") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: it is a folder, not a config file.") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: byte {exc.start} is not UTF-8 text (a TOML file is UTF-8)."
                          ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: config file cannot be read ({exc.strerror or exc}).") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}.") from None


def plugin_files(raw: dict[str, Any], base_dir: Path, where: str) -> list[Path]:
    """The plugin files named in ``[experiment] plugins``, resolved against ``base_dir``."""
    files = raw.get("experiment", {}).get("plugins", []) if isinstance(raw.get("experiment"), dict) else []
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise ConfigError(f"{where}: experiment.plugins = {files!r} is not allowed: expected a list of file paths.")
    out = []
    for f in files:
        p = Path(f) if Path(f).is_absolute() else base_dir / f
        problem = _plugin_file_problem(p)
        if problem:
            raise ConfigError(f"{where}: experiment.plugins names {f!r}, which {problem}.")
        out.append(p)
    return out


def _plugin_file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a plugin file (None if it is a regular file)."""
    try:
        if path.is_file():
            return None
        if path.is_dir():
            return f"is a folder ({path}); a plugin is a Python file"
        if path.exists():
            return f"is not a regular file ({path}); a plugin is a Python file"
    except (OSError, ValueError) as exc:
        return f"cannot be a file name ({exc.__class__.__name__})"
    return f"does not exist (looked in {path.parent})"


def load_config(path: str | Path, overrides: Iterable[str] = (), registry: Any = None) -> tuple[Config, Any]:
    """Read, override, validate and resolve a config file.

    Returns the config and the registry used to resolve its plugin names (built with the
    config's plugin files when ``registry`` is None).
    """
    path = Path(path)
    raw = read_toml(path)
    for text in overrides:
        keys, value = parse_override(text)
        apply_override(raw, keys, value, text)
    return config_from_dict(raw, where=str(path), base_dir=path.parent, registry=registry)


def config_from_dict(raw: dict[str, Any], *, where: str = "<config>", base_dir: Path | None = None,
                     registry: Any = None, output_dir: Path | None = None,
                     output_prefix: str = "") -> tuple[Config, Any]:
    """Build a :class:`Config` from plain TOML-like data; with ``output_dir``, every output
    file an option names is written there as ``output_prefix`` + its file name (a sweep
    point's own files)."""
    from .registry import Registry

    base_dir = base_dir or Path.cwd()
    if registry is None:
        registry = Registry(files=plugin_files(raw, base_dir, where))
    raw = dict(raw)
    raw.setdefault("vms", [{"name": "vm0"}])
    ctx = BuildContext(where=where, registry=registry, base_dir=base_dir, output_dir=output_dir,
                       output_prefix=output_prefix)
    config = build(Config, raw, "", ctx)
    check_config(config, ctx)
    return config, registry


def check_config(config: Config, ctx: BuildContext) -> None:
    """Checks that span several keys (names unique, sizes supported by the formats)."""
    if not config.tlb.levels:
        ctx.fail("tlb.levels", "is empty: configure at least one [[tlb.levels]] table.")
    seen: dict[str, int] = {}
    for i, level in enumerate(config.tlb.levels):
        if level.name in seen:
            ctx.fail(f"tlb.levels[{i}].name", f"= {level.name!r} is not allowed: tlb.levels[{seen[level.name]}] has that name already.")
        seen[level.name] = i
    if not config.vms:
        ctx.fail("vms", "is empty: configure at least one [[vms]] table.")
    if len(config.vms) > MAX_VMS:
        ctx.fail("vms", f"has {len(config.vms)} VMs, which is not allowed: trace records carry a 16-bit VM index, "
                        f"so at most {MAX_VMS}.")
    names: dict[str, int] = {}
    for i, vm in enumerate(config.vms):
        if vm.name in names:
            ctx.fail(f"vms[{i}].name", f"= {vm.name!r} is not allowed: vms[{names[vm.name]}] has that name already.")
        names[vm.name] = i
    scheme = ctx.registry.get("SLAT schemes", config.machine.slat.name)
    if config.dedup is not None and not scheme.backs_guest_memory:
        ctx.fail("dedup", f"= {config.dedup.name!r} is not allowed: SLAT scheme {config.machine.slat.name!r} has no "
                          "hypervisor backing guest memory, whose pages dedup merges; use a nested or shadow scheme.")
    if scheme.host_format is None and config.machine.host_format is not None:
        ctx.fail("machine.host_format", f"= {config.machine.host_format.name!r} is not allowed: SLAT scheme "
                                        f"{config.machine.slat.name!r} has no second-level tables; remove the key.")
    guest_fmt = resolved_format(config, "guest", ctx.registry)
    host_fmt = resolved_format(config, "host", ctx.registry)
    for i, vm in enumerate(config.vms):
        _check_vm_page_sizes(config, ctx, i, scheme, guest_fmt, host_fmt)
        if vm.memory % max(vm.guest_page_size, vm.host_page_size):
            ctx.fail(f"vms[{i}].memory", f"= {format_size(vm.memory)!r} is not allowed: it must be a multiple of the page sizes.")
    if host_fmt is not None:
        for i, vm in enumerate(config.vms):
            if vm.memory > 1 << host_fmt.va_bits:
                ctx.fail(f"vms[{i}].memory", f"= {format_size(vm.memory)!r} is not allowed: the second-level format "
                                             f"{host_fmt.name!r} translates {host_fmt.va_bits}-bit guest-physical "
                                             f"addresses, so a VM has at most {format_size(1 << host_fmt.va_bits)}.")
    _check_physical_widths(config, ctx, guest_fmt, host_fmt)
    _check_page_sizes(config, ctx, guest_fmt, host_fmt)
    _check_walk_cache_names(config, ctx)
    facts = config_facts(config, ctx.registry)
    for path, choice in _plugin_choices(config):
        check_plugin_options(path, choice, facts, ctx)
    vm = getattr(config.workload.options, "vm", None)
    if isinstance(vm, int) and vm >= len(config.vms):
        ctx.fail("workload.vm", f"= {vm} is not allowed: VM indices go from 0 to {len(config.vms) - 1} "
                                f"(the config has {len(config.vms)} VM(s)).")
    check_consolidation(config, ctx)
    split = config.tlb.split_level()
    if config.experiment.loop in ("shaped", "exact") and split is not None:
        i, lv = split
        ctx.fail("experiment.loop", f"= {config.experiment.loop!r} is not allowed: tlb.levels[{i}] ({lv.name!r}) "
                                    f"serves {lv.side} accesses only, and a loop compiled for the TLB needs every "
                                    "level to serve both; use 'auto' or 'generic'.")
    accesses = getattr(config.workload.options, "accesses", None)
    if config.experiment.warmup and isinstance(accesses, int) and config.experiment.warmup >= accesses:
        ctx.fail("experiment.warmup", f"= {config.experiment.warmup} is not allowed: the workload has "
                                      f"{accesses} accesses (workload.accesses); the warmup must end before them.")
    from .footprint import check_footprint

    check_footprint(config, ctx, guest_fmt, host_fmt)


def config_facts(config: Config, registry: Any) -> ConfigFacts:
    """What plugin options' ``problems`` check their values against."""
    scheme = registry.get("SLAT schemes", config.machine.slat.name)
    return ConfigFacts(vms=len(config.vms), guest_format=resolved_format(config, "guest", registry),
                       host_format=resolved_format(config, "host", registry),
                       exit_reasons=_exit_reasons(scheme, registry), cores=config.machine.cores,
                       vcpus=tuple(vm.vcpus for vm in config.vms))


def check_plugin_options(path: str, choice: PluginChoice, facts: ConfigFacts, ctx: BuildContext) -> None:
    """The first problem the options of the plugin ``choice`` at ``path`` report, as a
    config error."""
    problems = getattr(choice.options, "problems", None)
    for key, message in (problems(facts) if callable(problems) else ()):
        ctx.fail(f"{path}.{key}" if key else path, message)


def check_consolidation(config: Config, ctx: BuildContext) -> None:
    """The ``[consolidation]`` checks that span keys."""
    c = config.consolidation
    if c is not None and c.reserved_memory >= c.memory:
        ctx.fail("consolidation.reserved_memory", f"= {format_size(c.reserved_memory)!r} is not allowed: it must be "
                                                  f"less than consolidation.memory ({format_size(c.memory)}).")


def _exit_reasons(scheme: Any, registry: Any) -> frozenset[str] | None:
    """Every exit reason a registered SLAT scheme declares and those the core counts on a
    machine of several vCPUs, or None if ``scheme`` declares none."""
    from .coherence import EXIT_REASONS

    if scheme.exit_reasons is None:
        return None
    return frozenset(r for provided in registry.records["SLAT schemes"].values()
                     for r in (provided.record.exit_reasons or ())) | frozenset(EXIT_REASONS)


def _plugin_choices(config: Config) -> list[tuple[str, PluginChoice]]:
    """Every resolved plugin reference of ``config`` with its key path."""
    out = [("machine.slat", config.machine.slat), ("machine.scheduler", config.machine.scheduler),
           ("workload", config.workload), ("cost", config.cost)]
    out += [(f"walk_caches[{i}]", c) for i, c in enumerate(config.walk_caches)]
    if config.dedup is not None:
        out.append(("dedup", config.dedup))
    return out


def _check_vm_page_sizes(config: Config, ctx: BuildContext, i: int, scheme: Any, guest_fmt: Any,
                         host_fmt: Any) -> None:
    """``vms[i]``'s page sizes are leaf sizes of the tables that map them: the guest's of
    the guest format; the host's of the second-level format or, for a scheme that backs
    guest memory without one (shadow tables map gVA -> hPA in the guest format), of the
    guest format. A scheme with no hypervisor has no host pages: only the default is
    allowed there."""
    vm, slat = config.vms[i], config.machine.slat.name
    if not scheme.backs_guest_memory:
        if vm.host_page_size != PAGE_4K:
            ctx.fail(f"vms[{i}].host_page_size", f"= {format_size(vm.host_page_size)!r} is not allowed: SLAT scheme "
                                                 f"{slat!r} has no hypervisor backing guest memory with host pages, "
                                                 "so the key means nothing there; remove it.")
        host_fmt = None
    elif host_fmt is None:
        host_fmt = guest_fmt
    for key, fmt in (("guest_page_size", guest_fmt), ("host_page_size", host_fmt)):
        size = getattr(vm, key)
        if fmt is None or size in fmt.leaf_sizes:
            continue
        allowed = ", ".join(format_size(s) for s in fmt.leaf_sizes)
        why = (f" (SLAT scheme {slat!r} has no second-level format: its tables map host pages in the guest "
               "format)" if key == "host_page_size" and fmt is guest_fmt else "")
        ctx.fail(f"vms[{i}].{key}", f"= {format_size(size)!r} is not allowed: format {fmt.name!r} maps "
                                    f"{allowed}{why}.")


def _check_physical_widths(config: Config, ctx: BuildContext, guest_fmt: Any, host_fmt: Any) -> None:
    """Every physical address a table may hold fits its format's frame mask: guest
    memory in the guest format's entries, host memory in the second-level format's (or,
    without one, in the first-dimension format's: native and shadow tables map host memory)."""
    if guest_fmt is None:
        return
    for i, vm in enumerate(config.vms):
        if vm.memory > 1 << guest_fmt.pa_bits:
            ctx.fail(f"vms[{i}].memory", f"= {format_size(vm.memory)!r} is not allowed: the guest format "
                                         f"{guest_fmt.name!r} holds {guest_fmt.pa_bits}-bit physical addresses, so "
                                         f"a VM has at most {format_size(1 << guest_fmt.pa_bits)}.")
    fmt = host_fmt or guest_fmt
    if config.machine.host_memory > 1 << fmt.pa_bits:
        ctx.fail("machine.host_memory", f"= {format_size(config.machine.host_memory)!r} is not allowed: the format "
                                        f"{fmt.name!r} maps host memory with {fmt.pa_bits}-bit physical addresses, so "
                                        f"the host has at most {format_size(1 << fmt.pa_bits)}.")


def _check_page_sizes(config: Config, ctx: BuildContext, *formats: Any) -> None:
    """Every TLB page size is a leaf size of a configured format."""
    supported = sorted({size for fmt in formats if fmt is not None for size in fmt.leaf_sizes})
    names = " and ".join(repr(fmt.name) for fmt in formats if fmt is not None)
    for i, level in enumerate(config.tlb.levels):
        for j, size in enumerate(level.page_sizes):
            if size not in supported:
                ctx.fail(f"tlb.levels[{i}].page_sizes[{j}]",
                         f"= {format_size(size)!r} is not allowed: the configured formats ({names}) map "
                         f"{', '.join(format_size(s) for s in supported)}.")


def cache_name(options: Any) -> str | None:
    """The name a walk cache's counters carry (``options.cache_name()`` or ``options.name``)."""
    named = getattr(options, "cache_name", None)
    return named() if callable(named) else getattr(options, "name", None)


def _check_walk_cache_names(config: Config, ctx: BuildContext) -> None:
    seen: dict[str, int] = {}
    for i, choice in enumerate(config.walk_caches):
        name = cache_name(choice.options)
        if not isinstance(name, str):
            continue
        if name in seen:
            ctx.fail(f"walk_caches[{i}].name", f"= {name!r} is not allowed: walk_caches[{seen[name]}] has that "
                                               "name already, and each walk cache needs its own counters.")
        seen[name] = i


def resolved_format(config: Config, which: str, registry: Any):
    """The :class:`slatframe.paging.PageTableFormat` of the guest or host side (None if the
    scheme has no host side)."""
    scheme = registry.get("SLAT schemes", config.machine.slat.name)
    choice = getattr(config.machine, f"{which}_format")
    if choice is None:
        default = scheme.guest_format if which == "guest" else scheme.host_format
        if default is None:
            return None
        record = registry.get("page-table formats", default)
        choice = PluginChoice(default, record.options())
    try:
        record = registry.get("page-table formats", choice.name)
    except KeyError:
        raise PluginError(f"SLAT scheme {config.machine.slat.name!r} uses the {which} format {choice.name!r}, "
                          "which no plugin registers.") from None
    try:
        fmt = record.factory(choice.options)
    except (SlatframeError, KeyboardInterrupt):
        raise
    except Exception as exc:
        raise PluginError(f"page-table format {choice.name!r}: its factory raised {type(exc).__name__}: "
                          f"{exc}.") from None
    if not isinstance(fmt, PageTableFormat):
        raise PluginError(f"page-table format {choice.name!r}: its factory returned a {type(fmt).__name__}, "
                          "not a slatframe.paging.PageTableFormat.")
    return fmt
