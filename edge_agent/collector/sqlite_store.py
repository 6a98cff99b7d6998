"""The embedded store: one SQLite file in WAL mode (``synchronous=NORMAL``: a commit survives
a collector crash; the broker still holds anything not yet acknowledged)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import StoreError
from .store import SCHEMA_SQL, Batch, Store

__all__ = ["SqliteStore"]


class SqliteStore(Store):
    ph = "?"
    greatest = "MAX"

    def __init__(self, path: Path, read_only: bool = False) -> None:
        self.path = Path(path)
        try:
            if read_only:
                self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                for stmt in SCHEMA_SQL:
                    self._db.execute(stmt)
            self._db.row_factory = sqlite3.Row
        except sqlite3.Error as exc:
            raise StoreError(f"collector store {self.path} cannot be opened: {exc}") from None

    def _cursor(self) -> Any:
        return self._db.cursor()

    @contextlib.contextmanager
    def batch(self) -> Iterator[Batch]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            yield Batch(self)
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise StoreError(f"collector store {self.path}: a batch cannot be written: {exc}") from None
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        try:
            return [dict(r) for r in self._db.execute(sql, tuple(params))]
        except sqlite3.Error as exc:
            raise StoreError(f"collector store {self.path}: {exc}") from None

    def close(self) -> None:
        self._db.close()
