"""One error hierarchy, rendered by the API as `{"error": {"code", "message"}}`.

Core and audio code raise these; the HTTP layer maps `status` to the response code and the
worker maps `permanent` to "report and delete" versus "let SQS redeliver".
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base class: a stable machine-readable `code`, a human message and an HTTP status."""

    code = "internal_error"
    status = 500
    #: Retrying the same input cannot succeed (bad audio); the worker reports instead of retrying.
    permanent = False
    #: Seconds a client should wait before retrying (the API's Retry-After header), if any.
    retry_after_s: int | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ServiceError):
    code = "bad_request"
    status = 400
    permanent = True


class InvalidInput(ServiceError):
    """A parameter or field the request validation let through but no store can hold."""

    code = "validation_error"
    status = 422
    permanent = True


class EmptyFile(BadRequest):
    code = "empty_file"


class NotAudio(ServiceError):
    """The bytes are not a container/codec we can decode, or hold no audio stream."""

    code = "not_audio"
    status = 415
    permanent = True


class UndecodableAudio(ServiceError):
    """An audio container was recognised but decoding it failed (truncated, corrupt)."""

    code = "undecodable_audio"
    status = 422
    permanent = True


class AudioTooShort(ServiceError):
    code = "audio_too_short"
    status = 422
    permanent = True


class AudioTooLong(ServiceError):
    """More decoded audio than the request's limit (MAX_INDEX_AUDIO_S, MAX_IDENTIFY_AUDIO_S)."""

    code = "audio_too_long"
    status = 422
    permanent = True


class PayloadTooLarge(ServiceError):
    code = "payload_too_large"
    status = 413
    permanent = True


class NotFound(ServiceError):
    code = "not_found"
    status = 404
    permanent = True


class Unauthorized(ServiceError):
    code = "unauthorized"
    status = 401
    permanent = True


class IndexMismatch(ServiceError):
    """The catalogue was built with other fingerprint parameters than this code uses."""

    code = "index_mismatch"
    status = 500


class StoreUnavailable(ServiceError):
    """The database cannot be reached; transient, so the worker lets SQS redeliver."""

    code = "store_unavailable"
    status = 503
    retry_after_s = 5


class NotReady(ServiceError):
    """The process is still starting (opening the database, migrating) or failed to start."""

    code = "not_ready"
    status = 503
    retry_after_s = 5


class NoFingerprints(ServiceError):
    """Audio decoded but yielded no landmarks (silence, a pure tone): nothing to index."""

    code = "no_fingerprints"
    status = 422
    permanent = True
