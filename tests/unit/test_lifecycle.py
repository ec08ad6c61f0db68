"""The lifecycle table, the status snapshots and the error tree."""

from __future__ import annotations

import dataclasses
import inspect
import pickle

import pytest

import shmstore
import shmstore.errors as errors_mod
from shmstore.core.lifecycle import (
    Event,
    ResourceStatus,
    State,
    WaitOutcome,
    is_noop,
    transition,
)
from shmstore.errors import (
    Cancelled,
    ChainBroken,
    CorruptResource,
    InvalidName,
    InvalidRange,
    LogCorrupt,
    ReadOnlyError,
    RecordCorrupt,
    RecordMissing,
    RecordOutOfOrder,
    ResourceClosed,
    ResourceExists,
    ResourceFailed,
    ResourceNotFound,
    ShortRead,
    SourceChanged,
    SourceDenied,
    SourceError,
    SourceNotFound,
    StorageError,
    StorageFull,
    TmpClaimed,
    TornRecord,
    WriterActive,
    WriterDied,
)

pytestmark = pytest.mark.timeout(30)

# The documented table (lifecycle.py docstring and diagram).
LEGAL: dict[tuple[State, Event], State] = {
    (State.ACTIVE, Event.COMMIT): State.COMMITTED,
    (State.ACTIVE, Event.FAIL): State.FAILED,
    (State.ACTIVE, Event.CANCEL): State.CANCELLED,
    (State.ACTIVE, Event.REACTIVATE): State.ACTIVE,
    (State.COMMITTED, Event.COMMIT): State.COMMITTED,
    (State.COMMITTED, Event.FAIL): State.FAILED,
    (State.COMMITTED, Event.REACTIVATE): State.ACTIVE,
    (State.FAILED, Event.FAIL): State.FAILED,
    (State.FAILED, Event.REACTIVATE): State.ACTIVE,
    (State.CANCELLED, Event.CANCEL): State.CANCELLED,
}

# The documented errors of the illegal pairs ("Raises:" of ``transition``).
ILLEGAL: dict[tuple[State, Event], type[StorageError]] = {
    (State.COMMITTED, Event.CANCEL): ReadOnlyError,
    (State.FAILED, Event.COMMIT): ResourceFailed,
    (State.FAILED, Event.CANCEL): ResourceFailed,
    (State.CANCELLED, Event.COMMIT): Cancelled,
    (State.CANCELLED, Event.FAIL): Cancelled,
    (State.CANCELLED, Event.REACTIVATE): Cancelled,
}

ALL_PAIRS = [(s, e) for s in State for e in Event]


def test_table_is_complete() -> None:
    assert set(LEGAL) | set(ILLEGAL) == set(ALL_PAIRS)
    assert not set(LEGAL) & set(ILLEGAL)
    assert len(ALL_PAIRS) == 16


def test_state_values_are_the_stored_integers() -> None:
    assert [int(s) for s in State] == [0, 1, 2, 3]
    assert [s.name for s in State] == ["ACTIVE", "COMMITTED", "FAILED", "CANCELLED"]


@pytest.mark.parametrize(("state", "event"), sorted(LEGAL, key=str))
def test_legal_transition(state: State, event: Event) -> None:
    assert transition(state, event) is LEGAL[(state, event)]
    assert transition(state, event, "some reason") is LEGAL[(state, event)]


@pytest.mark.parametrize(("state", "event"), sorted(ILLEGAL, key=str))
def test_illegal_transition_raises_documented_error(state: State, event: Event) -> None:
    err = ILLEGAL[(state, event)]
    with pytest.raises(err) as info:
        transition(state, event, "disk on fire")
    # the exact class, not a subclass (WriterDied is a ResourceFailed, for instance)
    assert type(info.value) is err
    if err is ResourceFailed:
        assert info.value.reason == "disk on fire"


def test_failed_transition_without_reason_still_has_one() -> None:
    with pytest.raises(ResourceFailed) as info:
        transition(State.FAILED, Event.COMMIT)
    assert info.value.reason  # non-empty default


