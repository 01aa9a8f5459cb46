"""Desktop shell: runs an embedded runtime and keeps it up to date."""

__version__ = "1.0.0"
