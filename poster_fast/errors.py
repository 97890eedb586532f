"""The errors a user can fix, each with a message that says what is wrong.

Standard library only: the command line catches them without importing torch. UsageError,
DataError and CheckpointError are found before the work starts (exit status 2); RunError stops
work under way (exit status 3): training that diverged, an output that could not be written
(OutputError); Stopped is training that stopped on SIGTERM after saving what continues it (exit
status 75).
"""


class UsageError(ValueError):
    """A command-line option or API argument whose value cannot be used."""


class DataError(ValueError):
    """A data folder, image file or class mapping that cannot be used."""


class CheckpointError(ValueError):
    """A file or state dict that cannot be loaded into the model."""


class RunError(RuntimeError):
    """Work under way that could not finish: what was done, what was not, and why."""


class NonFiniteError(RunError):
    """A loss or model output that is NaN or infinite (training stops before saving it)."""


class OutputError(RunError):
    """An output file that could not be written (a full disk, a folder that became read-only):
    the path and why. The previous file of that name, if any, is left as it was."""

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(f"cannot write {path}: {reason}")
        self.path, self.reason = path, reason


class Stopped(RunError):
    """Training stopped on request (SIGTERM) at a step boundary, after saving what continues it."""
