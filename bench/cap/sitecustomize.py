"""Emulate a smaller GPU in every Python process that starts with this folder on PYTHONPATH.

When ``CAP_GIB`` is set, ``torch.cuda.mem_get_info`` reports a card of that size (what the
planner reads) and the first call also caps this process's allocator at that size with
``torch.cuda.set_per_process_memory_fraction``. Worker processes are spawned, so a cap set in the
driver would not reach them; this file does (docs: DEVICE.md, "Measuring through the product's own
worker processes"). Without ``CAP_GIB`` it does nothing and imports nothing.
"""

from __future__ import annotations

import os

_CAP = os.environ.get("CAP_GIB")

if _CAP:
    import torch

    _cap_bytes = int(float(_CAP) * 2**30)
    _real_info = torch.cuda.mem_get_info
    _capped: set[int] = set()

    def _mem_get_info(device=None):  # type: ignore[no-untyped-def]
        index = torch.cuda._utils._get_device_index(device, optional=True)
        free, total = _real_info(index)
        if total <= _cap_bytes:
            return free, total
        if index not in _capped:
            _capped.add(index)
            torch.cuda.set_per_process_memory_fraction(_cap_bytes / total, index)
        used = torch.cuda.memory_reserved(index)
        return max(_cap_bytes - used, 0), _cap_bytes

    torch.cuda.mem_get_info = _mem_get_info
