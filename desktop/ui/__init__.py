"""The Qt side of the shell. Importing it repairs a reference leak of PySide6 6.12.0 (see signals)."""

from desktop.ui.signals import repair_emit

repair_emit()
