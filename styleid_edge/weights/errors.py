"""Errors of the weights commands: each names the file and says what to do."""

from __future__ import annotations


class WeightsError(RuntimeError):
    """Base class: a weights file cannot be fetched, verified or used."""


class UnknownFileError(WeightsError):
    """A name that is not in the registry."""


class LicenceError(WeightsError):
    """A non-commercial file was requested without --accept-licence."""


class OfflineError(WeightsError):
    """The host cannot be reached (no network, DNS, proxy)."""


class HostRefusedError(WeightsError):
    """The host answered, but not with the file (quota page, 403/429, not found)."""


class IncompleteDownloadError(WeightsError):
    """The connection dropped and the retries are spent; the .part file is kept for resuming."""


class IntegrityError(WeightsError):
    """Size or sha256 does not match the registry or the lock file."""


class RankFormatError(WeightsError, ValueError):
    """An official rank file fits none of the known StyleSpace layouts."""
