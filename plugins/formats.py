"""x86 radix page-table formats: x86-64 (4-level), LA57 (5-level), 32-bit (2-level, 4-byte
entries), Intel EPT, AMD NPT.

Bit layouts (Intel SDM Vol. 3A sec. 4.5 "4-level and 5-level paging" and sec. 29.3
"The extended page table mechanism"; AMD APM Vol. 2 sec. 5.3 "Long-mode page
translation" and sec. 15.25 "Nested paging"):

- x86-64 / LA57 / NPT entries: bit 0 P(resent), 1 R/W, 2 U/S, 5 A(ccessed), 6 D(irty,
  leaves), 7 PS (leaf in a PDPTE or PDE), bits 51:12 the frame. NPT uses the long-mode
  format unchanged, and nested walks are user-mode accesses, so U/S is set everywhere.
- EPT entries: bit 0 R, 1 W, 2 X, bits 5:3 memory type (leaves; 6 = write-back),
  7 leaf ("page size"), 8 accessed and 9 dirty (only when EPTP[6] enables them),
  bits 51:12 the frame. There is no present bit: an entry is present when any of R/W/X is set.
- 32-bit paging (Intel SDM Vol. 3A sec. 4.3, CR4.PSE = 1): 4-byte entries, two levels of
  10 index bits (a page directory and page tables, each 1024 entries in one 4K page), 32-bit
  linear addresses; the same low flags as long mode, PS (bit 7) marks a 4M page in a PDE,
  bits 31:12 the frame (31:22 for a 4M page; PSE-36's high address bits 20:13 and PAT are
  not modelled, so physical addresses are 32 bits).
"""
from __future__ import annotations

import attrs

from slatframe import hookimpl
from slatframe.options import option
from slatframe.paging import PageTableFormat
from slatframe.records import PageTableFormatRecord

P, RW, US = 1 << 0, 1 << 1, 1 << 2
ACCESSED, DIRTY = 1 << 5, 1 << 6
EPT_R, EPT_W, EPT_X = 1 << 0, 1 << 1, 1 << 2
EPT_MEMTYPE_WB = 6 << 3
EPT_ACCESSED, EPT_DIRTY = 1 << 8, 1 << 9


def long_mode(name: str, levels: int) -> PageTableFormat:
    """The AMD64 long-mode / Intel IA-32e format with ``levels`` levels."""
    return PageTableFormat(name=name, levels=levels, leaf_levels=(1, 2, 3), present_mask=P,
                           write_flag=RW, accessed_flag=ACCESSED, dirty_flag=DIRTY,
                           table_bits=P | US, leaf_bits=P | US)


@attrs.frozen
class LevelsOptions:
    levels: int = option(4, "number of table levels (4, or 5 for 57-bit addresses)", choices=None,
                         min=4, max=5)


def make_x86_32(options) -> PageTableFormat:
    return PageTableFormat(name="x86-32", levels=2, index_bits=(10, 10), entry_bytes=4, leaf_levels=(1, 2),
                           present_mask=P, frame_mask=0xFFFFF000, write_flag=RW, accessed_flag=ACCESSED,
                           dirty_flag=DIRTY, table_bits=P | US, leaf_bits=P | US)


def make_x86_64(options) -> PageTableFormat:
    return long_mode("x86-64", 4)


def make_la57(options) -> PageTableFormat:
    return long_mode("x86-64-la57", 5)


def make_npt(options: LevelsOptions) -> PageTableFormat:
    return long_mode("npt", options.levels)


def make_ept(options: LevelsOptions) -> PageTableFormat:
    return PageTableFormat(name="ept", levels=options.levels, leaf_levels=(1, 2, 3),
                           present_mask=EPT_R | EPT_W | EPT_X, write_flag=EPT_W,
                           accessed_flag=EPT_ACCESSED, dirty_flag=EPT_DIRTY,
                           table_bits=EPT_R | EPT_X, leaf_bits=EPT_R | EPT_X | EPT_MEMTYPE_WB)


@hookimpl
def slatframe_page_table_formats():
    return [
        PageTableFormatRecord(name="x86-64", summary="x86-64 4-level paging, 48-bit VA, 4K/2M/1G leaves",
                              factory=make_x86_64),
        PageTableFormatRecord(name="x86-32", summary="x86 32-bit paging: 2 levels, 4-byte entries, 4K/4M pages",
                              factory=make_x86_32),
        PageTableFormatRecord(name="x86-64-la57", summary="x86-64 5-level paging (LA57), 57-bit VA",
                              factory=make_la57),
        PageTableFormatRecord(name="ept", summary="Intel EPT, 4 or 5 levels, R/W/X bits, optional A/D",
                              factory=make_ept, options=LevelsOptions),
        PageTableFormatRecord(name="npt", summary="AMD nested paging: the long-mode format for gPA->hPA",
                              factory=make_npt, options=LevelsOptions),
    ]
