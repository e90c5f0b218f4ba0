"""Errors the engine raises on purpose (everything a user can cause has a clear message)."""


class InputError(ValueError):
    """The image, mask or output cannot be used as given; the message says why."""


class Cancelled(Exception):
    """The caller's ``cancel()`` returned True; tiles already written stay, none is half-written."""
