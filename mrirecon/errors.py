"""Exceptions raised by mrirecon.

Every error that a user's input can cause is a subclass of :class:`ValueError`,
so ``except ValueError`` catches them; the command line turns them into exit
code 2 and one line of text.
"""


class MriReconError(ValueError):
    """Base class: bad input, named with the expected form."""


class InvalidParameterError(MriReconError):
    """A parameter value is outside its allowed range or has the wrong form."""


class ShapeMismatchError(MriReconError):
    """Two arrays that must agree in shape (or affine) do not."""


class InputFileError(MriReconError):
    """An input file is missing, unreadable, or not of the expected format."""


class OutputExistsError(MriReconError):
    """An output file exists and overwriting was not requested."""
