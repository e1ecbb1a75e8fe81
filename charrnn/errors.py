"""The one exception type for expected, user-facing failures; the CLI turns it into one red line."""


class CharRNNError(Exception):
    """A failure the user can fix: the message names the problem and the fix, and is shown as is."""
