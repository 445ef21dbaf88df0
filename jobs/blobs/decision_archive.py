"""A finished job's decision log, archived to S3 as one SQLite file and served from a local copy.

Once a job's dataset is in S3 its decisions leave Redis (docs/reliability.md). The archive keeps
every decision's stored JSON under its log seq, with the same filters, so pages, cursors and totals
are those the Redis log gave: a page is one indexed range query, as cheap at the last page as the first.
An FTS5 index of each decision's text and input answers text queries (jobs.method.decisions).
An API process downloads an archive once and keeps the most recently used few on local disk.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path

from jobs.method.decisions import Query, searchable

NAME = "decisions.sqlite"
_SCHEMA = """
CREATE TABLE d (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, stage TEXT NOT NULL,
                verdict TEXT NOT NULL, rule TEXT NOT NULL, body BLOB NOT NULL);
CREATE TABLE totals (filter TEXT PRIMARY KEY, n INTEGER NOT NULL);
"""
# Contentless, keyed by d's seq. It holds each decision's words as Query's tokenizer made them,
# joined by spaces: the ascii tokenizer splits at the spaces only (every other character in a word is
# a letter, digit or non-ASCII), so the index's words are the Redis scan's. Prefix indexes keep
# one- and two-letter prefixes ("a", "wr") from merging thousands of words' lists a query.
_WORDS = "CREATE VIRTUAL TABLE words USING fts5(w, content='', tokenize='ascii', prefix='1 2')"
# every filter a page can use; the composite indexes end in seq so a page is an ordered range scan
_INDEXES = ("stage", "verdict", "rule", "stage, verdict", "stage, rule")


def _filter_key(stage: str | None, verdict: str | None, rule: str | None) -> str:
    """A filter's name in the totals table (as the Redis log names them): a rule makes the verdict
    redundant."""
    parts = [f"s={stage}" if stage else "", f"r={rule}" if rule else (f"v={verdict}" if verdict else "")]
    return "|".join(p for p in parts if p)


def build(decisions: Iterable[tuple[int, bytes]], path: Path) -> int:
    """Write a log's (seq, stored JSON) pairs, in seq order, into a new archive at `path`; returns the
    decisions archived."""
    path.unlink(missing_ok=True)
    db = sqlite3.connect(path)
    try:
        db.executescript(_SCHEMA)
        totals: dict[str, int] = {}
        count = 0
        for seq, body in decisions:
            d = json.loads(body)
            stage, verdict, rule = d["stage"], d["verdict"], d["rule"]
            db.execute("INSERT INTO d VALUES (?, ?, ?, ?, ?, ?)", (seq, d["id"], stage, verdict, rule, body))
            for key in ("", f"s={stage}", f"v={verdict}", f"r={rule}", f"s={stage}|v={verdict}"):
                totals[key] = totals.get(key, 0) + 1
            totals[f"s={stage}|r={rule}"] = totals.get(f"s={stage}|r={rule}", 0) + 1
            count += 1
        db.executemany("INSERT INTO totals VALUES (?, ?)", totals.items())
        for columns in _INDEXES:
            db.execute(f"CREATE INDEX ix_{columns.replace(', ', '_')} ON d ({columns}, seq)")
        _index_words(db)
        db.commit()
    finally:
        db.close()
    return count


def _index_words(db: sqlite3.Connection) -> None:
    db.execute(_WORDS)
    rows = db.cursor().execute("SELECT seq, body FROM d")
    db.executemany("INSERT INTO words (rowid, w) VALUES (?, ?)", ((s, searchable(b)) for s, b in rows))


def add_words(path: Path) -> None:
    """Give an archive written before text search its word index (a local copy; S3's is left as is).
    The write lock comes first, so two processes that open one old copy index it once."""
    db = sqlite3.connect(path, timeout=120, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'words'").fetchone():
            _index_words(db)
        db.execute("COMMIT")
    finally:
        db.close()


class ArchivedLog:
    """DecisionLog's read side (page, get) over an archive file."""

    def __init__(self, path: Path):
        self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        self.lock = threading.Lock()

    def close(self) -> None:
        self.db.close()

    def page(
        self,
        stage: str | None = None,
        verdict: str | None = None,
        rule: str | None = None,
        after: int = 0,
        limit: int = 50,
        text: Query | None = None,
    ) -> tuple[list[bytes], int | None, int | None]:
        if rule is not None and verdict is not None and verdict != ("kept" if rule == "kept" else "dropped"):
            return [], None, 0
        if text is not None and not text.terms:
            return [], None, 0
        where, args = [], []
        for column, value in (("stage", stage), ("rule", rule), ("verdict", None if rule else verdict)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if text is not None:
            where.append("seq IN (SELECT rowid FROM words WHERE words MATCH ?)")
            args.append(text.fts())
        sql = f"SELECT seq, body FROM d WHERE {' AND '.join(['seq > ?', *where])} ORDER BY seq LIMIT ?"
        with self.lock:
            rows = self.db.execute(sql, [after, *args, limit + 1]).fetchall()
            if text is None:
                found = self.db.execute(
                    "SELECT n FROM totals WHERE filter = ?", (_filter_key(stage, verdict, rule),)
                ).fetchone()
                total = found[0] if found else 0
            else:
                count = f"SELECT count(*) FROM d WHERE {' AND '.join(where)}"
                total = self.db.execute(count, args).fetchone()[0]
        more = len(rows) > limit
        rows = rows[:limit]
        return [bytes(body) for _, body in rows], (rows[-1][0] if more else None), total

    def get(self, decision_id: str) -> bytes | None:
        with self.lock:
            row = self.db.execute("SELECT body FROM d WHERE id = ?", (decision_id,)).fetchone()
        return bytes(row[0]) if row else None


class Cache:
    """Archives on local disk, the `keep` most recently used; one download per archive at a time."""

    def __init__(self, directory: Path, keep: int = 8):
        self.dir = directory
        self.keep = keep
        self.open: OrderedDict[str, ArchivedLog] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, job_id: str, download: Callable[[Path], None]) -> ArchivedLog:
        with self.lock:
            if job_id in self.open:
                self.open.move_to_end(job_id)
                return self.open[job_id]
            self.dir.mkdir(parents=True, exist_ok=True)
            path = self.dir / f"{job_id}.sqlite"
            if not path.exists():
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                download(tmp)
                os.replace(tmp, path)
            add_words(path)  # a copy downloaded, or kept on disk, before text search existed
            self.open[job_id] = ArchivedLog(path)
            while len(self.open) > self.keep:
                old_id, old = self.open.popitem(last=False)
                old.close()
                (self.dir / f"{old_id}.sqlite").unlink(missing_ok=True)
            return self.open[job_id]

    def drop(self, job_id: str) -> None:
        """Forget a deleted job's archive."""
        with self.lock:
            if (log := self.open.pop(job_id, None)) is not None:
                log.close()
            (self.dir / f"{job_id}.sqlite").unlink(missing_ok=True)
