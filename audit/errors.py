"""Exceptions raised by eoaudit.

Every error a user can cause derives from :class:`EoauditError`. The CLI turns
each one into a single line on stderr and exit code 2, so a message must name
the file, row or value at fault and say what to do about it.
"""


class EoauditError(Exception):
    """Base class of all errors that eoaudit raises on purpose."""


class InputError(EoauditError, ValueError):
    """A dataset, rules file or option value that cannot be used as given."""


class UsageError(EoauditError, ValueError):
    """Options that contradict each other or name something that does not exist."""


class MissingDependencyError(EoauditError, ImportError):
    """An optional package that a requested feature needs is not installed."""

    def __init__(self, package: str, feature: str, extra: str) -> None:
        super().__init__(
            f"{feature} needs the '{package}' package, which is not installed; "
            f"install it with: pip install 'eoaudit[{extra}]'"
        )
