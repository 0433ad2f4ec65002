"""Errors the user can act on.

Every expected failure (bad file, bad geometry, missing data) raises an
``X2CTError`` whose message says what is wrong and what to do. The CLI prints
it as one line without a traceback; Slicer shows it in a message box.
"""


class X2CTError(Exception):
    """An expected, user-actionable failure."""


class InputError(X2CTError, ValueError):
    """A file, array or argument given by the user is not usable."""


class SampleDataError(X2CTError):
    """A sample case could not be fetched or failed its checksum."""
