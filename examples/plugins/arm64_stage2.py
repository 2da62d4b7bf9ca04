"""ARM64 stage-2 translation tables as an outside plugin: page-table format
``arm64-stage2`` (4K granule; option ``ipa_bits``, the input (guest-physical) address
width, default 40 as KVM's), usable as the host format under nested paging
(``machine.host_format = "arm64-stage2"``).

Descriptor layout (Arm ARM, DDI 0487, D8.3 "Translation table descriptor formats" and
D8.5 stage 2 attributes; VMSAv8-64 with a 4K granule):

- bits[1:0]: ``0b11`` a table descriptor at lookup levels 1 and 2 and a page descriptor
  at level 3; ``0b01`` a block (1G at level 1, 2M at level 2); bit 0 clear: invalid.
  So a leaf above the last level has the table bit (bit 1) clear: ``leaf_mask = 0b10``,
  ``leaf_flag = 0``, and pages carry ``page_flag = 0b10``.
- bits[5:2] MemAttr (``0b1111``: Normal, inner and outer write-back), bits[7:6] S2AP
  (bit 6 read, bit 7 write), bits[9:8] SH (``0b11`` inner shareable), bit 10 AF, set by
  hardware on first use (FEAT_HAFDBS); bits[47:12] the output address.
- No hardware dirty flag is modelled: stage-2 dirty state (DBM, bit 51) is a write
  permission the hardware grants, which this codec does not express.

Geometry (Arm ARM D8.2.4 "Concatenated translation tables" and D8.2.5; Linux
arch/arm64/include/asm/stage2_pgtable.h): KVM walks ``(ipa_bits - 8) // 9`` levels, with
up to 16 concatenated tables at the root, so the root's index is ``ipa_bits - 12 - 9 *
(levels - 1)`` bits wide. KVM's default 40-bit IPA has three levels (levels 3, 2, 1 in
slatframe's numbering) and a root of two concatenated tables (1024 entries, 8K); 39 bits
a one-page root; 36 bits a 64-entry root; 43 bits 16 tables; 44 to 48 bits four levels.
A 2D walk with a 4-level guest and a three-level stage 2 makes (4 + 1)(3 + 1) - 1 = 19
references, 14 with 2M host blocks. Both engine tiers run it: it is a plain
:class:`slatframe.paging.PageTableFormat`, no methods of its own.
"""
from __future__ import annotations

import attrs

from slatframe import hookimpl
from slatframe.options import option
from slatframe.paging import PageTableFormat
from slatframe.records import PageTableFormatRecord

VALID, TABLE = 1 << 0, 1 << 1
MEMATTR_NORMAL_WB = 0b1111 << 2
S2AP_READ, S2AP_WRITE = 1 << 6, 1 << 7
SH_INNER = 0b11 << 8
AF = 1 << 10
OUTPUT_ADDRESS = ((1 << 48) - 1) & ~((1 << 12) - 1)


@attrs.frozen
class Stage2Options:
    ipa_bits: int = option(40, "input (guest-physical) address width; KVM's default is 40", min=32, max=48)


def stage2_geometry(ipa_bits: int) -> tuple[int, ...]:
    """Index bits per level, level 1 first: 9 for each table below the root, the rest at
    the root (KVM's ``stage2_pgtable_levels(ipa) = ARM64_HW_PGTABLE_LEVELS(ipa - 4)``)."""
    levels = (ipa_bits - 8) // 9
    return (9,) * (levels - 1) + (ipa_bits - 12 - 9 * (levels - 1),)


def make_stage2(options: Stage2Options) -> PageTableFormat:
    bits = stage2_geometry(options.ipa_bits)
    return PageTableFormat(
        name="arm64-stage2", levels=len(bits), index_bits=bits, leaf_levels=tuple(range(1, min(3, len(bits)) + 1)),
        present_mask=VALID,
        frame_mask=OUTPUT_ADDRESS,
        leaf_mask=TABLE, leaf_flag=0, page_flag=TABLE, write_flag=S2AP_WRITE, accessed_flag=AF, dirty_flag=0,
        table_bits=VALID | TABLE, leaf_bits=VALID | MEMATTR_NORMAL_WB | S2AP_READ | SH_INNER)


@hookimpl
def slatframe_page_table_formats():
    return [PageTableFormatRecord(name="arm64-stage2", summary="ARM64 stage 2, 4K granule, 32- to 48-bit IPA",
                                  factory=make_stage2, options=Stage2Options)]
