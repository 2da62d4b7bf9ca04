"""Trace records: the chunk dtype every workload yields and the op codes.

A record is one memory access or one control event of one address space (``asid``) of
one VM (``vm``, an index into ``[[vms]]``), issued by one of its guest threads
(``thread``: 0 in traces that do not tell threads apart; the threads of one address
space share it). For control events ``vaddr`` carries the page concerned or, for a
context switch, the new asid.
"""
from __future__ import annotations

import numpy as np

TRACE_DTYPE = np.dtype([("vm", np.uint16), ("asid", np.uint16), ("op", np.uint8), ("vaddr", np.uint64),
                        ("thread", np.uint16)])

# Accesses
READ = 0
WRITE = 1
IFETCH = 2
ACCESS_OPS = (READ, WRITE, IFETCH)

# Control events (op 16 and up)
CONTEXT_SWITCH = 16  #: the VM switches to address space ``vaddr`` (a CR3 load)
MAP = 17  #: the guest kernel maps the page holding ``vaddr``
UNMAP = 18  #: the guest kernel unmaps the page holding ``vaddr`` (and invalidates it)
PROTECT = 19  #: the guest kernel write-protects the page holding ``vaddr`` (and invalidates it)
INVLPG = 20  #: the guest invalidates the TLB entry of ``vaddr``
FLUSH = 21  #: the guest flushes its whole TLB (non-global entries of its current asid)
# Process lifecycle (the guest kernel's; slatframe.guest.GuestOs)
FORK = 22  #: process ``asid`` forks; ``vaddr`` is the child's asid (copy-on-write copy of its tables)
EXEC = 23  #: process ``asid`` replaces its address space with an empty one
EXIT = 24  #: process ``asid`` exits; its address space is torn down
MAP_SHARED = 25  #: the guest kernel maps the VM's shared page for ``vaddr`` (a library, a file) in ``asid``

OP_NAMES = {READ: "read", WRITE: "write", IFETCH: "ifetch", CONTEXT_SWITCH: "context_switch",
            MAP: "map", UNMAP: "unmap", PROTECT: "protect", INVLPG: "invlpg", FLUSH: "flush",
            FORK: "fork", EXEC: "exec", EXIT: "exit", MAP_SHARED: "map_shared"}
VALID_OPS = frozenset(OP_NAMES)
PROCESS_OPS = frozenset((FORK, EXEC, EXIT, MAP_SHARED))  #: ops a SLAT scheme handles only if it says so


def make_trace(vaddr, op=READ, vm=0, asid=0, thread=0) -> np.ndarray:
    """Build a trace array from columns (scalars broadcast)."""
    vaddr = np.asarray(vaddr, dtype=np.uint64)
    out = np.empty(vaddr.shape[0], dtype=TRACE_DTYPE)
    out["vaddr"] = vaddr
    out["op"] = op
    out["vm"] = vm
    out["asid"] = asid
    out["thread"] = thread
    return out

