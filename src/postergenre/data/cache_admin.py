"""Cache administration (`postergenre cache info|prune|clear`): what the cache root holds,
dropping the entries of changed or deleted files, and emptying it.

`cache_info` only reads; `prune_cache` compacts every store through `ArrayStore.prune`;
`clear_cache` deletes only folders that hold nothing but what postergenre writes. A store whose
files do not read as one is reported damaged and left alone; a root that is not a folder, or
that the filesystem refuses, is a one-line `UserError`.
"""

from __future__ import annotations

import os
import shutil
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from postergenre import console
from postergenre.data.cache import cache_root
from postergenre.data.store import ArrayStore, is_stale_key
from postergenre.data.store_folder import (
    STORE_FILES,
    StoreDamaged,
    read_entries,
    remove_store,
    tree_bytes,
)
from postergenre.errors import UserError

# The folder-name prefix of each kind of store the feature caches write.
_STORE_PREFIXES = {
    "posters-": "posters",
    "embeddings-": "embeddings",
    "text-": "text",
    "fingerprints-": "fingerprints",  # `duplicates` (curation.fingerprints)
}
_STORE_KINDS = frozenset(_STORE_PREFIXES.values())
_ONNX_DIR = "onnx"


@dataclass
class FolderInfo:
    """One folder of the cache root: `kind` is posters, embeddings, text, onnx or other;
    `damaged` says why a store's files do not read as one ("" when they do)."""

    name: str
    kind: str
    entries: int = 0
    failed: int = 0
    stale: int = 0
    bytes: int = 0
    damaged: str = ""


@dataclass
class CacheInfo:
    """What a cache root holds, folder by folder (see `cache_info`)."""

    root: Path
    folders: list[FolderInfo] = field(default_factory=list)

    @property
    def entries(self) -> int:
        return sum(f.entries for f in self.folders)

    @property
    def failed(self) -> int:
        return sum(f.failed for f in self.folders)

    @property
    def stale(self) -> int:
        return sum(f.stale for f in self.folders)

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.folders)

    def format(self) -> str:
        """A small table: one line per folder, then the totals."""
        if not self.folders:
            return f"cache {self.root}: empty"
        header = ("folder", "kind", "entries", "failed", "stale", "size")
        table = [header, *(_cells(f.name, f.kind, f) for f in self.folders)]
        table.append(_cells("total", "", self))
        widths = [max(len(row[c]) for row in table) for c in range(len(header))]

        def render(row: tuple[str, ...]) -> str:
            cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
            cells += [cell.rjust(width) for cell, width in zip(row[2:], widths[2:], strict=True)]
            return "  ".join(cells).rstrip()

        notes = [f"{f.name} is damaged ({f.damaged})" for f in self.folders if f.damaged]
        return "\n".join([f"cache {self.root}", *(render(row) for row in table), *notes])


def _cells(name: str, kind: str, counts: FolderInfo | CacheInfo) -> tuple[str, ...]:
    """One line of `CacheInfo.format`'s table: a folder's counts or the totals."""
    numbers = (counts.entries, counts.failed, counts.stale)
    return (name, kind, *(f"{n:,}" for n in numbers), console.format_bytes(counts.bytes))


@dataclass
class PruneReport:
    """What `prune_cache` removed, and the damaged stores (folder names) it left alone."""

    entries_removed: int = 0
    bytes_freed: int = 0
    damaged: dict[str, str] = field(default_factory=dict)  # folder name: why

    def format(self) -> str:
        freed = console.format_bytes(self.bytes_freed)
        lines = [f"removed {self.entries_removed:,} stale entries, freed {freed}"]
        for name, reason in self.damaged.items():
            lines.append(f"left {name} alone: damaged ({reason})")
        return "\n".join(lines)


