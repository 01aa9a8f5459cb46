"""The PySide6 shell: a thin layer over desktop.core."""
