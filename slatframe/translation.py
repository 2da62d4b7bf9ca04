"""What translators return: translations (cached by TLBs) and TLB invalidations."""
from __future__ import annotations

from typing import NamedTuple


class Translation(NamedTuple):
    """What a walk returns and a TLB entry caches: the host page holding the address."""

    page: int  #: hPA of the base of the (TLB-entry-sized) page
    size: int  #: bytes mapped by the entry: min of the guest and host page sizes
    writable: bool  #: writes allowed by every dimension of the translation
    dirty: bool = True  #: the dirty flags are set (a write through a clean entry re-walks)


#: Who performs an invalidation (:attr:`Invalidation.by`).
GUEST = "guest"  #: the guest kernel changed a mapping of the asid: it flushes it on the CPUs that may cache it
CPU = "cpu"  #: one CPU's own flush instruction (INVLPG, a CR3 load): that core only
HYPERVISOR = "hypervisor"  #: the hypervisor changed its tables (shadow, second level): every vCPU of the VM


class Invalidation(NamedTuple):
    """TLB entries a control event removes: a ``page`` of one asid, a whole ``asid``, a
    whole ``vm``, or ``all``. ``va`` is used only for ``page``.

    ``by`` says who invalidates, which decides where and at what cost on a machine of
    several cores (docs/architecture.md, "Keeping translations coherent"): the guest
    kernel (:data:`GUEST`: a TLB shootdown to the vCPUs in the address space's
    ``mm_cpumask``), the issuing CPU alone (:data:`CPU`), or the hypervisor
    (:data:`HYPERVISOR`: a remote flush of the VM's vCPUs). ``local = False`` says the
    issuing core's own entry needs no flush because the walk in progress replaces it (a
    copy-on-write break): on one core such an invalidation does nothing. ``reason`` names
    why the hypervisor invalidates (``hypervisor.remote_flushes.<reason>``)."""

    scope: str
    vm: int = 0
    asid: int = 0
    va: int = 0
    by: str = GUEST
    local: bool = True
    reason: str = ""
