"""The public surface and the layering rule."""

from __future__ import annotations

import ast
import pathlib

import shmstore

PKG = pathlib.Path(shmstore.__file__).parent

SPEC_NAMES = {
    "create", "open", "WaitOutcome", "ResourceStatus", "StorageError", "InvalidRange",
    "ResourceFailed", "Cancelled", "TmpClaimed", "ReadOnlyError", "WriterDied",
    "ResourceNotFound", "ResourceExists", "CorruptResource",
}


def test_all_is_sorted_complete_and_resolves() -> None:
    assert shmstore.__all__ == sorted(shmstore.__all__)
    assert SPEC_NAMES <= set(shmstore.__all__)
    for name in shmstore.__all__:
        assert getattr(shmstore, name) is not None
    public = {n for n in dir(shmstore) if not n.startswith("_")}
    modules = {"atomic", "core", "errors", "ipc", "resource", "demo", "inventory", "cli", "aio",
               "bench", "sources", "urlfile", "fsspec_fs", "log"}
    assert public - modules == set(shmstore.__all__)


def test_resource_methods_of_the_spec_exist() -> None:
    for meth in ("write_at", "wait_range", "read_at", "read", "view", "contains_range",
                 "next_gap", "commit", "fail", "reactivate", "interrupt", "close", "unlink"):
        assert callable(getattr(shmstore.Resource, meth))
    assert isinstance(shmstore.Resource.status, property)


def test_every_error_derives_from_storage_error() -> None:
    assert issubclass(shmstore.WriterDied, shmstore.ResourceFailed)
    for name in shmstore.__all__:
        obj = getattr(shmstore, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, shmstore.StorageError), name


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            out.add(base)
    return out


FORBIDDEN_IN_CORE = {"os", "mmap", "posix_ipc", "time", "socket", "fcntl", "threading",
                     "..ipc", "..resource", "shmstore.ipc", "shmstore.resource"}


def test_core_is_pure() -> None:
    for path in (PKG / "core").glob("*.py"):
        bad = {i for i in _imports(path) if i.split(".")[0] in FORBIDDEN_IN_CORE
               or i in FORBIDDEN_IN_CORE or i.startswith("..ipc") or i.startswith("..resource")}
        assert not bad, f"{path.name} imports {bad}"


def test_ipc_does_not_import_the_composition() -> None:
    for path in (PKG / "ipc").glob("*.py"):
        bad = {i for i in _imports(path) if "resource" in i or i.startswith("..core")}
        assert not bad, f"{path.name} imports {bad}"
