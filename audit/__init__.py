"""eoaudit: audit Earth-observation image-caption datasets before release.

Typical use from Python::

    from eoaudit import read_dataset, run_audit, render_report

    dataset = read_dataset("captions.csv")
    audit = run_audit(dataset)
    print(audit.result.metrics["dataset.samples"].value)
"""

__version__ = "0.1.0"

from eoaudit.engine import Audit, AuditOptions, run_audit  # noqa: E402
from eoaudit.readers import ReadOptions, read_dataset  # noqa: E402
from eoaudit.report import render_report  # noqa: E402
from eoaudit.results import AuditResult  # noqa: E402

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
