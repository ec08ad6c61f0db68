"""Resource: a named byte resource shared by processes while it is being written.

Theory of operation
===================

State shared by every process (``core.layout``): the control block holds the lifecycle
record (double-buffered, so a change is one store), one slot per writer (its coverage ring,
see ``core.ring``) and one slot per parked waiter. Each process keeps its own view of the
coverage in a ``RangeSet`` and brings it up to date by draining the writers' rings.

Locks (``ipc.locks``, open-file-description byte-range locks on the control file)
    * the **meta lock** serialises the rare updates: lifecycle changes, writer and waiter
      registration, growth. Holders keep it for microseconds; the kernel releases it if the
      holder dies. A lifecycle change fills the inactive life record and flips
      ``LIFE_SEQ``: readers never lock, and a holder killed half-way changed nothing.
    * each **writer** holds the lock byte of its slot for its whole life: "is any writer
      alive?" is one ``F_OFD_GETLK`` on the writer bytes, answered by the kernel.
    * each **parked waiter** holds the lock byte of its waiter slot, so a slot whose owner
      died is reclaimed.

Publishing a write (writer)::

    bytes -> journal -> ring entry -> extent -> head    (core.ring, single producer per slot)
    full barrier                                         (ipc.semaphores.full_barrier)
    mask = WAITERS_MASK; for each waiter slot in mask whose [start, end) overlaps the write
    and whose TOKEN != POSTED: POSTED = TOKEN, post its semaphore

Parking (waiter)::

    claim a waiter slot (meta lock): START, END; create its semaphore; set its mask bit
    loop:
        TOKEN += 1                  (announce "I am about to sleep")
        full barrier
        drain the rings, re-read the lifecycle: satisfied -> return
        no live writer and the bytes are missing -> WriterDied
        sleep on the semaphore, at most SAFETY_NET seconds

No lost wake-up (the Dekker race): the writer stores ``head`` then loads the waiter's token;
the waiter stores its token then loads ``head``; each passes a full barrier in between, so
at least one of them sees the other's store: either the waiter sees the new coverage and does
not sleep, or the writer sees the new token and posts. The ``TOKEN``/``POSTED`` pair gives
each sleep a fresh token, so a second partial write still wakes a waiter whose range is not
whole yet, and a waiter is posted at most once per sleep by the writers that see it. The
bounded sleep is the safety net: it re-checks coverage and probes writer liveness (a killed
writer posts nobody), so a waiter notices writer death within ``SAFETY_NET`` seconds while an
idle waiter wakes only a few times a second.

Lifecycle changes (commit, fail, cancel, reactivate, interrupt, a writer's close) post every
parked waiter.

Generations: ``reactivate`` of a committed resource starts a new generation of the data
(a copy of the committed bytes, in a new segment or staged file). Readers keep reading the
committed generation until ``commit`` publishes the new one, so a rewrite never tears a read;
waits on bytes outside the committed generation block until that commit.

Unlink and names reused: ``unlink`` flags the control block (``UNLINKED`` = 1, under the meta
lock, after which no handle of this resource creates a name), removes every name but the
control block, marks ``UNLINKED`` = 2, and removes the control block last, and only while the
name still leads to it. A resource of the same name is created control block first,
exclusively, so nothing removed before that last step can be a newer resource's, and nothing
is removed after it. Whoever finds the work half done (the unlinker died) finishes it from the
phase recorded. Every object a handle opens by name is checked against the flag after the
open; a data file also by its inode number, and only while no newer generation was published
(numbers of removed files are reused).

Fork: a child inherits the parent's descriptors, and with them the parent's writer lock. The
``after_in_child`` hook closes every inherited descriptor of every live handle (the parent's
locks stay the parent's) and the handle re-attaches on its next use.
"""

from __future__ import annotations

import contextlib
import dataclasses
import mmap
import os
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from typing import Any, Literal

from .core import layout as L
from .core.lifecycle import Event, ResourceStatus, State, WaitOutcome, is_noop, transition
from .core.ranges import RangeSet
from .core.ring import SlotCursor, SlotPublisher
from .errors import (
    Cancelled,
    CorruptResource,
    InvalidRange,
    ReadOnlyError,
    ResourceClosed,
    ResourceExists,
    ResourceFailed,
    ResourceNotFound,
    StorageError,
    WriterDied,
)
from .inventory import CREATE_GRACE, reclaim_dead_creation
from .ipc import locks
from .ipc.segments import (
    SHM_DIR,
    DirNamespace,
    MemNamespace,
    Namespace,
    ShmNamespace,
    map_segment,
    reserve,
    segment_size,
)
from .ipc.segments import prefault as prefault_pages
from .ipc.semaphores import _FENCE, ThreadWaker, Waker, full_barrier

__all__ = ["CancelToken", "Resource", "create", "open"]

Backend = Literal["shm", "mmap", "mem"]

DEFAULT_CAPACITY = 1 << 20
SAFETY_NET = 0.2  # seconds a parked waiter sleeps before it re-checks and probes liveness
# Before its first sleep a wait yields the CPU this many times, re-checking after each: a
# writer on the other core usually publishes within microseconds, and catching that saves a
# futex sleep and wake. sched_yield hands the core to a runnable writer that shares it, so
# the spin never starves one; it is bounded, so an idle waiter still costs nothing.
SPIN_YIELDS = 20
_PAGE = mmap.PAGESIZE
_MAX = L.MAX_OFFSET
_FULL_MASK = (1 << L.N_WAITERS) - 1
_W_LIFE_SEQ = L.W_LIFE_SEQ
_W_WAITERS_MASK = L.W_WAITERS_MASK
_ACTIVE = State.ACTIVE
_READY = WaitOutcome.READY

# First-touch page faults, not Python, bound streaming into fresh memory: each process
# populates its page tables 2 MiB at a time (and one chunk ahead) before it first touches a
# chunk, with MADV_POPULATE_WRITE/READ (Linux 5.14+; silently skipped where unsupported).
_CHUNK_SHIFT = 21
_MADV_POPULATE_READ = 22
_MADV_POPULATE_WRITE = 23


def _populate(m: mmap.mmap | None, marks: bytearray, start: int, end: int, size: int,
              advice: int) -> None:
    if m is None:
        return
    for c in range(start >> _CHUNK_SHIFT, min(((end - 1) >> _CHUNK_SHIFT) + 2, len(marks))):
        if not marks[c]:
            marks[c] = 1
            a = c << _CHUNK_SHIFT
            n = min(1 << _CHUNK_SHIFT, size - a)
            if n > 0:
                try:
                    m.madvise(advice, a, n)
                except (OSError, ValueError):
                    pass