def cache_info(cache_dir: Path | None = None) -> CacheInfo:
    """Entries, failures, stale entries and bytes of each folder of the cache root (default
    `default_cache_dir()`). Only reads: a missing root is reported empty, not created."""
    root = cache_root(cache_dir)
    info = CacheInfo(root)
    for entry in _folders(root):
        kind = _folder_kind(entry)
        folder = FolderInfo(entry.name, kind, bytes=tree_bytes(Path(entry.path)))
        if kind in _STORE_KINDS:
            try:
                entries = read_entries(Path(entry.path))
            except StoreDamaged as exc:
                folder.damaged, entries = str(exc), []
            for key, row in entries:
                folder.entries += 1
                folder.failed += row < 0
                folder.stale += is_stale_key(key)
        elif kind == "onnx":
            folder.entries = sum(1 for p in Path(entry.path).glob("*.onnx") if p.is_file())
        info.folders.append(folder)
    return info


def prune_cache(cache_dir: Path | None = None) -> PruneReport:
    """Drop the entries of posters that changed or are gone from every store of the cache root,
    compacting their row files (ONNX exports are left alone: only `clear_cache` removes them)."""
    report = PruneReport()
    for entry in _folders(cache_root(cache_dir)):
        if _folder_kind(entry) not in _STORE_KINDS:
            continue
        try:
            read_entries(Path(entry.path))  # read-only first: damage is reported, not repaired
            store = ArrayStore.reopen(Path(entry.path))
        except StoreDamaged as exc:
            report.damaged[entry.name] = str(exc)
            continue
        if store is None:  # a store that never stored anything
            continue
        with closing(store):
            removed, freed = store.prune()
        report.entries_removed += removed
        report.bytes_freed += freed
    return report


def clear_cache(cache_dir: Path | None = None) -> int:
    """Remove every store and ONNX export of the cache root (the root folder itself stays);
    returns the bytes freed. Refuses, deleting nothing, when the root holds anything else:
    a mistyped `--cache-dir` must not empty someone's home folder."""
    root = cache_root(cache_dir)
    entries = _folders(root)
    foreign = [e.name for e in entries if not _is_ours(e)]
    if foreign:
        shown = ", ".join(foreign[:5]) + (
            f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        )
        raise UserError(
            f"{root} does not look like a postergenre cache (it holds {shown}); "
            "not clearing it — delete the folder by hand if it really is the cache"
        )
    freed = 0
    for entry in entries:
        folder = Path(entry.path)
        freed += tree_bytes(folder)
        if _folder_kind(entry) == "onnx":
            try:
                shutil.rmtree(folder)
            except OSError as exc:
                raise UserError(f"cannot clear {folder}: {exc.strerror or exc}") from exc
        else:
            remove_store(folder)
    return freed


def _folders(root: Path) -> list[os.DirEntry[str]]:
    """The entries of the cache root by name; none when it is missing (nothing is created).
    A root that is not a folder, or cannot be read, is a `UserError`."""
    try:
        with os.scandir(root) as entries:
            return sorted(entries, key=lambda e: e.name)
    except FileNotFoundError:
        return []
    except NotADirectoryError:
        raise UserError(f"cache folder {root} is not a folder") from None
    except OSError as exc:
        raise UserError(f"cannot read cache folder {root}: {exc.strerror or exc}") from None


def _folder_kind(entry: os.DirEntry[str]) -> str:
    if not entry.is_dir(follow_symlinks=False):
        return "other"
    if entry.name == _ONNX_DIR:
        return "onnx"
    for prefix, kind in _STORE_PREFIXES.items():
        if entry.name.startswith(prefix):
            return kind
    return "other"


def _is_ours(entry: os.DirEntry[str]) -> bool:
    """A folder `clear_cache` may delete: one of our kinds, holding only files we write."""
    kind = _folder_kind(entry)
    if kind == "other":
        return False
    try:
        children = list(os.scandir(entry.path))
    except OSError as exc:
        raise UserError(f"cannot read cache folder {entry.path}: {exc.strerror or exc}") from None
    for child in children:
        if not child.is_file(follow_symlinks=False):
            return False
        if kind == "onnx":
            # Exports are `ARCH-HASH.onnx`, written via a `.NAME.XXXX.tmp` file first.
            if not (child.name.endswith(".onnx") or child.name.endswith(".tmp")):
                return False
        elif child.name not in STORE_FILES:
            return False
    return True
