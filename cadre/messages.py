"""Message contracts: pydantic models registered under a stable name and an integer version.

    class Ping(Message, name="demo.Ping", version=1):
        seq: int

The name is what travels on the wire, so moving or renaming the class does not break
messages already in flight. Registering a second class under a name already taken is a
`ContractError` at import time, never a silent overwrite. An older version is upcast to the
current one by the upcasters registered for it; a newer version is `UnsupportedVersion`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ContractError, PayloadInvalid, UnknownMessage, UnsupportedVersion

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
"""Turns the JSON payload of version N into the JSON payload of version N + 1."""


class Message(BaseModel):
    """Base of every message contract. Subclass it with ``name=`` and ``version=``.

    Without ``name=`` the contract is named ``<module>.<qualified class name>``; give an
    explicit name for contracts that must survive refactoring. ``abstract=True`` declares a
    base class that is only used for routing (a handler for it receives every subclass) and
    is never sent itself.
    """

    model_config = ConfigDict(frozen=True)

    message_name: ClassVar[str] = ""
    message_version: ClassVar[int] = 0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # The contract keywords are consumed in __pydantic_init_subclass__, once the
        # model is complete; object.__init_subclass__ must not see them.
        super().__init_subclass__()

    @classmethod
    def __pydantic_init_subclass__(
        cls,
        *,
        name: str | None = None,
        version: int = 1,
        abstract: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if abstract:
            cls.message_name = ""
            cls.message_version = 0
            return
        cls.message_name = name or f"{cls.__module__}.{cls.__qualname__}"
        cls.message_version = version
        contracts.register(cls)


_RECENT_LIMIT = 256


class ContractRegistry:
    """Which class handles which message name, and how older versions are upcast."""

    def __init__(self) -> None:
        self._by_name: dict[str, type[Message]] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}
        # Recently decoded payload objects: in-process, a publish hands one payload dict to
        # every subscriber's envelope, and each gets the same (frozen) message object, as
        # autogen-core's runtime does. Keyed by id(); the entry keeps the dict alive, so an
        # id cannot be reused while its entry exists.
        self._recent: dict[int, tuple[dict[str, Any], type[Message], Message]] = {}

    def register(self, cls: type[Message]) -> None:
        """Register a contract; a name already taken by another class is a `ContractError`."""
        name, version = cls.message_name, cls.message_version
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ContractError(f"message {name!r}: version must be an integer >= 1")
        existing = self._by_name.get(name)
        if existing is not None and existing is not cls:
            raise ContractError(
                f"message name {name!r} is already registered by "
                f"{existing.__module__}.{existing.__qualname__}; give "
                f"{cls.__module__}.{cls.__qualname__} another name=, or raise the version "
                "of one class and delete the other"
            )
        self._by_name[name] = cls

    def add_upcaster(self, name: str, from_version: int, upcaster: Upcaster) -> None:
        """Register the function that turns version `from_version` of `name` into the next."""
        key = (name, from_version)
        if key in self._upcasters:
            raise ContractError(f"an upcaster for {name!r} v{from_version} is already registered")
        self._upcasters[key] = upcaster

    def has_upcaster(self, name: str, from_version: int) -> bool:
        """Whether an upcaster from `from_version` of `name` to the next is registered."""
        return (name, from_version) in self._upcasters

    def get(self, name: str) -> type[Message]:
        """The class registered under `name`; `UnknownMessage` when there is none."""
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownMessage(
                f"no message contract is registered under {name!r}; import the module that "
                "declares it, or check the sender's spelling"
            ) from None

    def names(self) -> dict[str, type[Message]]:
        """Every registered contract by name."""
        return dict(self._by_name)

    def decode(self, name: str, version: int, payload: dict[str, Any]) -> Message:
        """Validate a payload as message `name`, upcasting an older version first."""
        cls = self.get(name)
        current = cls.message_version
        if version == current:
            hit = self._recent.get(id(payload))
            if hit is not None and hit[0] is payload and hit[1] is cls:
                return hit[2]
        if version > current:
            raise UnsupportedVersion(
                f"message {name!r} arrived as version {version}, but this code knows versions "
                f"up to {current}; deploy the code that declares version {version}"
            )
        for old in range(version, current):
            upcast = self._upcasters.get((name, old))
            if upcast is None:
                raise UnsupportedVersion(
                    f"message {name!r} arrived as version {version}, and no upcaster from "
                    f"version {old} to {old + 1} is registered"
                )
            payload = upcast(payload)
        try:
            message = cls.model_validate(payload)
        except ValidationError as exc:
            raise PayloadInvalid(
                f"payload of {name!r} v{version} does not validate: {_summarise(exc)}"
            ) from exc
        if version == current:
            if len(self._recent) >= _RECENT_LIMIT:
                self._recent.clear()
            self._recent[id(payload)] = (payload, cls, message)
        return message


def _summarise(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


contracts = ContractRegistry()
"""The process-wide contract registry that `Message` subclasses join when declared."""


def upcaster(name: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Declare the function that upcasts `name` from `from_version` to the next version."""

    def register(fn: Upcaster) -> Upcaster:
        contracts.add_upcaster(name, from_version, fn)
        return fn

    return register


class DeliveryFailed(Message, name="cadre.DeliveryFailed", version=1):
    """Sent to the sender of a message that was dead-lettered, when the sender's agent type
    has a handler for it (team managers do: the task fails with this reason instead of
    waiting forever). Its id derives from the dead-lettered envelope's, so it is sent once."""

    envelope_id: str
    message: str
    recipient: str | None = None
    reason: str
    detail: str