@pytest.mark.parametrize(("state", "event"), ALL_PAIRS)
def test_is_noop_only_for_same_state_idempotent_pairs(state: State, event: Event) -> None:
    want = (state, event) in {
        (State.ACTIVE, Event.REACTIVATE),
        (State.FAILED, Event.FAIL),
        (State.CANCELLED, Event.CANCEL),
    }
    assert is_noop(state, event) is want
    if want:
        assert transition(state, event) is state


def test_cancelled_is_terminal() -> None:
    for event in Event:
        if event is Event.CANCEL:
            assert transition(State.CANCELLED, event) is State.CANCELLED
        else:
            with pytest.raises(Cancelled):
                transition(State.CANCELLED, event)


# ------------------------------------------------------------------------------ statuses
def test_status_variants() -> None:
    a = ResourceStatus.Active()
    c = ResourceStatus.Committed(10)
    cn = ResourceStatus.Committed(None, 7)
    f = ResourceStatus.Failed("boom")
    x = ResourceStatus.Cancelled()
    for s in (a, c, cn, f, x):
        assert isinstance(s, ResourceStatus)
    assert a.state is State.ACTIVE
    assert c.state is State.COMMITTED
    assert cn.state is State.COMMITTED
    assert f.state is State.FAILED
    assert x.state is State.CANCELLED
    assert c.final_len == 10
    assert c.length == 0
    assert cn.final_len is None
    assert cn.length == 7
    assert f.reason == "boom"
    assert a == ResourceStatus.Active()
    assert c == ResourceStatus.Committed(10)
    assert c != ResourceStatus.Committed(11)
    assert f != ResourceStatus.Failed("other")
    assert a != x
    assert type(a).__name__ == "Active"
    assert repr(cn) == "ResourceStatus.Committed(final_len=None, length=7)"
    assert repr(f) == "ResourceStatus.Failed(reason='boom')"
    assert shmstore.ResourceStatus is ResourceStatus
    with pytest.raises(NotImplementedError):
        _ = ResourceStatus().state


def test_status_is_frozen_and_hashable() -> None:
    f = ResourceStatus.Failed("boom")
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.reason = "other"  # type: ignore[misc]
    assert len({ResourceStatus.Active(), ResourceStatus.Active(), f}) == 2


def test_status_match() -> None:
    def kind(s: ResourceStatus) -> str:
        match s:
            case ResourceStatus.Committed(final_len=n, length=length):
                return f"committed {n} {length}"
            case ResourceStatus.Failed(reason=r):
                return f"failed {r}"
            case ResourceStatus.Active():
                return "active"
            case ResourceStatus.Cancelled():
                return "cancelled"
        return "?"

    assert kind(ResourceStatus.Committed(None, 3)) == "committed None 3"
    assert kind(ResourceStatus.Failed("x")) == "failed x"
    assert kind(ResourceStatus.Active()) == "active"
    assert kind(ResourceStatus.Cancelled()) == "cancelled"


@pytest.mark.parametrize(
    "status",
    [
        ResourceStatus.Active(),
        ResourceStatus.Committed(5, 5),
        ResourceStatus.Committed(None, 9),
        ResourceStatus.Failed("why"),
        ResourceStatus.Cancelled(),
    ],
)
def test_status_pickles(status: ResourceStatus) -> None:
    back = pickle.loads(pickle.dumps(status))
    assert back == status
    assert type(back) is type(status)


def test_wait_outcomes() -> None:
    assert {o.name for o in WaitOutcome} == {"READY", "EOF", "INTERRUPTED"}
    assert shmstore.WaitOutcome is WaitOutcome
    for o in WaitOutcome:
        assert pickle.loads(pickle.dumps(o)) is o


