"""The errors a user can fix, each with a message that says what is wrong.

Standard library only: the command line catches them (one line on stderr, exit status 2)
without importing torch.
"""


class UsageError(ValueError):
    """A command-line option or API argument whose value cannot be used."""


class DataError(ValueError):
    """A data folder, image file or class mapping that cannot be used."""


class CheckpointError(ValueError):
    """A file or state dict that cannot be loaded into the model."""
