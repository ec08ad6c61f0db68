"""The lifecycle of a resource: its states, the events that move it, and what each state
means for a wait. Every lifecycle rule lives in this file.

States (stored as a small integer in the control block)::

    ACTIVE ──commit──▶ COMMITTED ──reactivate──▶ ACTIVE (a rewrite: a new generation)
      │                    │
      ├──fail──▶ FAILED ◀──┘ fail            FAILED ──reactivate──▶ ACTIVE (a refetch)
      └──cancel──▶ CANCELLED (terminal)

Status priority, for readers that see more than one condition: FAILED and COMMITTED outrank
CANCELLED, which outranks ACTIVE; a stored status is exactly one of them, so the priority is
the order the table allows transitions in (a cancelled resource cannot be committed, a failed
one cannot be committed, a committed one can still be failed).

Writer death is not a state: an ACTIVE resource whose writers are all gone stays ACTIVE so a
new writer can resume it; a wait on bytes that are not covered raises ``WriterDied`` instead
of blocking.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar

from ..errors import Cancelled as CancelledError
from ..errors import ReadOnlyError, ResourceFailed

__all__ = [
    "Event",
    "ResourceStatus",
    "State",
    "WaitOutcome",
    "transition",
]


class State(enum.IntEnum):
    ACTIVE = 0
    COMMITTED = 1
    FAILED = 2
    CANCELLED = 3


class Event(enum.Enum):
    COMMIT = "commit"
    FAIL = "fail"
    CANCEL = "cancel"
    REACTIVATE = "reactivate"


class WaitOutcome(enum.Enum):
    """What ``wait_range`` returns: the bytes are there, there will never be more, or the
    wait was interrupted (``Resource.interrupt``)."""

    READY = "ready"
    EOF = "eof"
    INTERRUPTED = "interrupted"


# (state, event) -> new state. A pair missing from the table is illegal: `transition` raises
# the error of `_ILLEGAL` for it and nothing changes. Same-state entries are idempotent no-ops
# (a second commit of the same length, a second fail keeps the first reason).
_TABLE: dict[tuple[State, Event], State] = {
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

_ILLEGAL: dict[State, str] = {
    State.COMMITTED: "the resource is committed (reactivate it to write again)",
    State.FAILED: "the resource has failed",
    State.CANCELLED: "the resource was cancelled",
}


def transition(state: State, event: Event, reason: str = "") -> State:
    """The state after ``event``; raises (and changes nothing) when the event is illegal.

    Raises:
        ReadOnlyError: ``cancel`` of a committed resource.
        ResourceFailed: ``commit`` or ``cancel`` of a failed resource.
        Cancelled: any event but ``cancel`` on a cancelled resource.
    """
    new = _TABLE.get((state, event))
    if new is not None:
        return new
    if state is State.FAILED:
        raise ResourceFailed(reason or "failed")
    if state is State.CANCELLED:
        raise CancelledError(_ILLEGAL[state])
    raise ReadOnlyError(_ILLEGAL[state])


def is_noop(state: State, event: Event) -> bool:
    """True for the idempotent pairs that leave the stored state untouched."""
    return (state, event) in {
        (State.ACTIVE, Event.REACTIVATE),
        (State.FAILED, Event.FAIL),
        (State.CANCELLED, Event.CANCEL),
    }


@dataclass(frozen=True)
class ResourceStatus:
    """A snapshot of a resource's lifecycle: one of ``ResourceStatus.Active()``,
    ``ResourceStatus.Committed(final_len)``, ``ResourceStatus.Failed(reason)``,
    ``ResourceStatus.Cancelled()``. Use ``match`` or ``isinstance``.

    ``Committed.final_len`` is the length given to ``commit`` (``None`` when the written
    extent was used; ``length`` then holds it).
    """

    Active: ClassVar[type[_Active]]
    Committed: ClassVar[type[_Committed]]
    Failed: ClassVar[type[_Failed]]
    Cancelled: ClassVar[type[_Cancelled]]

    @property
    def state(self) -> State:
        raise NotImplementedError  # pragma: no cover - every subclass overrides it


@dataclass(frozen=True)
class _Active(ResourceStatus):
    @property
    def state(self) -> State:
        return State.ACTIVE


@dataclass(frozen=True)
class _Committed(ResourceStatus):
    final_len: int | None
    length: int = 0

    @property
    def state(self) -> State:
        return State.COMMITTED


@dataclass(frozen=True)
class _Failed(ResourceStatus):
    reason: str

    @property
    def state(self) -> State:
        return State.FAILED


@dataclass(frozen=True)
class _Cancelled(ResourceStatus):
    @property
    def state(self) -> State:
        return State.CANCELLED


for _cls, _public in (
    (_Active, "Active"),
    (_Committed, "Committed"),
    (_Failed, "Failed"),
    (_Cancelled, "Cancelled"),
):
    _cls.__name__ = _public
    _cls.__qualname__ = f"ResourceStatus.{_public}"
    setattr(ResourceStatus, _public, _cls)
