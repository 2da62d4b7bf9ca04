"""The line-level profile (benchmarks/lines.py) maps perf samples to lines through
addr2line's inlined frames: its parsing and its shares are checked here on output
written by hand, so that the benchmark (which needs perf and compiles for a minute) cannot
rot into printing other lines than its samples fell on."""
from __future__ import annotations

import ast
import collections
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is not an installed package

from benchmarks.lines import debug_copy, frames, instructions, shares, short_name, stack_share  # noqa: E402
from slatframe.engine.codegen import module_source  # noqa: E402
from slatframe.testing import build, tiny_config  # noqa: E402

RUN = "_ZN7lines_x3runB2v1B54c8tJTC_2fWwGaE5ArrayIxLi1E1C7mutable7alignedE"
WALK = "_ZN7lines_x4walkB3v12B54c8tJTC_2fWwGaE5ArrayIxLi1E"
LOAD = "_ZN9slatframe6engine7walklib10entry_loadB3v99E"
# addr2line -a -f -i: per address the address, then (function, file:line) innermost first
OUTPUT = f"""0x0000000000000010
{LOAD}
/cache/lines_x.py:819
{WALK}
/cache/lines_x.py:1034
{RUN}
/cache/lines_x.py:1344
0x0000000000000020
{RUN}
/cache/lines_x.py:1366 (discriminator 2)
0x0000000000000030
{RUN}
/cache/lines_x.py:?
"""


def test_frames_reads_each_address_chain_innermost_first():
    chains = frames(OUTPUT)
    assert sorted(chains) == [0x10, 0x20, 0x30]
    assert [line for _, line in chains[0x10]] == [819, 1034, 1344]
    assert chains[0x20] == [(RUN, 1366)]  # a discriminator is not part of the line
    assert chains[0x30] == [(RUN, 0)]  # no line: 0


def test_short_name_is_the_last_name_before_the_abi_tags():
    assert short_name(RUN) == "run"
    assert short_name(WALK) == "walk"
    assert short_name(LOAD) == "entry_load"
    assert short_name("memcpy") == "memcpy"


def test_shares_charge_each_sample_to_its_innermost_line_and_to_walk_or_run():
    samples = collections.Counter({0x10: 6, 0x20: 3, 0x30: 1, 0x40: 2})  # 0x40: outside run, no frames
    inner, part = shares(samples, frames(OUTPUT), total=12)
    assert dict(inner) == {819: 6 / 12, 1366: 3 / 12, 0: 1 / 12}
    by_part = {k: (share, dict(under)) for k, share, under in part}
    # the load inlined into walk() counts for walk's line, not for run's line that called walk
    assert by_part == {("walk", 1034): (6 / 12, {819: 6 / 12}), ("run", 1366): (3 / 12, {1366: 3 / 12}),
                       ("run", 0): (1 / 12, {0: 1 / 12})}
    assert [k for k, _, _ in part] == [("walk", 1034), ("run", 1366), ("run", 0)]  # largest first


def test_the_debug_copy_gives_every_compiled_function_line_tables():
    _, registry = build(tiny_config())
    source = module_source(registry)
    copy = debug_copy(source)
    ast.parse(copy)
    assert copy.count("@njit(debug=True, boundscheck=False, ") == source.count("@njit(")
    assert "cache=True" not in copy  # (a function loaded from numba's cache keeps no object code to map)


# objdump -D -b binary output (AT&T syntax, no raw bytes), as the engine's loop is read back
LISTING = """
code.bin:     file format binary

Disassembly of section .data:

0000000000000000 <.data>:
   0:\tpush   %rbp
   1:\tmov    0x20(%rsp),%rcx
   6:\tmov    (%r9,%rcx,8),%rsi
   a:\tadd    %rsi,%rax
   d:\tmovq   $0x0,0xa0(%rsp)
  19:\tjmp    0x6
"""


def test_instructions_reads_each_offset_and_its_text():
    code = instructions(LISTING)
    assert sorted(code) == [0x0, 0x1, 0x6, 0xa, 0xd, 0x19]
    assert code[0xd] == "movq   $0x0,0xa0(%rsp)" and code[0x19] == "jmp    0x6"


def test_stack_share_counts_each_sample_for_the_instruction_before_it():
    code = instructions(LISTING)
    # samples at 0x6 (after the reload at 0x1), 0xa (after the load at 0x6), 0x19 (after the
    # store at 0xd), 0x1 (after the push), and at 0x0 (no instruction before it: not counted)
    samples = collections.Counter({0x6: 5, 0xa: 3, 0x19: 2, 0x1: 1, 0x0: 7})
    share, largest = stack_share(samples, code)
    stack_samples = 5 + 2 + 1  # mov 0x20(%rsp), movq ..(%rsp), push
    assert share == stack_samples / (5 + 3 + 2 + 1)
    assert largest == [("mov    0x20(%rsp),%rcx", 5 / 11), ("movq   $0x0,0xa0(%rsp)", 2 / 11), ("push   %rbp", 1 / 11)]
