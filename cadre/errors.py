"""Every error Cadre raises, in one tree.

    CadreError
    ├── ContractError            a message or agent type is declared wrongly (at import time)
    ├── ConfigurationError       a setting, adapter or extra is missing or invalid
    ├── ConcurrencyConflict      a conditional write lost a race (stale etag); retry the step
    ├── StoreError               a state store failed (I/O, connection); retry later
    ├── TransportError           a transport failed to send or receive; retry later
    ├── NotFound                 a dead letter, task or record that does not exist
    ├── ModelError               a model call failed after its retries (the task fails)
    │   └── ModelThrottled       the model deployment answered 429 (Retry-After in retry_after)
    ├── TaskStateError           a task is not in a state that allows this (input, cancel)
    ├── TaskFailed               a task a caller waited for failed (`Tasks.wait`): the reason
    ├── RetryLater               a host should deliver the envelope again (Functions: abandon)
    └── DeliveryError            an envelope cannot be handled as it is: it goes to the dead letters
        ├── EnvelopeInvalid      the bytes are not an envelope (bad JSON, missing fields)
        ├── UnknownMessage       no contract is registered under that message name
        ├── UnsupportedVersion   the message version is newer than this code knows
        ├── StateVersionUnsupported  stored agent state is newer than the code, or unmigratable
        ├── PayloadInvalid       the payload does not validate against the contract
        ├── UnknownAgentType     the recipient's agent type is not registered
        ├── NoHandler            the agent type has no handler for the message type
        ├── NoReplyTarget        a handler replied to an envelope with no sender or reply_to
        ├── RecordTooLarge       what the step would store is over the store's item size
        └── UnstorableValue      what the step would store has text the store cannot hold

A `DeliveryError` is permanent: retrying cannot help, so hosts dead-letter it at once.
Any other exception raised by a handler is transient: hosts retry it with backoff, then
dead-letter it when the attempts run out.
"""

from __future__ import annotations


class CadreError(Exception):
    """Base of every Cadre error."""


class ContractError(CadreError):
    """A message contract, agent type or handler is declared wrongly."""


class ConfigurationError(CadreError):
    """A setting, adapter or optional dependency is missing or invalid."""


class ConcurrencyConflict(CadreError):
    """A conditional write found a newer version than the one it read.

    The step that raises it made no change; it is retried from the load.
    """


class StoreError(CadreError):
    """A state store failed for a reason other than a conflict; the step can be retried."""


class TransportError(CadreError):
    """A transport failed to send or receive; the step can be retried."""


class NotFound(CadreError):
    """The thing asked for does not exist."""


class ModelError(CadreError):
    """A model call failed after its client's retries (endpoint, auth, bad answer)."""


class ModelThrottled(ModelError):
    """The model deployment refused a call for its quota (HTTP 429).

    `retry_after` is how long it asked callers to wait, in seconds (None: it did not say).
    A `LimitedModel` pauses every caller of the deployment that long and retries; past its
    retries, or outside a limiter, this is the call's `ModelError`.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TaskStateError(CadreError):
    """A task is not in a state that allows the operation (e.g. input when not awaiting)."""


class TaskFailed(CadreError):
    """A task that `Tasks.wait` waited for ended ``failed``; `reason` says why."""

    def __init__(self, task_id: str, reason: str) -> None:
        super().__init__(f"task {task_id} failed: {reason}")
        self.task_id, self.reason = task_id, reason


class RetryLater(CadreError):
    """The envelope could not be handled yet; the host delivers it again.

    Raised by hosts that settle a delivery by raising (Azure Functions abandons the
    message, and Service Bus redelivers it within its session). `retry_after` is the
    delay the retry policy asked for.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeliveryError(CadreError):
    """An envelope cannot be handled as it is; it belongs in the dead letters.

    `reason` is a short machine-readable code, the message says what happened and what to do.
    """

    reason = "delivery_error"


class EnvelopeInvalid(DeliveryError):
    """The bytes received are not a valid envelope."""

    reason = "envelope_invalid"


class UnknownMessage(DeliveryError):
    """No message contract is registered under the envelope's message name."""

    reason = "unknown_message"


class UnsupportedVersion(DeliveryError):
    """The envelope's message version is newer than the registered contract."""

    reason = "unsupported_version"


class StateVersionUnsupported(DeliveryError):
    """The recipient's stored state has a newer state version than this code knows, or no
    migration leads from its version to the code's; the stored state is left untouched."""

    reason = "state_version_unsupported"


class PayloadInvalid(DeliveryError):
    """The payload does not validate against the message contract."""

    reason = "payload_invalid"


class UnknownAgentType(DeliveryError):
    """The recipient's agent type is not registered in this process."""

    reason = "unknown_agent_type"


class NoHandler(DeliveryError):
    """The recipient agent type has no handler for the message type."""

    reason = "no_handler"


class NoReplyTarget(DeliveryError):
    """A handler replied to an envelope that names neither a sender nor a reply_to."""

    reason = "no_reply_target"


class RecordTooLarge(DeliveryError):
    """What a step would store is larger than the store can keep (a Cosmos DB item is at
    most 2 MB); the message that made it is dead-lettered, nothing is stored."""

    reason = "record_too_large"


class UnstorableValue(DeliveryError):
    """What a step would store holds text the store cannot keep: PostgreSQL takes no U+0000
    in text or jsonb, and no store takes a lone surrogate (it is not UTF-8). The message
    that made it is dead-lettered at once, nothing is stored."""

    reason = "unstorable_value"
