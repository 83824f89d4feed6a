"""The one exception type for mistakes a user can fix."""


class KitError(Exception):
    """A bad file, a missing tool or a wrong flag: the message names the thing and the fix.

    The CLI prints it on one line and exits non-zero; bugs raise anything else.
    """
