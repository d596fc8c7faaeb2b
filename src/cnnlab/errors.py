"""Errors a user can act on: the CLI prints their message without a traceback."""


class CnnlabError(Exception):
    """Base class for errors with a message that says what to do next."""
