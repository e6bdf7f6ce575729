"""Identities, message contracts, envelopes and handler routing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cadre import (
    Agent,
    AgentId,
    Context,
    Message,
    Registry,
    TopicId,
    TypePrefixSubscription,
    TypeSubscription,
    handler,
)
from cadre.envelope import Envelope, derive_id
from cadre.errors import ContractError, EnvelopeInvalid, NoHandler, UnknownAgentType
from cadre.messages import contracts


class Animal(Message, abstract=True):
    name: str


class Dog(Animal, name="test.Dog"):
    barks: bool = True


class Puppy(Dog, name="test.Puppy"):
    pass


class Cat(Animal, name="test.Cat"):
    pass


class Bird(Animal, name="test.Bird"):
    pass


class Vet(Agent):
    @handler
    async def any_animal(self, msg: Animal, ctx: Context) -> None:
        ctx.logger.info("animal")

    @handler
    async def dogs(self, msg: Dog, ctx: Context) -> None: ...

    @handler
    async def small_pets(self, msg: Cat | Bird, ctx: Context) -> None: ...


class Puppies(Vet):
    @handler
    async def puppies(self, msg: Puppy, ctx: Context) -> None: ...


def test_agent_id_string_form_round_trips() -> None:
    agent = AgentId("writer", "task/42")
    assert str(agent) == "writer/task/42"
    assert AgentId.parse("writer/task/42") == agent
    with pytest.raises(ValueError, match="expected 'type/key'"):
        AgentId.parse("writer")
    with pytest.raises(ValueError, match="invalid agent type"):
        AgentId("has space", "k")
    with pytest.raises(ValueError, match="non-empty"):
        AgentId("writer", "")


def test_subscriptions_map_topic_source_to_agent_key() -> None:
    topic = TopicId("news.sports", "room-1")
    assert TypeSubscription("news.sports", "reader").recipient(topic) == AgentId("reader", "room-1")
    assert TypeSubscription("news", "reader").recipient(topic) is None
    assert TypePrefixSubscription("news.", "archive").recipient(topic) == AgentId(
        "archive", "room-1"
    )
    assert TypePrefixSubscription("weather.", "archive").recipient(topic) is None


def test_registry_resolves_each_agent_type_once() -> None:
    registry = Registry()
    registry.register(Vet, type="vet")
    registry.add_subscription(TypeSubscription("news", "vet"))
    registry.add_subscription(TypePrefixSubscription("ne", "vet"))
    assert registry.recipients(TopicId("news", "k")) == [AgentId("vet", "k")]
    with pytest.raises(UnknownAgentType, match="'ghost' is not registered"):
        registry.get("ghost")


def test_two_classes_under_one_agent_type_is_an_error() -> None:
    registry = Registry()
    registry.register(Vet, type="vet")
    registry.register(Vet, type="vet")  # the same class again is fine
    with pytest.raises(ContractError, match="already registered"):
        registry.register(Puppies, type="vet")


def test_two_classes_under_one_message_name_is_an_error_at_declaration() -> None:
    with pytest.raises(ContractError, match=r"'test\.Dog' is already registered"):

        class OtherDog(Message, name="test.Dog"):
            pass

    assert contracts.get("test.Dog") is Dog


def test_message_name_defaults_to_the_qualified_class_name() -> None:
    class Local(Message):
        x: int

    assert (
        Local.message_name
        == f"{__name__}.test_message_name_defaults_to_the_qualified_class_name.<locals>.Local"
    )
    assert Local.message_version == 1


def test_version_must_be_a_positive_integer() -> None:
    with pytest.raises(ContractError, match="version must be an integer"):

        class Bad(Message, name="test.BadVersion", version=0):
            pass


def test_routing_picks_the_most_specific_handler() -> None:
    assert Vet.handler_for(Dog).__name__ == "dogs"
    assert Vet.handler_for(Puppy).__name__ == "dogs"  # subclass of Dog
    assert Vet.handler_for(Cat).__name__ == "small_pets"  # union member
    assert Vet.handler_for(Bird).__name__ == "small_pets"
    assert Puppies.handler_for(Puppy).__name__ == "puppies"  # subclass agent adds a narrower one
    assert Puppies.handler_for(Dog).__name__ == "dogs"


def test_no_handler_is_an_error_naming_what_is_handled() -> None:
    from tests.support.contracts import Note

    with pytest.raises(NoHandler, match=r"'vet' has no handler for 'test.Note'"):
        Vet.handler_for(Note, "vet")


def test_handlers_must_be_async_and_annotated() -> None:
    with pytest.raises(ContractError, match="async def"):
        handler(lambda self, msg, ctx: None)  # type: ignore[arg-type,return-value]

    with pytest.raises(ContractError, match="annotate the message parameter"):

        class NoAnnotation(Agent):
            @handler
            async def on(self, msg, ctx) -> None:  # type: ignore[no-untyped-def]
                ...

    with pytest.raises(ContractError, match="is not a Message class"):

        class NotAMessage(Agent):
            @handler
            async def on(self, msg: int, ctx: Context) -> None: ...

    with pytest.raises(ContractError, match="two handlers for Dog"):

        class Twice(Agent):
            @handler
            async def one(self, msg: Dog, ctx: Context) -> None: ...

            @handler
            async def two(self, msg: Dog, ctx: Context) -> None: ...


def test_envelope_needs_a_valid_address() -> None:
    with pytest.raises(EnvelopeInvalid, match="recipient or a topic"):
        Envelope.from_bytes(
            b'{"id":"1","message":"m","version":1,"payload":{},"task_id":"t",'
            b'"created_at":"2026-01-01T00:00:00Z"}'
        )


def test_derived_ids_are_deterministic_and_distinct() -> None:
    assert derive_id("e1", 0) == derive_id("e1", 0)
    assert len({derive_id("e1", i) for i in range(100)} | {derive_id("e2", 0)}) == 101


texts = st.text(min_size=1, max_size=20)
keys = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=10,
)


@given(
    payload=st.dictionaries(texts, json_values, max_size=5),
    key=keys,
    attempt=st.integers(min_value=1, max_value=50),
    delay=st.one_of(st.none(), st.integers(min_value=0, max_value=10**6)),
    traceparent=st.one_of(
        st.none(), st.just("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    ),
)
def test_envelopes_round_trip_through_json_bytes_exactly(
    payload, key, attempt, delay, traceparent
) -> None:  # type: ignore[no-untyped-def]
    created = datetime(2026, 11, 24, 12, 0, 0, 123456, tzinfo=UTC)
    envelope = Envelope(
        id="e1",
        message="test.Any",
        version=3,
        payload=payload,
        task_id="t1",
        recipient=str(AgentId("writer", key)),
        topic=str(TopicId("news", key)),
        sender="critic/x",
        reply_to="user/x",
        causation_id="e0",
        created_at=created,
        not_before=None if delay is None else created + timedelta(seconds=delay),
        attempt=attempt,
        traceparent=traceparent,
    )
    data = envelope.to_bytes()
    again = Envelope.from_bytes(data)
    assert again == envelope
    assert again.to_bytes() == data
    assert again.recipient_id == AgentId("writer", key)


def test_trusted_envelopes_equal_validated_ones_and_serialise_the_same() -> None:
    fields = {
        "id": "e1",
        "message": "m",
        "version": 2,
        "payload": {"a": [1, 2]},
        "task_id": "t",
        "recipient": "writer/k",
        "topic": None,
        "sender": "critic/k",
        "reply_to": None,
        "causation_id": "e0",
        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
        "not_before": None,
        "attempt": 1,
        "traceparent": None,
    }
    fast, checked = Envelope.trusted(**fields), Envelope(**fields)
    assert fast == checked
    assert fast.to_bytes() == checked.to_bytes()
    assert Envelope.from_bytes(fast.to_bytes()) == fast
    assert fast.model_copy(update={"attempt": 2}).attempt == 2  # copies like any model
    with pytest.raises(TypeError, match="needs exactly the fields"):
        Envelope.trusted(id="e1")


def test_one_payload_object_decodes_once_and_equal_copies_decode_apart() -> None:
    """In-process fan-out shares one payload dict among the subscribers' envelopes: they get
    the same frozen message object; another dict with equal content is validated anew, and
    an invalid payload fails every time (nothing invalid is remembered)."""
    from cadre.errors import PayloadInvalid
    from cadre.messages import ContractRegistry
    from tests.support.contracts import Add

    registry = ContractRegistry()
    registry.register(Add)
    payload = {"amount": 3}
    first = registry.decode("test.Add", 1, payload)
    assert registry.decode("test.Add", 1, payload) is first
    again = registry.decode("test.Add", 1, dict(payload))
    assert again == first and again is not first
    bad = {"amount": "three"}
    for _ in range(2):
        with pytest.raises(PayloadInvalid):
            registry.decode("test.Add", 1, bad)