# ------------------------------------------------------------------------------ errors
ERROR_SAMPLES: list[tuple[StorageError, dict[str, object]]] = [
    (StorageError("base"), {}),
    (InvalidRange(5, 3, "reversed range"), {"start": 5, "end": 3, "why": "reversed range"}),
    (InvalidName("a\x00b", "contains NUL"), {"name": "a\x00b", "why": "contains NUL"}),
    (ResourceFailed("disk on fire", "job-1"), {"reason": "disk on fire", "name": "job-1"}),
    (WriterDied("writer gone", "job-2"), {"reason": "writer gone", "name": "job-2"}),
    (Cancelled("the wait was cancelled"), {}),
    (TmpClaimed("/tmp/x.part"), {"path": "/tmp/x.part"}),
    (ReadOnlyError("read only"), {}),
    (ResourceNotFound("no resource 'x'"), {}),
    (ResourceExists("resource 'x' already exists"), {}),
    (CorruptResource("bad magic"), {}),
    (StorageFull("no space"), {}),
    (ResourceClosed("closed"), {}),
    (SourceError("http://h/o", "HTTP 500"), {"url": "http://h/o", "why": "HTTP 500"}),
    (ShortRead("http://h/o", "10 of 20"), {"url": "http://h/o", "why": "10 of 20"}),
    (SourceChanged("s3://b/k", "ETag"), {"url": "s3://b/k", "why": "ETag"}),
    (SourceNotFound("s3://b/k", "NoSuchKey"), {"url": "s3://b/k", "why": "NoSuchKey"}),
    (SourceDenied("s3://b/k", "AccessDenied"), {"url": "s3://b/k", "why": "AccessDenied"}),
    (LogCorrupt("bad settings"), {}),
    (TornRecord(4096, "zeros"), {"where": 4096, "why": "zeros"}),
    (RecordCorrupt(108, "CRC mismatch"), {"where": 108, "why": "CRC mismatch"}),
    (RecordMissing(7, "not there"), {"where": 7, "why": "not there"}),
    (RecordOutOfOrder(7, "swapped"), {"where": 7, "why": "swapped"}),
    (ChainBroken(9, "link"), {"where": 9, "why": "link"}),
    (WriterActive("a writer holds it"), {}),
]


def test_every_error_class_is_sampled() -> None:
    classes = {
        obj
        for _, obj in inspect.getmembers(errors_mod, inspect.isclass)
        if issubclass(obj, BaseException) and obj.__module__ == errors_mod.__name__
        and not obj.__name__.startswith("_")
    }
    assert classes == {type(e) for e, _ in ERROR_SAMPLES}
    assert set(errors_mod.__all__) == {c.__name__ for c in classes}


@pytest.mark.parametrize(("err", "data"), ERROR_SAMPLES, ids=lambda v: type(v).__name__)
def test_error_pickles_with_its_data(err: StorageError, data: dict[str, object]) -> None:
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is type(err)
    assert back.args == err.args
    assert str(back) == str(err)
    for attr, value in data.items():
        assert getattr(back, attr) == value, attr
    assert isinstance(back, StorageError)


def test_error_tree() -> None:
    assert issubclass(InvalidRange, ValueError)
    assert issubclass(InvalidName, ValueError)
    assert issubclass(WriterDied, ResourceFailed)
    assert issubclass(ResourceNotFound, FileNotFoundError)
    assert issubclass(ResourceExists, FileExistsError)
    for cls in (InvalidRange, InvalidName, ResourceFailed, WriterDied, Cancelled, TmpClaimed,
                ReadOnlyError, ResourceNotFound, ResourceExists, CorruptResource, StorageFull,
                ResourceClosed):
        assert issubclass(cls, StorageError)
        assert getattr(shmstore, cls.__name__) is cls
    assert not issubclass(Cancelled, ResourceFailed)
    assert not issubclass(StorageError, TimeoutError)


def test_error_messages_carry_data() -> None:
    assert str(InvalidRange(5, 3, "reversed range")) == "reversed range: [5, 3)"
    assert str(ResourceFailed("boom", "job")) == "'job': resource failed: boom"
    assert str(ResourceFailed("boom")) == "resource failed: boom"
    assert "/tmp/x" in str(TmpClaimed("/tmp/x"))
    assert "contains NUL" in str(InvalidName("a", "contains NUL"))
