"""Durable state in SQLite (WAL): instances, their history, the orchestration inbox, the activity queue, timer
schedule status and the host keys.

Every change that must be atomic runs in one transaction: an orchestration episode appends its history, consumes
its messages and enqueues its activities and timers together; an activity's completion deletes its work item and
enqueues the completion message together. A process killed at any moment therefore leaves either all or none of
a step behind. Used from the host's event loop thread only.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS instances (
    instance_id TEXT PRIMARY KEY,
    execution_id TEXT NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    input TEXT,
    output TEXT,
    custom_status TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    parent TEXT
);
CREATE TABLE IF NOT EXISTS history (
    instance_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event TEXT NOT NULL,
    PRIMARY KEY (instance_id, seq)
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT NOT NULL,
    execution_id TEXT,
    kind INTEGER NOT NULL,
    event TEXT NOT NULL,
    due REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_due ON messages (due);
CREATE INDEX IF NOT EXISTS messages_by_instance ON messages (instance_id, id);
CREATE TABLE IF NOT EXISTS activities (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    task_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    input TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    UNIQUE (instance_id, execution_id, task_id)
);
CREATE TABLE IF NOT EXISTS timer_status (
    function TEXT PRIMARY KEY,
    schedule TEXT NOT NULL,
    last REAL,
    next REAL,
    last_updated REAL
);
"""

INSTANCE_COLUMNS = "instance_id, execution_id, name, status, input, output, custom_status, created, updated, parent"


@dataclass
class Instance:
    instance_id: str
    execution_id: str
    name: str
    status: str
    input: str | None
    output: str | None
    custom_status: str | None
    created: float
    updated: float
    parent: dict[str, Any] | None

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Instance:
        instance_id, execution_id, name, status, input_, output, custom, created, updated, parent = row
        return cls(
            instance_id,
            execution_id,
            name,
            status,
            input_,
            output,
            custom,
            created,
            updated,
            json.loads(parent) if parent else None,
        )


@dataclass
class Message:
    id: int
    instance_id: str
    execution_id: str | None
    kind: int
    event: dict[str, Any]
    due: float


@dataclass
class ActivityItem:
    id: int
    instance_id: str
    execution_id: str
    task_id: int
    name: str
    input: str | None
    attempts: int


