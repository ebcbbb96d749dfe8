"""eoaudit: audit Earth-observation image-caption datasets before release.

Typical use from Python::

    from eoaudit import read_dataset, run_audit, render_report

    dataset = read_dataset("captions.csv")
    audit = run_audit(dataset)
    print(audit.result.metrics["dataset.samples"].value)
"""

__version__ = "0.1.0"

from eoaudit.engine import Audit, AuditOptions, run_audit
from eoaudit.readers import ReadOptions, read_dataset
from eoaudit.report import render_report
from eoaudit.results import AuditResult

__all__ = [
    "Audit",
    "AuditOptions",
    "AuditResult",
    "ReadOptions",
    "__version__",
    "read_dataset",
    "render_report",
    "run_audit",
]
