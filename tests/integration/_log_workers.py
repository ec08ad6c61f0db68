"""Child-process bodies for the log tests (importable by spawn and forkserver)."""

from __future__ import annotations

from multiprocessing.connection import Connection
from typing import Any

import shmstore


def payload(i: int) -> bytes:
    return (b"record-%06d|" % i) * (1 + i % 7)


def open_log(kind: str, key: str, mode: str = "r") -> shmstore.Log:
    if kind == "shm":
        return shmstore.Log.open(key, mode=mode)
    return shmstore.Log.open(path=key, mode=mode)


def waiter(kind: str, key: str, offsets: list[int], conn: Connection) -> None:
    """Wait for each offset in turn and send back (offset, payload) of what arrived, or the
    name of the error the wait raised."""
    log = open_log(kind, key)
    try:
        for off in offsets:
            conn.send(("waiting", off))
            try:
                log.wait_for(off, timeout=60)
            except shmstore.WriterDied:
                conn.send(("WriterDied", off))
                conn.recv()  # the parent says when the next writer is there
                log.wait_for(off, timeout=60)
            recs = log.read_from(off, 1)
            conn.send(("got", recs[0].offset, bytes(recs[0].payload)))
    finally:
        log.close()
        conn.close()


def appender(kind: str, key: str, start: int, count: int, conn: Connection | None) -> None:
    """Take the log over (mode="a") and append ``payload(i)`` for i in [start, start+count)."""
    log = open_log(kind, key, "a")
    try:
        if conn is not None:
            conn.send(("writer", log.next_offset))
        for i in range(start, start + count):
            log.append([payload(i)], fsync=False)
        if conn is not None:
            conn.send(("done", log.next_offset, log.latest_chain_hash))
            conn.recv()  # hold the claim until the parent has looked
    finally:
        log.close()


def try_writer(kind: str, key: str) -> str:
    try:
        open_log(kind, key, "a").close()
    except shmstore.WriterActive as exc:
        return f"WriterActive: {exc}"
    return "ok"


def commit_cursor(kind: str, key: str, name: str, offset: int) -> None:
    log = open_log(kind, key)
    try:
        log.cursor(name).commit(offset)
    finally:
        log.close()


def read_all(log: Any) -> list[bytes]:
    out: list[bytes] = []
    off = 0
    while True:
        recs = log.read_from(off, 1 << 16)
        if not recs:
            return out
        out += [bytes(r.payload) for r in recs]
        off = recs[-1].offset + 1


def pickled_reader(log: shmstore.Log, off: int) -> bytes:
    try:
        log.wait_for(off, timeout=60)
        return bytes(log.read_from(off, 1)[0].payload)
    finally:
        log.close()