@dataclass
class TimerStatus:
    schedule: str
    last: float | None
    next: float | None
    last_updated: float | None


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        # NORMAL is enough: a committed transaction survives the process being killed (not a power cut).
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self._depth = 0

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic unit of work; nested uses join the outer transaction."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self.db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        else:
            self.db.execute("COMMIT")
        finally:
            self._depth = 0

    # meta ---------------------------------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # instances ----------------------------------------------------------------------------------------------------
    def get_instance(self, instance_id: str) -> Instance | None:
        row = self.db.execute(
            f"SELECT {INSTANCE_COLUMNS} FROM instances WHERE instance_id = ?",  # noqa: S608 (constant columns)
            (instance_id,),
        ).fetchone()
        return None if row is None else Instance.from_row(row)

    def put_instance(self, instance: Instance) -> None:
        self.db.execute(
            f"INSERT OR REPLACE INTO instances ({INSTANCE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
            (
                instance.instance_id,
                instance.execution_id,
                instance.name,
                instance.status,
                instance.input,
                instance.output,
                instance.custom_status,
                instance.created,
                instance.updated,
                json.dumps(instance.parent) if instance.parent else None,
            ),
        )

    def query_instances(
        self,
        *,
        statuses: Iterable[str] | None = None,
        created_from: float | None = None,
        created_to: float | None = None,
        prefix: str | None = None,
        after: str | None = None,
        limit: int | None = None,
    ) -> list[Instance]:
        """Instances in instance id order (as Azure Storage lists them), filtered."""
        clauses: list[str] = []
        args: list[Any] = []
        if statuses is not None:
            wanted = list(statuses)
            clauses.append(f"status IN ({', '.join('?' * len(wanted))})")
            args.extend(wanted)
        if created_from is not None:
            clauses.append("created >= ?")
            args.append(created_from)
        if created_to is not None:
            clauses.append("created <= ?")
            args.append(created_to)
        if prefix:
            clauses.append("substr(instance_id, 1, ?) = ?")
            args.extend([len(prefix), prefix])
        if after is not None:
            clauses.append("instance_id > ?")
            args.append(after)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT {INSTANCE_COLUMNS} FROM instances {where} ORDER BY instance_id"  # noqa: S608 (values are bound)
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [Instance.from_row(row) for row in self.db.execute(sql, args)]

    def delete_instance(self, instance_id: str) -> None:
        """The instance, its history, its inbox and its queued activities."""
        for table in ("instances", "history", "messages", "activities"):
            self.db.execute(f"DELETE FROM {table} WHERE instance_id = ?", (instance_id,))  # noqa: S608

    # history ------------------------------------------------------------------------------------------------------
    def history(self, instance_id: str) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT event FROM history WHERE instance_id = ? ORDER BY seq", (instance_id,))
        return [json.loads(row[0]) for row in rows]

    def append_history(self, instance_id: str, events: list[dict[str, Any]]) -> None:
        row = self.db.execute("SELECT MAX(seq) FROM history WHERE instance_id = ?", (instance_id,)).fetchone()
        start = (row[0] + 1) if row and row[0] is not None else 0
        self.db.executemany(
            "INSERT INTO history (instance_id, seq, event) VALUES (?, ?, ?)",
            [(instance_id, start + i, json.dumps(event)) for i, event in enumerate(events)],
        )

    def clear_history(self, instance_id: str) -> None:
        self.db.execute("DELETE FROM history WHERE instance_id = ?", (instance_id,))

    # the orchestration inbox --------------------------------------------------------------------------------------
    def add_message(self, instance_id: str, execution_id: str | None, event: dict[str, Any], due: float) -> None:
        self.db.execute(
            "INSERT INTO messages (instance_id, execution_id, kind, event, due) VALUES (?, ?, ?, ?, ?)",
            (instance_id, execution_id, int(event["EventType"]), json.dumps(event), due),
        )

    def ready_instances(self, now: float, busy: set[str], wake_kinds: tuple[int, ...]) -> list[str]:
        """Instances with a message due; a suspended instance only for the kinds that may wake it."""
        kinds = ", ".join("?" * len(wake_kinds))
        sql = (
            "SELECT m.instance_id FROM messages m LEFT JOIN instances i ON i.instance_id = m.instance_id "  # noqa: S608
            f"WHERE m.due <= ? AND (i.status IS NULL OR i.status != 'Suspended' OR m.kind IN ({kinds})) "
            "GROUP BY m.instance_id ORDER BY MIN(m.id)"
        )
        rows = self.db.execute(sql, (now, *(int(k) for k in wake_kinds)))
        return [row[0] for row in rows if row[0] not in busy]

    def due_messages(self, instance_id: str, now: float) -> list[Message]:
        rows = self.db.execute(
            "SELECT id, instance_id, execution_id, kind, event, due FROM messages "
            "WHERE instance_id = ? AND due <= ? ORDER BY id",
            (instance_id, now),
        )
        return [Message(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5]) for r in rows]

    def next_due(self, now: float) -> float | None:
        row = self.db.execute("SELECT MIN(due) FROM messages WHERE due > ?", (now,)).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def delete_messages(self, ids: Iterable[int]) -> None:
        self.db.executemany("DELETE FROM messages WHERE id = ?", [(i,) for i in ids])

    def delete_pending_messages(self, instance_id: str) -> None:
        self.db.execute("DELETE FROM messages WHERE instance_id = ?", (instance_id,))

    # the activity queue -------------------------------------------------------------------------------------------
    def add_activity(self, instance_id: str, execution_id: str, task_id: int, name: str, input_: str | None) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO activities (instance_id, execution_id, task_id, name, input) VALUES (?, ?, ?, ?, ?)",
            (instance_id, execution_id, task_id, name, input_),
        )

    def pending_activities(self, busy: set[int], limit: int) -> list[ActivityItem]:
        rows = self.db.execute(
            "SELECT id, instance_id, execution_id, task_id, name, input, attempts FROM activities ORDER BY id"
        )
        items = []
        for row in rows:
            if row[0] in busy:
                continue
            items.append(ActivityItem(*row))
            if len(items) >= limit:
                break
        return items

    def activity_exists(self, item_id: int) -> bool:
        return self.db.execute("SELECT 1 FROM activities WHERE id = ?", (item_id,)).fetchone() is not None

    def count_activity_attempt(self, item_id: int) -> None:
        with self.transaction():
            self.db.execute("UPDATE activities SET attempts = attempts + 1 WHERE id = ?", (item_id,))

    def delete_activity(self, item_id: int) -> None:
        self.db.execute("DELETE FROM activities WHERE id = ?", (item_id,))

    # timer triggers -----------------------------------------------------------------------------------------------
    def timer_status(self, function: str) -> TimerStatus | None:
        row = self.db.execute(
            "SELECT schedule, last, next, last_updated FROM timer_status WHERE function = ?", (function,)
        ).fetchone()
        return None if row is None else TimerStatus(*row)

    def set_timer_status(self, function: str, status: TimerStatus) -> None:
        with self.transaction():
            self.db.execute(
                "INSERT OR REPLACE INTO timer_status (function, schedule, last, next, last_updated) "
                "VALUES (?, ?, ?, ?, ?)",
                (function, status.schedule, status.last, status.next, status.last_updated),
            )
