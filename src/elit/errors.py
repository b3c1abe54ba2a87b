"""The error a user can fix. The CLI prints it as one line (exit 2); anything else is a bug and keeps
its traceback (exit 1). Both subclass the built-in types, so `except ValueError` still catches them.
This module imports nothing, so every part of elit (the model side too) may raise these."""


class UserError(ValueError):
    """Bad input (an argument, a config value, a file's contents): the message names it and the fix."""


class MissingInputError(UserError, FileNotFoundError):
    """A file or folder the user named does not exist (or is not what it should be)."""
