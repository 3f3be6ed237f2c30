"""The base of every error that reports a user's mistake (bad input, unusable folder or file).

The command line prints these as one clear message instead of a traceback; each names the problem and
the fix. Programming errors keep their tracebacks.
"""


class UserError(Exception):
    """Bad input or an unusable file: the message says what is wrong and what to do."""
