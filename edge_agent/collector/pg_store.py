"""The shared store: PostgreSQL, for several collector processes (psycopg 3).

Same schema and logic as SQLite (``store.py``); inserts go through psycopg's pipeline mode
(``executemany(..., returning=True)``), one round trip per batch instead of one per row.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from ..errors import StoreError
from .store import SCHEMA_SQL, Batch, Store

__all__ = ["PostgresStore"]


class PostgresStore(Store):
    ph = "%s"
    greatest = "GREATEST"

    def __init__(self, dsn: str) -> None:
        try:
            import psycopg
            from psycopg.rows import dict_row
        except ImportError:
            raise StoreError("the PostgreSQL store needs psycopg 3: pip install 'psycopg[binary]>=3.1'") from None
        self._psycopg = psycopg
        self.dsn = dsn
        try:
            self._db = psycopg.connect(dsn, autocommit=True, row_factory=dict_row)
            with self._db.transaction():
                # One collector at a time creates the schema (others wait on the lock).
                self._db.execute("SELECT pg_advisory_xact_lock(742001)")
                for stmt in SCHEMA_SQL:
                    self._db.execute(stmt)
        except psycopg.Error as exc:
            raise StoreError(f"collector store (PostgreSQL) cannot be opened: {exc}; check the DSN and the server") from None

    def _cursor(self) -> Any:
        return self._db.cursor(row_factory=self._psycopg.rows.tuple_row)

    def _insert_returning(self, cur: Any, sql: str, rows: list[tuple[Any, ...]]) -> list[bool]:
        cur.executemany(sql, rows, returning=True)
        out = []
        while True:
            out.append(cur.fetchone() is not None)
            if not cur.nextset():
                break
        return out

    @contextlib.contextmanager
    def batch(self) -> Iterator[Batch]:
        try:
            with self._db.transaction():
                yield Batch(self)
        except self._psycopg.Error as exc:
            raise StoreError(f"collector store (PostgreSQL): a batch cannot be written: {exc}") from None

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        try:
            return list(self._db.execute(sql, tuple(params)).fetchall())  # type: ignore[arg-type]
        except self._psycopg.Error as exc:
            raise StoreError(f"collector store (PostgreSQL): {exc}") from None

    def close(self) -> None:
        self._db.close()
