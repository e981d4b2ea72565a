"""The errors and warnings that sampling reports to its user.

`sample.py` prints a `SamplingError` as one line and exits non-zero, so every
message names the file, flag or value at fault.
"""


class SamplingError(ValueError):
    """Bad input to sampling: a missing or wrong checkpoint, image, mask or prompt."""


class PromptTruncatedWarning(UserWarning):
    """A prompt has more tokens than the model's text context; the tail is dropped."""
