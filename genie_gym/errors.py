"""Error types users can catch. Messages always name the problem and the fix."""

from __future__ import annotations


class GenieError(Exception):
    """Base class for genie-gym errors."""


class DatasetError(GenieError, ValueError):
    """A dataset directory, manifest or shard is missing, corrupt, or incompatible with the request."""


class CheckpointError(GenieError, ValueError):
    """A checkpoint or world-model file is missing, truncated, corrupt, of a newer format, or mismatched."""


class ConfigError(GenieError, ValueError):
    """A configuration value is out of range or unknown."""