def _page_up(n: int) -> int:
    return max(_PAGE, (n + _PAGE - 1) // _PAGE * _PAGE)


def _check_range(start: int, end: int) -> None:
    if start < 0 or end < start or end > _MAX:
        why = "reversed range" if end < start else "range outside [0, 2**63)"
        raise InvalidRange(start, end, why)


class CancelToken:
    """Cancels the waits it is passed to (``wait_range(..., cancel=token)``) and only those.

    ``cancel()`` may be called from any thread; it wakes the waiting thread at once.
    """

    __slots__ = ("_cancelled", "_lock", "_wakers")

    def __init__(self) -> None:
        self._cancelled = False
        self._lock = threading.Lock()
        self._wakers: list[Waker] = []

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            wakers = list(self._wakers)
        for w in wakers:
            w.post()

    def _add(self, w: Waker) -> None:
        with self._lock:
            self._wakers.append(w)
            if not self._cancelled:
                return
        w.post()

    def _remove(self, w: Waker) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._wakers.remove(w)


_LIVE: weakref.WeakSet[Resource] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for r in list(_LIVE):
        r._drop_inherited()


os.register_at_fork(after_in_child=_after_fork_in_child)


class Resource:
    """A handle on a shared byte resource. Make one with ``shmstore.create`` or
    ``shmstore.open``; it is a context manager, and ``close()`` is idempotent.

    A handle may be used from several threads. Writes through one handle are serialised.
    """

    # Class-level defaults make close() safe on a half-built handle.
    _closed = True
    _ctrl_fd = -1
    _ctrl_map: mmap.mmap | None = None
    _w: memoryview | None = None
    _slot: int | None = None

    def __init__(self, ns: Namespace, *, writable: bool, _creating: dict[str, Any] | None = None,
                 _static_fd: int | None = None) -> None:
        self._ns = ns
        self._writable = writable
        self._tlock = threading.RLock()
        self._forked = False
        self._static = _static_fd is not None
        self._cov = RangeSet()
        self._cursors: dict[int, SlotCursor] = {}
        self._journals: dict[tuple[int, int], tuple[mmap.mmap, memoryview]] = {}
        self._wjournal: tuple[mmap.mmap, memoryview] | None = None
        self._wakers: dict[int, Waker] = {}
        self._pub: SlotPublisher | None = None
        self._pub_gen = -1
        self._rmap: mmap.mmap | None = None
        self._rview: memoryview | None = None
        self._rsize = 0
        self._rgen = -1
        self._wmap: mmap.mmap | None = None
        self._wview: memoryview | None = None
        self._wsize = 0
        self._wgen = -1
        self._wpop = bytearray(1)
        self._rpop = bytearray(1)
        self._life_seq = -1
        self._status = State.ACTIVE
        self._final_len = 0
        self._final_given = False
        self._data_gen = 0
        self._write_gen = 0
        self._capacity = 0
        self._data_capacity = 0
        self._frozen_len = 0
        self._used_mask = 0
        self._data_ino = 0
        self._unlinked = False
        self._base_gen = 0  # the generation whose base coverage _cov holds (0: none needed)
        self._frozen: tuple[int, RangeSet] | None = None  # during a rewrite: (gen, its base)
        self._lazy_writer = False  # a forked child's writer handle claims a slot on first use
        self._prefault = bool(_creating and _creating.get("prefault"))
        self._meta_depth = 0  # > 0 while this handle's thread holds the meta lock
        self._seen_seq = -1  # the LIFE_SEQ the cached lifecycle was read at
        self._reason = ""
        self._my_waiters: set[int] = set()
        self._sticky = -1  # the waiter slot this handle keeps between waits
        self._sticky_busy = False
        self._parked: dict[int, Waker] = {}  # threads of this handle parked now: slot -> waker
        self._deferred_release = False
        self._probed_at = -1.0  # when a liveness probe last found a writer
        self._on_write: list[Callable[[int, int], None]] = []
        self._on_commit: list[Callable[[int], None]] = []
        self._listeners: list[Callable[[int, int], None]] = []
        self._closed = False
        try:
            if _static_fd is not None:
                self._attach_static(_static_fd)
            elif _creating is not None:
                self._create(**_creating)
            else:
                self._attach()
        except BaseException:
            self._closed = True
            raise
        _LIVE.add(self)

    # ------------------------------------------------------------------ construction
    def _create(self, capacity: int, created_ns: int, prefault: bool) -> None:
        ns = self._ns
        fd = ns.open("c", create=True, exclusive=True)
        self._ctrl_fd = fd
        try:
            locks.lock(fd, L.LOCK_META)
            self._meta_depth += 1  # nested _meta() sections (journal creation) reuse it
            reserve(fd, L.CTRL_SIZE, f"control block of {ns.label!r}")
            self._map_ctrl()
            w = self._words
            cap = _page_up(capacity)
            dfd = ns.open(ns.data_suffix(0, staged=False), create=True, exclusive=True)
            try:
                reserve(dfd, cap, f"data of {ns.label!r}")
                if prefault and not isinstance(ns, DirNamespace):
                    prefault_pages(dfd, 0, cap)
                ino = os.fstat(dfd).st_ino if isinstance(ns, DirNamespace) else 0
            finally:
                os.close(dfd)
            life = L.Life(capacity=cap, data_capacity=cap, data_ino=ino)
            L.init_block(w, ns.kind, getattr(ns, "name", "") or getattr(ns, "path", ""),
                         created_ns, life)
            w[L.W_MAGIC] = L.MAGIC  # last: the resource is whole
            self._claim_handle_byte()
            self._claim_writer_slot()
        except BaseException:
            self._release_fds()
            ns.unlink_all()  # ours: we created the control block exclusively
            raise
        finally:
            self._meta_depth = 0
            if self._ctrl_fd >= 0:
                locks.unlock(self._ctrl_fd, L.LOCK_META)
        self._sync_life()

    def _attach(self) -> None:
        ns = self._ns
        self._ctrl_fd = ns.open("c", create=False)
        try:
            for attempt in range(100):
                locks.lock(self._ctrl_fd, L.LOCK_META)
                self._meta_depth += 1
                try:
                    size = segment_size(self._ctrl_fd)
                    if size >= L.CTRL_SIZE:
                        if self._ctrl_map is None:
                            self._map_ctrl()
                        if self._words[L.W_MAGIC] != 0 or attempt == 99:
                            L.validate_block(self._words, size)
                            if L.current_life(self._words).unlinked:
                                # Its unlinker died before removing every name: finish.
                                self._remove_names(self._words)
                                raise ResourceNotFound(f"no resource {ns.label!r}")
                            self._claim_handle_byte()
                            if self._writable and not self._lazy_writer:
                                self._claim_writer_slot()
                            break
                    elif attempt == 99:
                        raise CorruptResource(
                            f"control block of {ns.label!r} is {size} bytes: its creator died"
                        )
                finally:
                    self._meta_depth -= 1
                    locks.unlock(self._ctrl_fd, L.LOCK_META)
                time.sleep(0.01)  # a creator between shm_open and taking the meta lock
            self._sync_life()
            # Map the data and read the coverage now: what a handle has mapped stays
            # readable even if the resource is unlinked later.
            self._refresh()
            self._ensure_rmap(0)
        except BaseException:
            self._release_fds()
            raise

    def _attach_static(self, fd: int) -> None:
        """A plain file opened read-only: committed, never changes, needs no shared state.
        It is mapped now, whole: what this handle reads is the file it opened, even if
        another one is renamed over the path later."""
        length = segment_size(fd)
        self._ctrl_map = mmap.mmap(-1, L.CTRL_SIZE)
        self._w = memoryview(self._ctrl_map).cast("Q")
        life = L.Life(status=State.COMMITTED, final_len=length, final_given=1,
                      capacity=length, data_capacity=length)
        L.init_block(self._w, "mmap", self._ns.label, 0, life)
        self._sync_life()
        m = map_segment(fd, length, writable=False) if length else None
        self._rmap, self._rview = m, memoryview(m) if m is not None else memoryview(b"")
        self._rpop = bytearray((length >> _CHUNK_SHIFT) + 1)
        self._rsize, self._rgen = length, 0

    def _claim_handle_byte(self) -> None:
        """Hold one of the handle lock bytes for this handle's life (best effort: with more
        than N_HANDLES handles open, the extra ones are simply not counted)."""
        start = (os.getpid() * 31 + id(self)) % L.N_HANDLES
        for i in range(L.N_HANDLES):
            k = (start + i) % L.N_HANDLES
            if locks.try_lock(self._ctrl_fd, L.LOCK_HANDLE_BASE + k):
                return

    def _map_ctrl(self) -> None:
        # Map through a descriptor of its own: mmap keeps a duplicate of the descriptor it
        # maps, and were that the locking one, a forked child's inherited mapping would keep
        # this process's writer lock alive after it died.
        # Reopened through /proc, not by name: the name may already lead to a resource
        # created after an unlink, and the block we lock must be the block we map.
        try:
            mfd = os.open(f"/proc/self/fd/{self._ctrl_fd}", os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise StorageError(f"reopening the control block of {self._ns.label!r}: {exc}") from exc
        try:
            self._ctrl_map = map_segment(mfd, L.CTRL_SIZE, writable=True)
        finally:
            os.close(mfd)
        self._w = memoryview(self._ctrl_map).cast("Q")

    @property
    def _words(self) -> memoryview:
        w = self._w
        if w is None:
            raise ResourceClosed(f"resource {self._ns.label!r} is closed")
        return w

    # ------------------------------------------------------------------ meta lock
    @contextlib.contextmanager
    def _meta(self) -> Iterator[memoryview]:
        """The meta lock (see the module doc), with this handle's thread lock."""
        with self._tlock:
            w = self._live_words()
            if self._static:
                yield w
                return
            if self._meta_depth:  # re-entered by this thread: the lock is ours already
                yield w
                return
            locks.lock(self._ctrl_fd, L.LOCK_META)
            self._meta_depth += 1
            try:
                yield w
            finally:
                self._meta_depth -= 1
                locks.unlock(self._ctrl_fd, L.LOCK_META)

    def _publish(self, w: memoryview, **changes: Any) -> L.Life:
        """Change the lifecycle atomically (one store); call with the meta lock held."""
        life = dataclasses.replace(L.current_life(w), **changes)
        L.publish_life(w, life)
        return life

    # ------------------------------------------------------------------ lifecycle view
    def _live_words(self) -> memoryview:
        if self._forked:
            self._reattach()
        w = self._w
        if w is None or self._closed:
            raise ResourceClosed(f"resource {self._ns.label!r} is closed")
        return w

    def _sync_life(self) -> None:
        """Reload the lifecycle if it changed (one load when it did not), with the base
        coverage a generation needs: the data generation's base joins the local view, and
        during a rewrite the frozen view is loaded. A base segment that a later commit
        retired meanwhile means the lifecycle moved on: read it again."""
        w = self._words
        if w[L.W_LIFE_SEQ] == self._life_seq:
            return
        while True:
            seq, life = L.read_life(w)
            try:
                L.validate_life(life)
            except CorruptResource as exc:
                raise CorruptResource(f"{self._ns.label!r}: {exc}") from None
            try:
                base = frozen = None
                fresh = life.data_gen != self._data_gen or self._life_seq == -1  # -1: never
                if not self._static:
                    if life.data_gen and (fresh or self._base_gen != life.data_gen):
                        base = self._base_ranges(life.data_gen)
                    if life.write_gen != life.data_gen and (
                            self._frozen is None or self._frozen[0] != life.write_gen):
                        frozen = RangeSet(self._base_ranges(life.write_gen))
            except ResourceNotFound:
                if life.unlinked:  # gone: keep what this view has; waits will say so
                    base = frozen = None
                elif w[L.W_LIFE_SEQ] != seq:
                    continue
                else:
                    raise
            break
        self._status = State(life.status)
        self._final_len = life.final_len
        self._final_given = bool(life.final_given)
        self._capacity = life.capacity
        self._data_capacity = life.data_capacity
        self._frozen_len = life.frozen_len
        self._used_mask = life.used_mask
        self._data_ino = life.data_ino
        self._unlinked = bool(life.unlinked)
        self._reason = life.reason
        self._write_gen = life.write_gen
        if fresh:
            self._cov = RangeSet()
            self._cursors.clear()
            self._base_gen = 0
        if base is not None:
            self._add_ranges(base)
            self._base_gen = life.data_gen
        if frozen is not None:
            self._frozen = (life.write_gen, frozen)
        self._data_gen = life.data_gen
        self._seen_seq = seq  # what this view is of (the _refresh re-check compares to it)
        # An unlinked resource never caches its lifecycle: every call takes the slow path,
        # where writes and waits on missing bytes raise ResourceNotFound.
        self._life_seq = -2 if life.unlinked else seq

    def _refresh(self) -> None:
        """Bring the local coverage view up to date: the lifecycle (with the generation's
        base coverage), then every writer slot of the generation. Retried if the lifecycle
        changed while it drained (a reactivate may have moved a slot to the next one)."""
        w = self._words
        while True:
            self._sync_life()
            if self._static or self._write_gen != self._data_gen:
                return  # static, or a rewrite: readers see the frozen committed generation
            seq = self._seen_seq
            gen = self._data_gen
            used = self._used_mask
            add = self._add_range
            while used:
                low = used & -used
                slot = low.bit_length() - 1
                used ^= low
                if w[L.slot_word(slot, L.S_CGEN)] != gen:
                    continue
                cur = self._cursors.get(slot)
                if cur is None:
                    cur = self._cursors[slot] = SlotCursor(slot)
                if cur.pending(w):
                    cur.drain(w, add, self._open_journal, self._add_ranges)
            if w[L.W_LIFE_SEQ] == seq:
                return

    def _add_range(self, start: int, end: int) -> None:
        self._cov.add(start, end)
        for fn in self._listeners:
            fn(start, end)

    def _add_ranges(self, pairs: list[tuple[int, int]]) -> None:
        self._cov.add_many(pairs)
        for fn in self._listeners:
            for s, e in pairs:
                fn(s, e)

    def _open_journal(self, slot: int, gen: int) -> memoryview | None:
        key = (slot, gen)
        hit = self._journals.get(key)
        if hit is not None:
            return hit[1]
        try:
            fd = self._open_named(f"j{slot:x}_{gen & 0xFFFF:04x}")
        except ResourceNotFound:
            if L.current_life(self._words).unlinked:
                raise ResourceNotFound(
                    f"resource {self._ns.label!r} was unlinked before this handle read"
                    f" writer slot {slot}'s coverage"
                ) from None
            return None  # compacted away under us: the caller reloads the new generation
        try:
            size = segment_size(fd)
            if size < L.JOURNAL_HEADER:
                return None  # being created: the writer has not published it yet
            size = _segment_shape(fd, f"journal {slot}/{gen}", self._ns.label)
            m = map_segment(fd, size, writable=False)
        finally:
            os.close(fd)
        view = memoryview(m).cast("Q")
        # Forget journals of the slot we will not read again.
        for k in [k for k in self._journals if k[0] == slot]:
            self._release_map(self._journals.pop(k))
        self._journals[key] = (m, view)
        return view

    def _create_journal(self, slot: int, gen: int, capacity: int) -> memoryview:
        """The writer's side: a fresh journal segment (truncating a leftover of a writer of
        this slot that died between creating and publishing it)."""
        suffix = f"j{slot:x}_{gen & 0xFFFF:04x}"
        # Under the meta lock, which unlink() holds while it flags the resource and removes
        # its names: once the name may belong to a new resource created after an unlink,
        # this incarnation is flagged, and we never create (or truncate) it.
        with self._meta() as w:
            if L.current_life(w).unlinked:
                raise ResourceNotFound(f"resource {self._ns.label!r} was unlinked")
            fd = self._ns.open(suffix, create=True, truncate=True)
        try:
            reserve(fd, L.journal_size(capacity), f"journal of {self._ns.label!r}")
            m = map_segment(fd, L.journal_size(capacity), writable=True)
        finally:
            os.close(fd)
        return self._keep_wjournal(m)

    def _open_named(self, suffix: str, *, writable: bool = False) -> int:
        """Open one of this resource's objects by name, and make sure it is ours: names are
        reused by a resource created after an unlink, and unlink flags this incarnation
        before it removes any name, so a flag still clear after the open proves the object
        belongs to this incarnation."""
        fd = self._ns.open(suffix, create=False)
        if L.current_life(self._words).unlinked:
            os.close(fd)
            raise ResourceNotFound(f"resource {self._ns.label!r} was unlinked")
        return fd

    def _open_wjournal(self, slot: int, gen: int) -> memoryview | None:
        """The writer's side: map an existing journal of our slot writable (a resume)."""
        try:
            fd = self._open_named(f"j{slot:x}_{gen & 0xFFFF:04x}")
        except ResourceNotFound:
            return None
        try:
            size = _segment_shape(fd, f"journal {slot}/{gen}", self._ns.label)
            m = map_segment(fd, size, writable=True)
        finally:
            os.close(fd)
        return self._keep_wjournal(m)

    def _keep_wjournal(self, m: mmap.mmap) -> memoryview:
        view = memoryview(m).cast("Q")
        if self._wjournal is not None:
            self._release_map(self._wjournal)
        self._wjournal = (m, view)
        return view

    def _drop_journal(self, slot: int, gen: int) -> None:
        """Unlink a superseded journal, under the meta lock and only while this incarnation
        is not unlinked: otherwise the name may be a newer resource's journal."""
        with self._meta() as w:
            if not L.current_life(w).unlinked:
                self._ns.unlink(f"j{slot:x}_{gen & 0xFFFF:04x}")

    def _frozen_view(self) -> RangeSet:
        """During a rewrite: the committed generation as readers keep seeing it until the
        next commit. It is the base coverage of the generation being written (the rewrite
        started as a copy of exactly these bytes), loaded by ``_sync_life``."""
        frozen = self._frozen
        if frozen is None or frozen[0] != self._write_gen:
            # only when the resource was unlinked before this handle read the base
            raise ResourceNotFound(f"resource {self._ns.label!r} was unlinked")
        return frozen[1]

    def _base_ranges(self, gen: int) -> list[tuple[int, int]]:
        """The base coverage of generation ``gen`` > 0: the committed view of the generation
        it was copied from, frozen when it was created (segment ``b<gen>``)."""
        return self._read_ranges(f"b{gen & 0xFFFF:04x}")

    def _write_ranges(self, suffix: str, ranges: list[tuple[int, int]]) -> None:
        """An immutable segment in journal format holding ``ranges``."""
        cap = max(len(ranges), 1)
        fd = self._ns.open(suffix, create=True, truncate=True)
        try:
            size = L.journal_size(cap)
            reserve(fd, size, f"frozen coverage of {self._ns.label!r}")
            m = map_segment(fd, size, writable=True)
        finally:
            os.close(fd)
        try:
            words = memoryview(m).cast("Q")
            for i, (s, e) in enumerate(ranges):
                words[L.JOURNAL_HEADER // 8 + 2 * i] = s
                words[L.JOURNAL_HEADER // 8 + 2 * i + 1] = e
            L.pack_journal_header(words.cast("B"), L.N_WRITERS, 0, len(ranges), 0, cap)
            words.release()
        finally:
            m.close()

    def _read_ranges(self, suffix: str) -> list[tuple[int, int]]:
        fd = self._open_named(suffix)
        try:
            size = _segment_shape(fd, suffix, self._ns.label)
            m = map_segment(fd, size, writable=False)
        finally:
            os.close(fd)
        try:
            with memoryview(m) as raw, raw.cast("Q") as words:
                _slot, _gen, n, _base, _cap = L.unpack_journal_header(raw)
                flat = words[L.JOURNAL_HEADER // 8 : L.JOURNAL_HEADER // 8 + 2 * n].tolist()
        finally:
            m.close()
        return list(zip(flat[0::2], flat[1::2], strict=True))

    # ------------------------------------------------------------------ writer slots
    def _claim_writer_slot(self) -> None:
        """Take a free writer slot (meta lock held). Prefers a used slot whose writer is gone,
        so its coverage is continued rather than a new journal started."""
        w = self._words
        life = L.current_life(w)
        used = life.used_mask
        order = sorted(range(L.N_WRITERS), key=lambda i: not (used >> i) & 1)
        for slot in order:
            if locks.try_lock(self._ctrl_fd, L.LOCK_WRITER_BASE + slot):
                break
        else:
            raise StorageError(f"{self._ns.label!r} already has {L.N_WRITERS} live writers")
        try:
            w[L.slot_word(slot, L.S_PID)] = os.getpid()
            pub = SlotPublisher(w, slot, self._create_journal, self._open_wjournal,
                                self._drop_journal)
            gen = life.write_gen
            if w[L.slot_word(slot, L.S_CGEN)] != gen or not (used >> slot) & 1:
                if (used >> slot) & 1 or w[L.slot_word(slot, L.S_HEAD)]:
                    pub.reset([])  # coverage of an older generation: start over
                w[L.slot_word(slot, L.S_CGEN)] = gen
            if not (used >> slot) & 1:
                self._publish(w, used_mask=used | (1 << slot))
        except BaseException:
            locks.unlock(self._ctrl_fd, L.LOCK_WRITER_BASE + slot)
            raise
        self._slot, self._pub, self._pub_gen = slot, pub, gen
        self._lazy_writer = False

    def _rebase_slot(self) -> None:
        """Our slot's coverage belongs to an older generation: start it over in the new one."""
        with self._meta() as w:
            life = L.current_life(w)
            gen = life.write_gen
            assert self._pub is not None and self._slot is not None
            if w[L.slot_word(self._slot, L.S_CGEN)] != gen:
                self._pub.reset([])
                w[L.slot_word(self._slot, L.S_CGEN)] = gen
            if not (life.used_mask >> self._slot) & 1:
                self._publish(w, used_mask=life.used_mask | (1 << self._slot))
            self._pub_gen = gen

    def _recently_alive(self) -> bool:
        """Writer liveness for a parked waiter, probed at most once per ``SAFETY_NET``: a
        wait that parks again and again (a ping-pong) pays no system call for it, and a
        waiter still learns of the last writer's death within two naps."""
        now = time.monotonic()
        if now - self._probed_at < SAFETY_NET:
            return True
        if not self._writer_alive():
            return False
        self._probed_at = now
        return True

    def _writer_alive(self) -> bool:
        if self._slot is not None or self._static:
            return True
        return locks.probe(self._ctrl_fd, L.LOCK_WRITER_BASE, L.N_WRITERS)

    # ------------------------------------------------------------------ data mappings
    def _release_map(self, entry: tuple[mmap.mmap, memoryview]) -> None:
        self._close_map(*entry)

    def _close_map(self, m: mmap.mmap | None, view: memoryview | None) -> None:
        if view is not None:
            view.release()
        if m is not None:
            try:
                m.close()
            except BufferError:
                pass  # exported views keep the mapping alive; the kernel unmaps it on GC

    def _data_fd(self, gen: int, *, staged: bool) -> int:
        ns = self._ns
        fd = self._open_named(ns.data_suffix(gen, staged=staged))
        if ns.kind == "mmap" and not staged and self._data_ino:
            # The file at the path is generation `gen`'s if it has its inode number, and
            # if no newer generation was published before we opened it: numbers of
            # retired files are reused, and a commit publishes before it renames.
            w = self._words
            if os.fstat(fd).st_ino != self._data_ino or (
                    w[L.W_LIFE_SEQ] != self._seen_seq and L.read_life(w)[1].data_gen != gen):
                os.close(fd)
                raise _Retry
        return fd

    def _repair_data_file(self) -> None:
        """mmap: the data file is not the one the committed generation names. A commit
        publishes the new generation first and renames its staged file over the path
        after; if that writer died in between, finish the rename for it (roll forward)."""
        ns = self._ns
        if not isinstance(ns, DirNamespace):
            return
        with self._meta():
            self._sync_life()
            self._raise_if_unlinked()
            staged = ns.data_suffix(self._data_gen, staged=True)
            try:
                if os.stat(ns.path).st_ino == self._data_ino:
                    return  # the committing writer finished meanwhile
            except FileNotFoundError:
                pass
            try:
                if os.stat(os.path.join(ns.sidecar, staged)).st_ino == self._data_ino:
                    ns.publish_data(self._data_gen)
                    return
            except FileNotFoundError:
                pass
        raise CorruptResource(f"data file of {ns.label!r} is not the committed generation's")

    def _ensure_rmap(self, need: int) -> memoryview:
        """A read mapping of the readable generation that covers ``[0, need)``."""
        if self._rview is not None and self._rgen == self._data_gen and need <= self._rsize:
            return self._rview
        want = self._data_gen
        for attempt in range(1000):
            seq = self._life_seq
            self._sync_life()
            if self._data_gen != want:
                need = 0  # a newer generation: the caller re-reads its length and asks again
            gen, cap = self._data_gen, self._data_capacity
            if self._static:
                gen, cap = 0, self._final_len
            if self._rview is not None and self._rgen == gen and need <= self._rsize:
                return self._rview
            if (self._wmap is not None and self._wgen == gen and gen == self._write_gen
                    and need <= self._wsize):
                # A writer reads through the mapping it writes (no second mapping, and it
                # keeps working after an unlink removed the data's name).
                self._close_map(self._rmap, self._rview)
                self._rmap, self._rview = None, memoryview(self._wmap).toreadonly()
                self._rsize, self._rgen = self._wsize, gen
                self._rpop = self._wpop
                return self._rview
            if self._static:  # mapped whole at open; nothing past it is readable
                raise CorruptResource(f"{self._ns.label!r}: read past the plain file's end")
            try:
                fd = self._data_fd(gen, staged=False)
            except _Retry:
                if attempt and attempt % 100 == 0:
                    self._repair_data_file()
                os.sched_yield()
                continue
            except ResourceNotFound:
                # A commit may have removed this generation's data after we read the
                # lifecycle: retry with the new one; anything else is a real absence.
                if self._words[L.W_LIFE_SEQ] != seq and not self._unlinked:
                    continue
                raise
            try:
                size = min(cap, segment_size(fd))
                if size < need:
                    raise CorruptResource(
                        f"data of {self._ns.label!r} is {size} bytes, its control block"
                        f" promises {need}"
                    )
                try:
                    m = map_segment(fd, size, writable=False) if size else None
                except StorageError:
                    if segment_size(fd) < size:
                        continue  # a commit trimmed the file meanwhile: read the lifecycle again
                    raise
            finally:
                os.close(fd)
            self._close_map(self._rmap, self._rview)
            self._rmap = m
            self._rview = memoryview(m) if m is not None else memoryview(b"")
            self._rpop = bytearray((size >> _CHUNK_SHIFT) + 1)
            self._rsize = size
            self._rgen = gen
            return self._rview
        raise CorruptResource(f"data file of {self._ns.label!r} keeps changing under us")

    def _ensure_wmap(self, end: int) -> memoryview:
        """A writable mapping of the write generation covering ``[0, end)``, growing the
        resource (doubling) when ``end`` is past its capacity."""
        if self._wview is not None and self._wgen == self._write_gen and end <= self._wsize:
            return self._wview
        if end > self._capacity or self._wgen != self._write_gen:
            self._sync_life()
        if end > self._capacity:
            self._grow(end)
        gen = self._write_gen
        try:
            fd = self._data_fd(gen, staged=gen != self._data_gen)
        except (ResourceNotFound, _Retry):
            # A commit retired the generation this write was for (or renamed a newer one
            # over the path): the write lost the race.
            self._sync_life()
            if self._unlinked:
                raise ResourceNotFound(f"resource {self._ns.label!r} was unlinked") from None
            self._raise_for_status()
            raise ReadOnlyError(f"{self._ns.label!r} was committed during this write") from None
        try:
            if isinstance(self._ns, DirNamespace) and segment_size(fd) < self._capacity:
                # A committer died after trimming the file and before its commit point:
                # the resource is still active, so restore the reservation it trimmed.
                reserve(fd, self._capacity, f"data of {self._ns.label!r}")
            size = min(self._capacity, segment_size(fd))
            m = map_segment(fd, size, writable=True)
        finally:
            os.close(fd)
        self._close_map(self._wmap, self._wview)
        self._wmap, self._wview, self._wsize, self._wgen = m, memoryview(m), size, gen
        self._wpop = bytearray((size >> _CHUNK_SHIFT) + 1)
        if end > size:
            self._sync_life()
            if self._status is State.ACTIVE and self._write_gen == gen:
                raise CorruptResource(f"data of {self._ns.label!r} is smaller than its capacity")
            # a commit won the race since we grew: the write is refused, not torn
            self._raise_for_status()
            raise ReadOnlyError(f"{self._ns.label!r} was committed during this write")
        return self._wview

    def _grow(self, end: int) -> None:
        with self._meta() as w:
            life = L.current_life(w)
            if life.unlinked:
                raise ResourceNotFound(f"resource {self._ns.label!r} was unlinked")
            if life.status != State.ACTIVE or life.write_gen != self._pub_gen:
                # A commit (or a new generation) won the race with this write: never grow,
                # and so never change, what another writer has committed.
                self._sync_life()
                self._raise_for_status()
                raise ReadOnlyError(f"{self._ns.label!r} was committed during this write")
            cap = life.capacity
            if end <= cap:
                self._sync_life()
                return
            new = _page_up(max(end, cap * 2))
            if new > _MAX:
                new = _page_up(end)
            gen = life.write_gen
            staged = gen != life.data_gen
            ns = self._ns
            fd = ns.open(ns.data_suffix(gen, staged=staged), create=False)
            try:
                reserve(fd, new, f"data of {ns.label!r}")  # before anyone may touch it
                if self._prefault and not isinstance(ns, DirNamespace):
                    prefault_pages(fd, cap, new)
            finally:
                os.close(fd)
            if staged:
                self._publish(w, capacity=new)
            else:
                self._publish(w, capacity=new, data_capacity=new)
        self._sync_life()

    # ------------------------------------------------------------------ checks
    def _require_writer(self, what: str) -> memoryview:
        w = self._live_words()
        if not self._writable:
            raise ReadOnlyError(f"{what}: {self._ns.label!r} was opened read-only")
        if L.current_life(w).unlinked:
            raise ResourceNotFound(f"{what}: resource {self._ns.label!r} was unlinked")
        if self._slot is None:
            if not self._lazy_writer:  # static
                raise ReadOnlyError(f"{what}: this handle holds no writer slot")
            # A writer handle inherited through fork claims its slot on first use, so a
            # forked child that only reads never counts as a live writer.
            with self._tlock:
                if self._meta_depth:
                    self._claim_writer_slot()
                else:
                    with self._meta():
                        if self._slot is None:
                            self._claim_writer_slot()
            self._sync_life()
        return w

    def _raise_if_unlinked(self) -> None:
        if self._unlinked:
            raise ResourceNotFound(f"resource {self._ns.label!r} was unlinked")

    def _raise_for_status(self) -> None:
        st = self._status
        if st is State.FAILED:
            raise ResourceFailed(self._reason, self._ns.label)
        if st is State.CANCELLED:
            raise Cancelled(f"resource {self._ns.label!r} was cancelled")

    # ------------------------------------------------------------------ writing
    def write_at(self, offset: int, data: Any) -> None:
        """Write ``data`` (any bytes-like object) at ``offset`` and publish the range.

        Overlapping writes are allowed; the last one wins. Grows the resource (doubling)
        when the write ends past its capacity. Does not block (beyond a growth).

        Raises:
            InvalidRange: ``offset`` negative or the end past 2**63.
            ReadOnlyError: a read-only handle, or a committed resource not reactivated.
            ResourceFailed, Cancelled: the resource failed or was cancelled.
            StorageFull: growth found no room.
        """
        mv = memoryview(data)
        if mv.ndim != 1 or mv.itemsize != 1 or not mv.contiguous:
            mv = memoryview(mv.tobytes()) if not mv.contiguous else mv.cast("B")
        end = offset + mv.nbytes
        if offset < 0 or end > _MAX:
            raise InvalidRange(offset, end, "write outside [0, 2**63)")
        if end == offset:
            return
        with self._tlock:
            w = self._w
            if w is None or self._slot is None or self._closed or self._forked:
                w = self._require_writer("write_at")
            if (w[_W_LIFE_SEQ] != self._life_seq or self._status is not _ACTIVE
                    or self._pub_gen != self._write_gen):
                self._prepare_write()
            buf = self._wview
            if buf is None or end > self._wsize or self._wgen != self._write_gen:
                buf = self._ensure_wmap(end)
                # Mapping may read a newer lifecycle: the bytes must go to the generation
                # our slot publishes into, or coverage would claim bytes another file holds.
                while self._wgen != self._pub_gen or self._status is not _ACTIVE:
                    self._prepare_write()
                    buf = self._ensure_wmap(end)
            pop = self._wpop
            if not (pop[offset >> _CHUNK_SHIFT] and pop[(end - 1) >> _CHUNK_SHIFT]):
                _populate(self._wmap, pop, offset, end, self._wsize, _MADV_POPULATE_WRITE)
            buf[offset:end] = mv
            self._pub.publish(offset, end)  # type: ignore[union-attr]  # a writer has one
            _FENCE.acquire()  # full barrier between publishing and reading the waiter mask
            _FENCE.release()
            mask = w[_W_WAITERS_MASK]
            if mask:
                self._wake(w, mask, offset, end)
        if self._on_write:
            for fn in self._on_write:
                fn(offset, end)

    def _prepare_write(self) -> None:
        """The slow half of write_at: a lifecycle change since the last write. On return
        the cached lifecycle is active and our slot publishes into its write generation
        (the one the data mapping is checked against)."""
        while True:
            self._sync_life()
            self._raise_if_unlinked()
            if self._status is not State.ACTIVE:
                self._raise_for_status()
                raise ReadOnlyError(
                    f"{self._ns.label!r} is committed: reactivate() it before writing")
            if self._wsize > self._capacity:
                # A commit trimmed the file under our mapping (mmap) and the resource is
                # active again in the same generation: map it anew, growing it first.
                self._close_map(self._wmap, self._wview)
                self._wmap = self._wview = None
                self._wsize, self._wgen = 0, -1
            if self._pub_gen == self._write_gen:
                return
            # Moves the slot to the write generation current under the meta lock, which may
            # be newer than the one just read: read the lifecycle again before writing.
            self._rebase_slot()

    def _wake(self, w: memoryview, mask: int, start: int, end: int) -> None:
        """Post the waiters in ``mask`` whose range overlaps ``[start, end)``."""
        while mask:
            low = mask & -mask
            i = low.bit_length() - 1
            mask ^= low
            base = L.waiter_word(i, 0)
            if w[base + L.T_START] < end and start < w[base + L.T_END]:
                tok = w[base + L.T_TOKEN]
                if tok != w[base + L.T_POSTED]:
                    w[base + L.T_POSTED] = tok
                    self._post(i)

    def _wake_all(self) -> None:
        w = self._words
        full_barrier()
        mask = w[L.W_WAITERS_MASK]
        while mask:
            low = mask & -mask
            i = low.bit_length() - 1
            mask ^= low
            w[L.waiter_word(i, L.T_POSTED)] = w[L.waiter_word(i, L.T_TOKEN)]
            self._post(i)

    def _post(self, slot: int) -> None:
        waker = self._wakers.get(slot)
        if waker is None:
            try:
                waker = self._ns.waker(slot, create=False)
            except FileNotFoundError:
                return  # the waiter's semaphore is gone (resource unlinked)
            self._wakers[slot] = waker
        waker.post()

    # ------------------------------------------------------------------ lifecycle
    def commit(self, final_len: int | None = None) -> None:
        """Mark the resource complete. ``final_len`` fixes its length (bytes never written
        below it read as zeros); ``None`` uses the written extent. Wakes every waiter.

        A second commit with the same length is a no-op. Call it after every writer of a
        pool has finished writing: a write racing a commit may be refused.

        Raises:
            ReadOnlyError: read-only handle, or committed already with another length.
            ResourceFailed, Cancelled: the resource failed or was cancelled.
            InvalidRange: ``final_len`` negative or past 2**63.
        """
        if final_len is not None and not 0 <= final_len < _MAX:
            raise InvalidRange(0, final_len, "final_len outside [0, 2**63)")
        with self._meta() as w:
            self._require_writer("commit")
            self._sync_life()
            life = L.current_life(w)
            state = State(life.status)
            new = transition(state, Event.COMMIT, life.reason)
            if state is State.COMMITTED:
                if final_len is None or final_len == life.final_len:
                    return
                raise ReadOnlyError(f"{self._ns.label!r} is committed with length {life.final_len}")
            gen, data_gen = life.write_gen, life.data_gen
            extent = self._extent(w, life)
            length = extent if final_len is None else final_len
            ns = self._ns
            cap, new_gen, ino, staged = life.capacity, gen, life.data_ino, gen != data_gen
            if isinstance(ns, DirNamespace):
                if not staged and length < extent:
                    # Never shrink a file under readers of the bytes the commit cuts:
                    # stage a copy of the first `length` bytes as a new generation instead.
                    new_gen, staged = gen + 1, True
                    self._stage_copy(new_gen, length, life.capacity)
                    self._write_ranges(f"b{new_gen & 0xFFFF:04x}", [(0, length)] if length else [])
                if self._wmap is not None:
                    self._wmap.flush()
                fd = ns.open(ns.data_suffix(new_gen, staged=staged), create=False)
                try:
                    size = segment_size(fd)
                    # Shrinking cuts only bytes no reader may touch, but another writer of
                    # the pool may be writing past `length` into the file it maps (SIGBUS):
                    # with one attached, the last writer to close trims the file instead.
                    mine = new_gen != gen or not self._other_writers_alive()
                    if size < length or (size > length and mine):
                        os.ftruncate(fd, length)
                    os.fsync(fd)
                    if staged:
                        ino = os.fstat(fd).st_ino
                finally:
                    os.close(fd)
                cap = length
            elif length > cap:
                fd = ns.open(ns.data_suffix(gen, staged=staged), create=False)
                try:
                    reserve(fd, _page_up(length), f"data of {ns.label!r}")
                finally:
                    os.close(fd)
                cap = _page_up(length)
            self._publish(  # the commit point
                w, status=new, final_len=length, final_given=int(final_len is not None),
                data_gen=new_gen, write_gen=new_gen, capacity=cap, data_capacity=cap,
                frozen_len=0, used_mask=life.used_mask if new_gen == gen else 0, data_ino=ino)
            if new_gen != data_gen:  # a new generation is published: retire the old one
                if isinstance(ns, DirNamespace):
                    ns.publish_data(new_gen)  # rename; a reader rolls it forward if we die
                # (for mmap: the staged file of a committer that died before its rename)
                ns.unlink(ns.data_suffix(data_gen, staged=True))
                if data_gen:
                    ns.unlink(f"b{data_gen & 0xFFFF:04x}")
                self._retire_idle_slots(w, life.used_mask if new_gen == gen else 0)
        self._sync_life()
        self._wake_all()
        for fn in self._on_commit:
            fn(length)

    def _remove_names(self, w: memoryview) -> None:
        """Remove this incarnation's names, in two phases (meta lock held). Phase 1, while
        ``UNLINKED`` is 1: everything but the control block. No resource of the same name
        can exist yet (its creator makes the control block first, exclusively), so all of
        it is ours; done, ``UNLINKED`` becomes 2. Phase 2: the control block, only while it
        is still ours. Once it is gone a new resource may take the name, and nothing of
        ours is removed after that. Whoever finds an unlinker's work half done (it died)
        finishes it from the phase it reached; unlinkers queue on the meta lock."""
        ns = self._ns
        life = L.current_life(w)
        if not life.unlinked:
            life = self._publish(w, unlinked=1)
        if life.unlinked == 1:
            ns.unlink_contents()
            self._publish(w, unlinked=2)
        if self._control_is_ours():
            ns.unlink_control()
        elif not ns.exists("c"):
            ns.tidy()  # an unlinker died between removing the control block and the sidecar

    def _control_is_ours(self) -> bool:
        """Does the control block's name lead to this handle's control block (and not to a
        resource created under the same name after an unlink, nor to nothing)?"""
        if isinstance(self._ns, MemNamespace):
            return True
        try:
            fd = self._ns.open("c", create=False)
        except StorageError:  # gone (ResourceNotFound), or not ours to open
            return False
        try:
            a, b = os.fstat(fd), os.fstat(self._ctrl_fd)
            return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
        finally:
            os.close(fd)

    def _trim_if_last_writer(self) -> None:
        """mmap: a commit made while other writers were attached left the data file at its
        reservation; the last writer to leave makes it hold exactly the committed bytes."""
        ns = self._ns
        if not isinstance(ns, DirNamespace):
            return
        with self._meta() as w:
            life = L.current_life(w)
            if (life.status != State.COMMITTED or life.unlinked or self._other_writers_alive()):
                return
            with contextlib.suppress(OSError, StorageError):
                fd = self._open_named(ns.data_suffix(life.data_gen, staged=False))
                try:
                    if os.fstat(fd).st_ino == life.data_ino and segment_size(fd) > life.final_len:
                        os.ftruncate(fd, life.final_len)
                finally:
                    os.close(fd)

    def _other_writers_alive(self) -> bool:
        """Is a writer other than this handle attached (our own locks never conflict)?"""
        return locks.probe(self._ctrl_fd, L.LOCK_WRITER_BASE, L.N_WRITERS)

    def _retire_idle_slots(self, w: memoryview, keep: int) -> None:
        """After a new generation is published: drop the journals of writer slots that hold
        no coverage of it and whose writer is gone (meta lock held). A later writer of such
        a slot starts a fresh journal."""
        for slot in range(L.N_WRITERS):
            jgen_w = L.slot_word(slot, L.S_JGEN)
            if slot == self._slot or (keep >> slot) & 1 or not w[jgen_w]:
                continue
            if not locks.try_lock(self._ctrl_fd, L.LOCK_WRITER_BASE + slot):
                continue  # a live writer: it rebases its slot on its next write
            try:
                old = w[jgen_w]
                w[jgen_w] = 0
                self._drop_journal(slot, old)
            finally:
                locks.unlock(self._ctrl_fd, L.LOCK_WRITER_BASE + slot)

    def _extent(self, w: memoryview, life: L.Life) -> int:
        """The written extent of the generation being written: its slots' extents, and
        during a rewrite the length it was copied from."""
        gen, used = life.write_gen, life.used_mask
        ext = life.frozen_len if gen != life.data_gen else 0
        for slot in range(L.N_WRITERS):
            if (used >> slot) & 1 and w[L.slot_word(slot, L.S_CGEN)] == gen:
                ext = max(ext, w[L.slot_word(slot, L.S_EXTENT)])
        return ext

    def _stage_copy(self, gen: int, length: int, capacity: int) -> None:
        """Write the first ``length`` readable bytes into the staged data of ``gen``."""
        ns = self._ns
        fd = ns.open(ns.data_suffix(gen, staged=True), create=True, truncate=True)
        try:
            cap = _page_up(max(length, capacity))
            reserve(fd, cap, f"data of {ns.label!r}")
            if length:
                src = self._ensure_rmap(length)
                m = map_segment(fd, cap, writable=True)
                try:
                    m[0:length] = src[0:length]
                finally:
                    m.close()
        finally:
            os.close(fd)

    def fail(self, reason: str) -> None:
        """Fail the resource: every wait and read, in every process, raises
        ``ResourceFailed(reason)`` until a writer reactivates it. A second fail keeps the
        first reason. Wakes every waiter."""
        with self._meta() as w:
            self._require_writer("fail")
            life = L.current_life(w)
            state = State(life.status)
            transition(state, Event.FAIL, life.reason)
            if is_noop(state, Event.FAIL):
                return
            # reactivate() tells a resource that was never committed (reactivated in place)
            # by FINAL_LEN 0 not given; an empty commit(None) must not pass for one: its
            # generation is committed (mmap: capacity 0, file trimmed) and a pool writer's
            # write racing that commit left coverage past 0 in its slots. Invisible while
            # failed, and the same length either way.
            given = 1 if state is State.COMMITTED and life.final_len == 0 else life.final_given
            self._publish(w, status=State.FAILED, reason=str(reason), final_given=given)
        self._sync_life()
        self._wake_all()

    def cancel(self) -> None:
        """Cancel the resource everywhere: every operation, in every process, raises
        ``Cancelled``. Terminal. Wakes every waiter."""
        with self._meta() as w:
            self._require_writer("cancel")
            life = L.current_life(w)
            state = State(life.status)
            transition(state, Event.CANCEL, life.reason)
            if is_noop(state, Event.CANCEL):
                return
            self._publish(w, status=State.CANCELLED)
        self._sync_life()
        self._wake_all()

    def reactivate(self) -> None:
        """Make a committed (or failed) resource writable again.

        After a commit this starts a rewrite: a new generation that begins as a copy of the
        committed bytes (O(length)). Readers keep seeing the committed bytes, and waits on
        bytes past them block, until the next ``commit`` publishes the new generation at
        once; a rewrite never tears a read. So does a committed resource that failed since.
        After a failure while active the resource simply becomes active again with the
        coverage it had (a refetch). Wakes every waiter.
        """
        with self._meta() as w:
            self._require_writer("reactivate")
            self._sync_life()
            life = L.current_life(w)
            state = State(life.status)
            transition(state, Event.REACTIVATE, life.reason)
            if state is State.ACTIVE:
                return
            # failed while active (fail() marks an empty commit's length as given)
            if state is State.FAILED and life.final_len == 0 and not life.final_given:
                self._publish(w, status=State.ACTIVE, reason="")
            else:
                length, new_gen = life.final_len, life.data_gen + 1
                if life.final_given:
                    carried = [(0, length)] if length else []
                else:  # commit(None): holes stay holes
                    self._refresh()
                    carried = [(s, min(e, length)) for s, e in self._cov if s < length]
                # 1-2: the bytes and the coverage the rewrite starts from; orphans (removed
                # by unlink, overwritten by the next reactivate) if we die before 3.
                self._stage_copy(new_gen, length, life.capacity)
                self._write_ranges(f"b{new_gen & 0xFFFF:04x}", carried)
                # 3: the commit point.
                self._publish(w, status=State.ACTIVE, write_gen=new_gen,
                              capacity=_page_up(max(length, life.capacity)), frozen_len=length,
                              used_mask=0, final_len=0, final_given=0, reason="")
                # 4: our slot moves to the new generation (a resuming writer does the same).
                assert self._pub is not None and self._slot is not None
                self._pub.reset([])
                w[L.slot_word(self._slot, L.S_CGEN)] = new_gen
                self._publish(w, used_mask=1 << self._slot)
                self._pub_gen = new_gen
        self._sync_life()
        self._wake_all()

    def interrupt(self) -> None:
        """Wake every parked waiter of this resource, in every process, with
        ``WaitOutcome.INTERRUPTED`` (a seek, a flush). Waits that start later are unaffected."""
        with self._tlock:
            w = self._live_words()
            w[L.W_INTERRUPT_SEQ] = w[L.W_INTERRUPT_SEQ] + 1
        self._wake_all()

    # ------------------------------------------------------------------ waiting
    def wait_range(self, start: int, end: int, timeout: float | None = None,
                   cancel: CancelToken | None = None) -> WaitOutcome:
        """Block until ``[start, end)`` is available, the resource ends before it, or the
        wait is interrupted.

        Returns READY (the bytes are there; on a committed resource a range straddling its
        length is READY and reads are short), EOF (committed, and ``start`` is at or past its
        length, or commit(None) left the range unwritten) or INTERRUPTED (``interrupt()``).
        Never EOF while the resource is active. Costs well under a microsecond when the
        bytes are already there; a parked wait uses no CPU.

        Raises:
            InvalidRange: reversed or negative range, or past 2**63.
            ResourceFailed: the resource failed (in any process).
            WriterDied: no writer is left and the bytes are not covered.
            Cancelled: ``cancel`` fired, or the resource was cancelled.
            TimeoutError: ``timeout`` seconds passed.
        """
        if start < 0 or end < start or end > _MAX:
            _check_range(start, end)
        if start == end:
            return WaitOutcome.READY
        with self._tlock:
            w = self._w
            if w is None or self._closed or self._forked:
                w = self._live_words()
            if (w[_W_LIFE_SEQ] == self._life_seq and self._status is _ACTIVE
                    and self._write_gen == self._data_gen and self._cov.covers(start, end)):
                return _READY
            intr = w[L.W_INTERRUPT_SEQ]
            got = self._evaluate(start, end)
        if got is not None:
            return got
        return self._park(start, end, lambda: self._evaluate(start, end), intr, timeout,
                          cancel, missing=True)

    def _evaluate(self, start: int, end: int) -> WaitOutcome | None:
        with self._tlock:
            self._refresh()
            st = self._status
            if st is State.ACTIVE:
                if self._write_gen != self._data_gen:
                    ready = self._frozen_view().covers(start, end)
                else:
                    ready = self._cov.covers(start, end)
                if ready:
                    return WaitOutcome.READY
                self._raise_if_unlinked()
                return None
            self._raise_for_status()
            length = self._final_len
            if start >= length:
                return WaitOutcome.EOF
            if self._final_given or self._cov.covers(start, min(end, length)):
                return WaitOutcome.READY
            return WaitOutcome.EOF

    def _park(self, start: int, end: int, check: Callable[[], WaitOutcome | None], intr: int,
              timeout: float | None, cancel: CancelToken | None, *, missing: bool) -> WaitOutcome:
        """Sleep in a waiter slot until ``check`` returns an outcome (see the module doc)."""
        if cancel is not None and cancel.cancelled:
            raise Cancelled("the wait was cancelled")
        deadline = None if timeout is None else time.monotonic() + timeout
        slot, waker = self._claim_waiter(start, end)
        w = self._words
        tok_w = L.waiter_word(max(slot, 0), L.T_TOKEN)
        poll = 0.001  # without a waiter slot (the table is full) we poll, backing off
        spins = SPIN_YIELDS
        if cancel is not None:
            cancel._add(waker)
        with self._tlock:
            self._parked[id(waker)] = waker
        try:
            while True:
                if self._closed:
                    raise ResourceClosed(f"resource {self._ns.label!r} was closed during a wait")
                if slot >= 0:
                    w[tok_w] = w[tok_w] + 1
                full_barrier()
                if w[L.W_INTERRUPT_SEQ] != intr:
                    return WaitOutcome.INTERRUPTED
                if cancel is not None and cancel.cancelled:
                    raise Cancelled("the wait was cancelled")
                got = check()
                if got is not None:
                    return got
                if missing and not self._recently_alive():
                    got = check()  # the last writer may have covered it and then left
                    if got is not None:
                        return got
                    raise WriterDied(
                        f"no writer is left and [{start}, {end}) is not covered"
                        " (resume with open(..., mode='r+'))",
                        self._ns.label,
                    )
                if spins:
                    self._spin(w, spins)
                    spins = 0
                    continue
                nap = SAFETY_NET
                if slot < 0:
                    nap, poll = poll, min(poll * 2, 0.05)
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(
                            f"[{start}, {end}) of {self._ns.label!r} not available"
                            f" after {timeout} s"
                        )
                    nap = min(nap, left)
                waker.wait(nap)
        finally:
            if cancel is not None:
                cancel._remove(waker)
            with self._tlock:
                del self._parked[id(waker)]
                if self._closed:
                    if not self._parked and self._deferred_release:
                        self._deferred_release = False
                        self._release_fds()
                elif slot >= 0:
                    self._release_waiter(slot)

    @staticmethod
    def _spin(w: memoryview, rounds: int) -> None:
        """Yield the CPU up to ``rounds`` times, until any writer publishes or the lifecycle
        or the interrupt count changes."""
        used = L.read_life(w)[1].used_mask
        heads = [L.slot_word(s, L.S_HEAD) for s in range(L.N_WRITERS) if (used >> s) & 1]
        life, intr = L.W_LIFE_SEQ, L.W_INTERRUPT_SEQ
        sig = [w[life], w[intr], *(w[h] for h in heads)]
        yield_ = os.sched_yield
        for _ in range(rounds):
            yield_()
            if [w[life], w[intr], *(w[h] for h in heads)] != sig:
                return

    def _claim_waiter(self, start: int, end: int) -> tuple[int, Waker]:
        """A waiter slot and its semaphore; ``(-1, a private waker)`` when all
        ``N_WAITERS`` slots are taken (the wait then polls instead of failing).

        A handle keeps one slot between waits (its *sticky* slot, idle with an empty range
        that no write overlaps), so a wait that parks costs no lock round trips; waits of
        other threads of the same handle, at the same time, claim and release their own."""
        with self._tlock:
            slot = self._sticky
            if slot >= 0 and not self._sticky_busy:
                self._sticky_busy = True
                waker = self._wakers[slot]
                waker.drain()
                w = self._words
                base = L.waiter_word(slot, 0)
                # START before END: a writer reading a mix sees no overlap only while the
                # waiter has not yet bumped its token, and then the waiter's re-check after
                # its barrier sees the write (the Dekker argument in the module doc).
                w[base + L.T_START] = start
                w[base + L.T_END] = end
                return slot, waker
        with self._meta() as w:
            if L.current_life(w).unlinked:
                raise ResourceNotFound(f"resource {self._ns.label!r} was unlinked")
            mask = w[L.W_WAITERS_MASK]
            for slot in range(L.N_WAITERS):
                if slot in self._my_waiters:
                    continue
                if locks.try_lock(self._ctrl_fd, L.LOCK_WAITER_BASE + slot):
                    break  # free, or its owner died (the kernel dropped the lock)
            else:
                return -1, ThreadWaker()
            found = self._wakers.get(slot)
            if found is None:
                found = self._wakers[slot] = self._ns.waker(slot, create=True)
            waker = found
            waker.drain()
            base = L.waiter_word(slot, 0)
            w[base + L.T_START] = start
            w[base + L.T_END] = end
            w[base + L.T_PID] = os.getpid()
            w[base + L.T_POSTED] = w[base + L.T_TOKEN]
            w[L.W_WAITERS_MASK] = mask | (1 << slot)
            self._my_waiters.add(slot)
            if self._sticky < 0:
                self._sticky, self._sticky_busy = slot, True
        return slot, waker

    def _release_waiter(self, slot: int, *, final: bool = False) -> None:
        if self._closed or self._forked:
            return
        if slot == self._sticky and not final:
            w = self._words
            base = L.waiter_word(slot, 0)
            w[base + L.T_START] = 0  # idle: an empty range no write overlaps
            w[base + L.T_END] = 0
            self._sticky_busy = False
            return
        with self._meta() as w:
            w[L.W_WAITERS_MASK] = w[L.W_WAITERS_MASK] & ~(1 << slot) & _FULL_MASK
            locks.unlock(self._ctrl_fd, L.LOCK_WAITER_BASE + slot)
            self._my_waiters.discard(slot)
            if slot == self._sticky:
                self._sticky = -1

    # ------------------------------------------------------------------ reading
    def _readable(self, end: int) -> int:
        """The readable length, after making sure the lifecycle and coverage are current."""
        w = self._live_words()
        if w[L.W_LIFE_SEQ] != self._life_seq:
            self._sync_life()
        st = self._status
        if st is State.COMMITTED:
            return self._final_len
        self._raise_for_status()
        if self._write_gen != self._data_gen:
            return self._frozen_len
        ext = self._cov.extent()
        if end > ext:
            self._refresh()
            ext = self._cov.extent()
            if self._status is not State.ACTIVE:
                return self._readable(end)
        return ext

    def read_at(self, offset: int, buf: Any) -> int:
        """Copy bytes at ``offset`` into the writable buffer ``buf``; returns how many.

        Short (possibly 0) at the end of the readable bytes: the committed length, or while
        active the end of the covered bytes this process has seen. Never reads past it and
        never raises for it. Use ``wait_range`` first to read bytes that are still coming.

        Raises:
            InvalidRange: negative offset, or past 2**63.
            ResourceFailed, Cancelled: the resource failed or was cancelled.
        """
        mv = memoryview(buf)
        if mv.readonly:
            raise TypeError("read_at needs a writable buffer")
        if mv.ndim != 1 or mv.itemsize != 1:
            mv = mv.cast("B")
        n = mv.nbytes
        if offset < 0 or offset + n > _MAX:
            raise InvalidRange(offset, offset + n, "read outside [0, 2**63)")
        if n == 0:
            return 0
        with self._tlock:
            src, k = self._source(offset, n)
            if k:
                mv[:k] = src[offset : offset + k]
        return k

    def _source(self, offset: int, n: int) -> tuple[memoryview, int]:
        """The mapping to read ``[offset, offset + k)`` from and ``k``, the readable part of
        the ``n`` bytes asked for, both of one generation (if a commit publishes another
        while we map, start over with its length)."""
        while True:
            limit = self._readable(offset + n)
            if offset >= limit:
                return memoryview(b""), 0
            gen = self._data_gen
            k = min(n, limit - offset)
            src = self._rview
            if src is None or limit > self._rsize or self._rgen != gen:
                src = self._ensure_rmap(limit)
                if self._rgen != gen or self._data_gen != gen:
                    continue
            pop = self._rpop
            if not (pop[offset >> _CHUNK_SHIFT] and pop[(offset + k - 1) >> _CHUNK_SHIFT]):
                _populate(self._rmap, pop, offset, offset + k, self._rsize, _MADV_POPULATE_READ)
            return src, k

    def read(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset`` (short at the end, like ``read_at``)."""
        if size < 0:
            raise InvalidRange(offset, offset + size, "negative size")
        if offset < 0 or offset + size > _MAX:
            raise InvalidRange(offset, offset + size, "read outside [0, 2**63)")
        with self._tlock:
            limit = self._readable(offset + size) if size else 0
            size = max(0, min(size, limit - offset))  # allocate what is there, not what is asked
            buf = bytearray(size)
            n = self.read_at(offset, buf)
        return bytes(buf) if n == size else bytes(buf[:n])

    def view(self, offset: int, size: int) -> memoryview:
        """A read-only, zero-copy view of up to ``size`` bytes at ``offset`` (short at the
        end, like ``read_at``); ``numpy.frombuffer`` works on it. The view stays valid after
        growth, a new generation or ``close()``: the mapping lives as long as the view."""
        if offset < 0 or size < 0 or offset + size > _MAX:
            raise InvalidRange(offset, offset + size, "view outside [0, 2**63)")
        if size == 0:
            return memoryview(b"")
        with self._tlock:
            src, k = self._source(offset, size)
            return src[offset : offset + k].toreadonly() if k else memoryview(b"")

    def contains_range(self, start: int, end: int) -> bool:
        """True when every byte of ``[start, end)`` is available now (never blocks):
        covered, or below the committed ``final_len``. Empty ranges: True."""
        _check_range(start, end)
        if start == end:
            return True
        with self._tlock:
            w = self._w
            if w is None or self._closed or self._forked:
                w = self._live_words()
            if (w[_W_LIFE_SEQ] == self._life_seq and self._status is _ACTIVE
                    and self._write_gen == self._data_gen and self._cov.covers(start, end)):
                return True
            self._refresh()
            st = self._status
            if st is State.ACTIVE:
                if self._write_gen != self._data_gen:
                    return self._frozen_view().covers(start, end)
                return self._cov.covers(start, end)
            if st is not State.COMMITTED or end > self._final_len:
                return False
            return self._final_given or self._cov.covers(start, end)

    def next_gap(self, start: int, limit: int) -> tuple[int, int] | None:
        """The first range inside ``[start, limit)`` that is not available yet, or None.
        On a committed resource the search stops at its length."""
        _check_range(start, limit)
        with self._tlock:
            self._live_words()
            self._refresh()
            st = self._status
            if st is State.COMMITTED:
                upper = min(limit, self._final_len)
                if self._final_given or start >= upper:
                    return None
                return self._cov.first_gap(start, upper)
            if self._write_gen != self._data_gen:
                return self._frozen_view().first_gap(start, limit)
            return self._cov.first_gap(start, limit)

    def ranges(self) -> list[tuple[int, int]]:
        """The available ranges this process sees now, merged and sorted: the covered ones,
        or ``[(0, final_len)]`` once ``commit(final_len)`` made every byte below it
        available."""
        with self._tlock:
            self._live_words()
            self._refresh()
            if self._status is State.COMMITTED:
                n = self._final_len
                if self._final_given:
                    return [(0, n)] if n else []
                # a pool writer's write that raced the commit may lie past its length
                return [(s, min(e, n)) for s, e in self._cov if s < n]
            if self._write_gen != self._data_gen:
                return list(self._frozen_view())
            return list(self._cov)

    def iter_ranges(self, timeout: float | None = None,
                    cancel: CancelToken | None = None
                    ) -> Generator[tuple[int, int], None, None]:
        """Yield newly covered ranges as they land, from any process: first what is covered
        already, then each new range. Ends after the commit; raises like ``wait_range`` on
        failure, writer death, ``cancel`` or ``timeout`` seconds without news."""
        seen = RangeSet()
        pending: list[tuple[int, int]] = []
        self._listeners.append(lambda s, e: pending.append((s, e)))
        listener = self._listeners[-1]
        try:
            with self._tlock:
                self._refresh()
                pending.extend(self._cov)
            while True:
                with self._tlock:
                    self._refresh()
                    batch, pending[:] = list(pending), []
                    st = self._status
                if st is State.COMMITTED:  # nothing at or past the committed length
                    batch = [(s, min(e, self._final_len)) for s, e in batch
                             if s < self._final_len]
                for s, e in batch:
                    pos = s
                    while pos < e:
                        gap = seen.first_gap(pos, e)
                        if gap is None:
                            break
                        seen.add(*gap)
                        yield gap
                        pos = gap[1]
                if st is not State.ACTIVE:
                    if st is State.COMMITTED:
                        if self._final_given:  # every byte below the length is available
                            pos = 0
                            while (gap := seen.first_gap(pos, self._final_len)) is not None:
                                seen.add(*gap)
                                yield gap
                                pos = gap[1]
                        return
                    self._raise_for_status()
                intr = self._words[L.W_INTERRUPT_SEQ]

                def news() -> WaitOutcome | None:
                    with self._tlock:
                        self._refresh()
                        if pending or self._status is not State.ACTIVE:
                            return WaitOutcome.READY
                    return None

                self._park(0, _MAX, news, intr, timeout, cancel, missing=True)
        finally:
            self._listeners.remove(listener)

    # ------------------------------------------------------------------ asyncio
    async def wait_range_async(self, start: int, end: int,
                               timeout: float | None = None) -> WaitOutcome:
        """``wait_range`` for asyncio: the same outcomes and errors, without holding the
        event loop. Covered bytes return at once; otherwise the wait parks on a thread of
        its own. Cancelling the task (``task.cancel()``, ``asyncio.wait_for``,
        ``asyncio.timeout``) ends the wait at once with ``CancelledError``."""
        try:
            return self.wait_range(start, end, timeout=0)
        except TimeoutError:
            if timeout == 0:
                raise
        from .aio import run_blocking

        token = CancelToken()
        return await run_blocking(
            lambda: self.wait_range(start, end, timeout=timeout, cancel=token), token)

    async def aiter_ranges(self, timeout: float | None = None
                           ) -> AsyncIterator[tuple[int, int]]:
        """``iter_ranges`` for asyncio: ``async for start, end in r.aiter_ranges():`` yields
        newly covered ranges from any process, and ends after the commit. Leaving the loop
        or cancelling the task stops the wait at once."""
        from .aio import run_blocking

        token = CancelToken()
        ranges = self.iter_ranges(timeout, cancel=token)
        try:
            while True:
                item = await run_blocking(lambda: next(ranges, None), token)
                if item is None:
                    return
                yield item
        finally:
            token.cancel()
            ranges.close()

    # ------------------------------------------------------------------ for shmstore.fetch
    def _try_role(self, byte: int) -> bool:
        """Take a role lock byte of the control file (held until ``_drop_role``, ``close``
        or this process's death); False when another handle holds it."""
        with self._tlock:
            self._live_words()
            return locks.try_lock(self._ctrl_fd, byte)

    def _drop_role(self, byte: int) -> None:
        with self._tlock:
            if self._ctrl_fd >= 0:
                locks.unlock(self._ctrl_fd, byte)

    def _waiting_ranges(self) -> list[tuple[int, int]]:
        """The ranges parked waiters of every process wait for now (a snapshot, racy by
        nature: a waiter may leave or arrive right after)."""
        w = self._live_words()
        out = []
        mask = w[L.W_WAITERS_MASK]
        while mask:
            low = mask & -mask
            i = low.bit_length() - 1
            mask ^= low
            base = L.waiter_word(i, 0)
            start, end = w[base + L.T_START], w[base + L.T_END]
            if start < end:
                out.append((start, end))
        return out

    # ------------------------------------------------------------------ observers
    def on_write(self, fn: Callable[[int, int], None]) -> Callable[[], None]:
        """Call ``fn(start, end)`` after each ``write_at`` through this handle; returns a
        function that unsubscribes. For writes from every process use ``iter_ranges``."""
        self._on_write.append(fn)
        return lambda: self._on_write.remove(fn)

    def on_commit(self, fn: Callable[[int], None]) -> Callable[[], None]:
        """Call ``fn(length)`` after ``commit`` through this handle; returns an unsubscriber."""
        self._on_commit.append(fn)
        return lambda: self._on_commit.remove(fn)

    # ------------------------------------------------------------------ introspection
    @property
    def status(self) -> ResourceStatus:
        """The lifecycle as every process sees it now."""
        with self._tlock:
            self._live_words()
            self._sync_life()
            st = self._status
            if st is State.COMMITTED:
                given = self._final_len if self._final_given else None
                return ResourceStatus.Committed(given, self._final_len)
            if st is State.FAILED:
                return ResourceStatus.Failed(self._reason)
            if st is State.CANCELLED:
                return ResourceStatus.Cancelled()
            return ResourceStatus.Active()

    @property
    def name(self) -> str | None:
        return getattr(self._ns, "name", None)

    @property
    def path(self) -> str | None:
        return getattr(self._ns, "path", None)

    @property
    def backend(self) -> str:
        return self._ns.kind

    @property
    def writable(self) -> bool:
        return self._writable

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def capacity(self) -> int:
        """Bytes reserved for the data now (it grows by doubling)."""
        with self._tlock:
            self._live_words()
            self._sync_life()
            return self._capacity

    def writers_alive(self) -> bool:
        """True while some process holds this resource open for writing."""
        with self._tlock:
            self._live_words()
            return self._writer_alive()

    def reader(self) -> Resource:
        """A new read-only handle on the same resource (the way to share a ``mem`` one)."""
        self._live_words()
        return Resource(self._ns, writable=False)

    def __repr__(self) -> str:
        state = "closed" if self._closed else type(self.status).__name__.lower()
        mode = "r+" if self._writable else "r"
        return f"<shmstore.Resource {self._ns.kind}:{self._ns.label!r} mode={mode} {state}>"

    def _check(self) -> None:
        """Invariant checker (tests and crash tests call it on what survives): the control
        block at rest, every used writer slot against its journal, and this process's view
        equal to the union of the slots' coverage."""
        from .core.ring import check_slot

        with self._tlock:
            w = self._live_words()
            if self._static:
                return
            L.check_block(w, L.CTRL_SIZE)
            self._refresh()
            union = RangeSet(self._base_ranges(self._data_gen) if self._data_gen else [])
            used = L.current_life(w).used_mask
            for slot in range(L.N_WRITERS):
                if (used >> slot) & 1:
                    j = self._open_journal(slot, w[L.slot_word(slot, L.S_JGEN)])
                    assert j is not None, f"journal of writer slot {slot} is missing"
                    for s, e in check_slot(w, slot, j):
                        union.add(s, e)
            self._cov._check()
            if self._write_gen == self._data_gen:
                assert list(union) == list(self._cov), "local view differs from the slots"

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Detach. Idempotent; never unlinks. A writer's close without commit lets waiters
        on uncovered bytes raise ``WriterDied`` (and a new writer resume)."""
        if self._closed:
            return
        with self._tlock:
            if self._closed:
                return
            was_writer = self._slot is not None and not self._forked
            if was_writer and isinstance(self._ns, DirNamespace) and self._w is not None:
                with contextlib.suppress(StorageError, OSError, ValueError):
                    self._trim_if_last_writer()
            if (self._sticky >= 0 and not self._sticky_busy and not self._forked
                    and self._w is not None):
                try:
                    self._release_waiter(self._sticky, final=True)
                except (StorageError, OSError, ValueError):
                    pass
            self._closed = True
            _LIVE.discard(self)
            if was_writer and self._w is not None and self._ctrl_fd >= 0:
                try:
                    if self._wmap is not None and self._ns.kind == "mmap":
                        self._wmap.flush()
                    locks.unlock(self._ctrl_fd, L.LOCK_WRITER_BASE + (self._slot or 0))
                    self._wake_all()  # waiters re-check liveness now, not at their next nap
                except (StorageError, OSError, ValueError):
                    pass
            self._slot = None
            self._pub = None
            if self._parked:
                # Threads of this handle are parked: wake them to raise ResourceClosed; the
                # last one out releases the descriptors and mappings they are still using.
                self._deferred_release = True
                for waker in self._parked.values():
                    waker.post()
            else:
                self._release_fds()

    def _release_fds(self) -> None:
        for waker in self._wakers.values():
            waker.close()
        self._wakers.clear()
        for entry in self._journals.values():
            self._release_map(entry)
        self._journals.clear()
        if self._wjournal is not None:
            self._release_map(self._wjournal)
            self._wjournal = None
        self._close_map(self._rmap, self._rview)
        self._close_map(self._wmap, self._wview)
        self._rmap = self._rview = self._wmap = self._wview = None
        self._rgen = self._wgen = -1
        if self._w is not None:
            self._w.release()
            self._w = None
        if self._ctrl_map is not None:
            with contextlib.suppress(BufferError):
                self._ctrl_map.close()
            self._ctrl_map = None
        if self._ctrl_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._ctrl_fd)
            self._ctrl_fd = -1

    def unlink(self) -> None:
        """Remove the resource: every segment and semaphore of its name (for mmap the data
        file and its sidecar). Idempotent; allowed from any handle, read-only ones too.

        Handles already open keep reading what is covered; everything that would need a new
        shared object fails instead of recreating a name nobody would remove: writes and
        lifecycle changes raise ``ResourceNotFound``, and so does a wait on bytes that are
        not covered (parked waiters are woken to raise it).
        """
        ns = self._ns
        if self._static:
            return
        if not self._closed and self._w is not None:
            with self._meta() as w:
                # Under the meta lock: once flagged, no handle of this incarnation creates
                # a name again (each checks the flag under this lock first).
                self._remove_names(w)
            self._sync_life()
            self._wake_all()
        else:
            ns.unlink_all()

    def __enter__(self) -> Resource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    # ------------------------------------------------------------------ fork and pickle
    def _drop_inherited(self) -> None:
        """In a forked child: drop the parent's descriptors (and so its locks' references)."""
        if self._closed:
            return
        self._forked = True
        self._tlock = threading.RLock()  # the parent's may have been held at the fork
        if self._ctrl_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._ctrl_fd)
            self._ctrl_fd = -1

    def _reattach(self) -> None:
        if not self._forked:
            return
        if isinstance(self._ns, MemNamespace):
            raise ResourceClosed("a mem resource does not cross fork; use shm")
        self._forked = False
        self._meta_depth = 0
        self._lazy_writer = self._writable
        self._slot = None
        self._pub = None
        self._wakers.clear()
        self._journals.clear()
        self._wjournal = None
        self._rmap = self._rview = self._wmap = self._wview = None
        self._w = None
        self._ctrl_map = None
        self._rgen = self._wgen = -1
        self._life_seq = -1
        self._my_waiters = set()
        self._sticky = -1
        self._sticky_busy = False
        self._cov = RangeSet()
        self._cursors = {}
        self._attach()

    def __reduce__(self) -> tuple[Any, ...]:
        if isinstance(self._ns, MemNamespace):
            raise TypeError("a mem resource lives in one process; use backend='shm'")
        mode = "r+" if self._writable else "r"
        if isinstance(self._ns, DirNamespace):
            return (_unpickle, ("mmap", None, self._ns.path, mode))
        return (_unpickle, ("shm", self._ns.label, None, mode))


class _Retry(Exception):
    pass


def _segment_shape(fd: int, what: str, label: str) -> int:
    """The size of a journal-format segment, or ``CorruptResource`` if it cannot be one."""
    size = segment_size(fd)
    if size < L.JOURNAL_HEADER or size % 8:
        raise CorruptResource(f"{what} of {label!r} is {size} bytes: not a shmstore segment")
    return size


def _unpickle(backend: Backend, name: str | None, path: str | None, mode: str) -> Resource:
    return open(name, mode=mode, backend=backend, path=path)


def _namespace(backend: str, name: str | None, path: str | os.PathLike[str] | None,
               permissions: int) -> Namespace:
    if backend == "shm":
        if name is None:
            raise TypeError("backend='shm' needs a name")
        return ShmNamespace(name, permissions)
    if backend == "mmap":
        if path is None:
            raise TypeError("backend='mmap' needs a path")
        return DirNamespace(path, permissions)
    if backend == "mem":
        return MemNamespace()
    raise ValueError(f"unknown backend {backend!r} (shm, mmap or mem)")


def create(name: str | None = None, *, capacity: int = DEFAULT_CAPACITY,
           backend: Backend = "shm", path: str | os.PathLike[str] | None = None,
           permissions: int = 0o600, prefault: bool = True) -> Resource:
    """Create a resource and return a writer handle on it.

    ``capacity`` bytes are reserved up front (the resource grows by doubling past them).
    With ``prefault`` (the default; shm and mem) they are also zero-filled now, at memory
    speed, instead of page by page on the writer's first pass (a growth does the same for
    the new half). Pass ``prefault=False`` for a large capacity that is mostly never written.
    ``backend="shm"`` (default) needs ``name``; ``"mmap"`` needs ``path`` (the data file,
    which must not exist); ``"mem"`` needs neither and lives in this process only.

    Raises:
        ResourceExists: the name (or path) is taken.
        InvalidName: an unusable name.
        StorageFull: no room for ``capacity`` bytes.
    """
    if capacity < 0 or capacity >= _MAX:
        raise InvalidRange(0, capacity, "capacity outside [0, 2**63)")
    ns = _namespace(backend, name, path, permissions)
    if isinstance(ns, DirNamespace):
        if os.path.lexists(ns.sidecar) and not _reclaim_mmap_creation(ns):
            raise ResourceExists(f"{ns.sidecar} already exists (a resource's control state)")
        if os.path.lexists(ns.path):
            raise ResourceExists(f"{ns.path} already exists")
        ns.ensure_sidecar()
    creating = {"capacity": capacity, "created_ns": time.time_ns(), "prefault": prefault}
    try:
        return Resource(ns, writable=True, _creating=creating)
    except ResourceExists:
        # The name may be held by a creator that died during create: reclaim, then retry.
        if not isinstance(ns, ShmNamespace) or not reclaim_dead_creation(
                SHM_DIR, ns.base + "_"):
            raise
        return Resource(ns, writable=True, _creating=creating)
    except ResourceNotFound:
        if not isinstance(ns, DirNamespace):
            raise
        # An unlinker finishing a killed unlink removed the empty sidecar we had made.
        ns.ensure_sidecar()
        return Resource(ns, writable=True, _creating=creating)


def open(name: str | None = None, *, mode: str = "r", backend: Backend = "shm",
         path: str | os.PathLike[str] | None = None) -> Resource:
    """Attach to an existing resource. ``mode="r"`` (default) reads; ``mode="r+"`` also
    writes (another writer of a pool, or a resume after the writer died).

    With ``backend="mmap"``, a plain file that shmstore did not create opens as committed
    (read-only; ``r+`` adopts it as a committed resource that can be reactivated).

    Raises:
        ResourceNotFound: nothing of that name (or path).
        CorruptResource: the control block is not a valid shmstore block.
    """
    if mode not in ("r", "r+"):
        raise ValueError(f"mode must be 'r' or 'r+', not {mode!r}")
    if backend == "mem":
        raise ValueError("a mem resource has no name to open; use handle.reader()")
    ns = _namespace(backend, name, path, 0o600)
    if not isinstance(ns, DirNamespace):
        return Resource(ns, writable=(mode == "r+"))
    for _attempt in range(100):
        if ns.exists("c"):
            return Resource(ns, writable=(mode == "r+"))
        plain = _open_plain(ns)
        if plain is None:
            continue  # a resource is being created (or was just unlinked) at the path
        if mode == "r":
            try:
                return Resource(ns, writable=False, _static_fd=plain)
            finally:
                os.close(plain)
        try:
            size = segment_size(plain)
        finally:
            os.close(plain)
        try:
            return _adopt(ns, size)
        except ResourceExists:
            continue  # created (or adopted) by another process meanwhile: open that
    raise StorageError(f"{ns.path}: resources keep being created and unlinked there")


def _open_plain(ns: DirNamespace) -> int | None:
    """A descriptor of the plain file at ``ns.path`` (no shmstore control state), or None
    if it is a resource's data file after all. A creator makes the control block before
    the data file, and an unlink removes them in the other order: a file still linked
    while no control block exists, before and after we opened it, is no resource's."""
    try:
        fd = os.open(ns.path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        if ns.exists("c"):
            return None
        raise ResourceNotFound(f"no resource at {ns.path}") from None
    except OSError as exc:
        raise StorageError(f"opening {ns.path}: {exc}") from exc
    if ns.exists("c") or os.fstat(fd).st_nlink == 0:
        os.close(fd)
        return None
    return fd


def _reclaim_mmap_creation(ns: DirNamespace) -> bool:
    """An mmap name whose creator died during ``create``: remove its sidecar and the data
    file it made (``create`` refuses an existing path before it makes anything, so a data
    file beside an unfinished control block is that creator's)."""
    if ns.exists("c"):
        if not reclaim_dead_creation(ns.sidecar, ""):
            return False
        with contextlib.suppress(FileNotFoundError):
            os.unlink(ns.path)
    else:
        try:
            st = os.lstat(ns.sidecar)
            if os.listdir(ns.sidecar) or time.time() - st.st_ctime <= CREATE_GRACE:
                return False  # not ours to judge, or a creator between mkdir and open
        except OSError:
            return False
    with contextlib.suppress(OSError):
        os.rmdir(ns.sidecar)
    return not os.path.lexists(ns.sidecar)


def _adopt(ns: DirNamespace, size: int) -> Resource:
    """Give a plain file control state, as a committed resource of its current length."""
    ns.ensure_sidecar()
    fd = ns.open("c", create=True, exclusive=True)
    try:
        reserve(fd, L.CTRL_SIZE, f"control block of {ns.label!r}")
        m = map_segment(fd, L.CTRL_SIZE, writable=True)
        w = memoryview(m).cast("Q")
        try:
            life = L.Life(status=State.COMMITTED, final_len=size, final_given=1, capacity=size,
                          data_capacity=size, data_ino=os.stat(ns.path).st_ino)
            L.init_block(w, "mmap", ns.path, time.time_ns(), life)
            w[L.W_MAGIC] = L.MAGIC
        finally:
            w.release()
            m.close()
    finally:
        os.close(fd)
    return Resource(ns, writable=True)
