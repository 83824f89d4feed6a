"""The kit's two exception types: mistakes a user can fix, and a team's submission the judges refuse."""


class KitError(Exception):
    """A bad file, a missing tool or a wrong flag: the message names the thing and the fix.

    The CLI prints it on one line and exits non-zero; bugs raise anything else.
    """


class Refused(Exception):
    """A submission that cannot be scored; the message is shown to the team (on the board)."""
