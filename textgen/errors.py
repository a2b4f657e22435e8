"""The one exception type the library raises for problems the user can fix.

The CLI turns a TextgenError into a one-line message and exit code 2; anything
else reaching the CLI is a bug in textgen, not in the user's input.
"""


class TextgenError(Exception):
    """A bad input (file, option, checkpoint, seed text) explained in one line."""

    exit_code = 2
