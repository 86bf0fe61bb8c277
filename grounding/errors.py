"""Typed errors of the public API (all are ``ValueError``s, so callers can catch broadly or precisely)."""


class GroundingError(ValueError):
    """Base class of input errors raised by pixel-grounding's public API."""


class InvalidImageError(GroundingError):
    """The image cannot be read, is empty, or is larger than the configured limit."""


class InvalidPromptError(GroundingError):
    """The prompt is empty or does not match the regions given with it."""


class InvalidRegionError(GroundingError):
    """A region box is malformed or lies outside the image."""
