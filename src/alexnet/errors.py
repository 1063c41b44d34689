"""One exception type for mistakes a user can fix: the CLI prints its message on one line, without a traceback."""


class UserError(Exception):
    """Bad input from the user (a file, a flag, a value). The message says what was wrong and what to do."""


class WeightsError(UserError):
    """A weights or checkpoint file that cannot be read, or does not fit the model."""
