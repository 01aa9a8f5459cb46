"""A repair for PySide6 6.12.0 on Python < 3.12: `SignalInstance.emit()` returns True without a
reference of its own, so every emit from Python takes one away from True. After a few thousand
emits (a download's progress, a day of status updates) True's count reaches zero and the
interpreter aborts ("bool_dealloc: deallocating True or False").

`repair_emit()` measures whether this PySide6 does that and, only then, wraps `emit` to give the
reference back. A fixed PySide6 (or a Python whose True is immortal) is left alone.
"""

from __future__ import annotations

import ctypes
import sys
from typing import Any

from PySide6.QtCore import QObject, Signal, SignalInstance

PROBES = 64
_repaired = False


class _Probe(QObject):
    ping = Signal()


def emit_takes_a_reference() -> bool:
    """Whether `emit()` takes a reference from the bool it returns (measured, not assumed)."""
    probe = _Probe()
    before = sys.getrefcount(True) + sys.getrefcount(False)
    for _ in range(PROBES):
        probe.ping.emit()
    lost = before - (sys.getrefcount(True) + sys.getrefcount(False))
    if lost >= PROBES // 2:
        for _ in range(lost):
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(True))  # give back what the probe took
        return True
    return False


def repair_emit() -> bool:
    """Wrap SignalInstance.emit when it loses references; True if it was wrapped (once)."""
    global _repaired
    if _repaired:
        return True
    if not emit_takes_a_reference():
        return False
    original = SignalInstance.emit
    incref = ctypes.pythonapi.Py_IncRef
    incref.argtypes = [ctypes.py_object]

    def emit(self: SignalInstance, *args: Any) -> Any:
        result = original(self, *args)
        if result is True or result is False:
            incref(result)
        return result

    SignalInstance.emit = emit  # type: ignore[method-assign]
    _repaired = True
    return True
