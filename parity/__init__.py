"""The referee: comparisons, tolerances derived from float64, and the port checker.

The public surface, for a user checking their own port (documented in ``docs/porting.md``)::

    from parity import check_port, assert_port, PortReport, PortCheckError, SGD, Adam, AdamW

Everything else in this package is the project's own machinery (the quickstart's side-by-side runs, the
calibration of its tolerances) and may change without notice.
"""
from .checker import Check, PortCheckError, PortReport, assert_port, check_port
from .optimizers import SGD, Adam, AdamW

__all__ = ["check_port", "assert_port", "PortReport", "Check", "PortCheckError", "SGD", "Adam", "AdamW"]
