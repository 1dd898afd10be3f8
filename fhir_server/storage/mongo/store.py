"""MongoStore: the scale-out backend (replica sets, sharding) on pymongo's async driver.

The only module importing pymongo / mongomock. Layout (`documents.py`): `resources` holds the current
version of each (type, id) with its search index entries embedded; `versions` keeps every version
forever (deletes as tombstones, body None); `meta` holds the global write counter (`seq`, advanced with
`find_one_and_update` + `$inc`) and the writer lease document.

How the write section is made serialised and atomic, and its limits:

- **Servers with transactions** (replica set or sharded cluster; detected with `hello` in `open()`):
  each section is one multi-document transaction (snapshot read concern, majority writes). Its first
  operation bumps the writer lease document `meta/writer`; a second section, in this process or in
  another hub process on the same replica set, conflicts on that document (WriteConflict, labelled
  TransientTransactionError) and retries with jittered backoff until the first commits or aborts. So
  sections run one at a time across processes, their reads (`current`, `search_ids`) see a snapshot
  taken after the previous section committed, and conditional create is race-free. A failing section
  aborts: nothing is left. Limits: a section must finish within the server's transaction lifetime
  (`transactionLifetimeLimitSeconds`, default 60 s); a waiting writer gives up after `lock_timeout`
  (StorageError); an unknown commit result is retried, a failed commit reports StorageError.
  Within one process an asyncio lock queues sections so they do not spin against each other.
- **No transactions** (mongomock in tests, a standalone server): sections are serialised by the
  asyncio lock and write straight through, recording an *undo log* (the version inserted, the
  resources document replaced); a failing section replays it backwards, so it leaves nothing.
  Limits: this serialises one process only (run a single hub process against such a server); readers
  outside the section may briefly see writes of a section that is later undone; a crash in the middle
  of a section can leave part of it (the undo log lives in memory). `seq` may have gaps (harmless: it
  only orders).

Everything else - search, history, reads - is the same code on both paths; only the client and the
transaction capability check differ (`from_uri` vs `mongomock`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from bson.errors import BSONError
from pymongo import AsyncMongoClient, ReturnDocument
from pymongo.errors import PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from fhir_server.errors import StorageError
from fhir_server.search.ast import SearchQuery
from fhir_server.search.index import IndexEntries
from fhir_server.storage.mongo import compile as mongo_compile
from fhir_server.storage.mongo.documents import (
    Document,
    embed_index,
    resource_document,
    resource_key,
    to_stored,
)
from fhir_server.storage.mongo.documents import version_document as make_version_document
from fhir_server.storage.mongo.history import history_filter, history_find, history_pipeline
from fhir_server.storage.protocol import HistoryRequest, NewVersion, SearchPage, StoredVersion

LOGGER = logging.getLogger(__name__)

# Indexes created by open(): (collection, keys, unique)
INDEXES: list[tuple[str, list[tuple[str, int]], bool]] = [
    ("resources", [("type", 1), ("id", 1)], True),
    ("resources", [("seq", 1)], False),
    ("resources", [("type", 1), ("lu", 1)], False),
    ("resources", [("idx.pids", 1)], False),
    ("resources", [("idx.token.p", 1), ("idx.token.c", 1), ("idx.token.s", 1)], False),
    ("resources", [("idx.string.p", 1), ("idx.string.v", 1)], False),
    ("resources", [("idx.reference.p", 1), ("idx.reference.i", 1), ("idx.reference.t", 1)], False),
    ("resources", [("idx.reference.p", 1), ("idx.reference.u", 1)], False),
    ("resources", [("idx.date.p", 1), ("idx.date.l", 1), ("idx.date.h", 1)], False),
    ("resources", [("idx.number.p", 1), ("idx.number.l", 1)], False),
    ("resources", [("idx.quantity.p", 1), ("idx.quantity.c", 1), ("idx.quantity.l", 1)], False),
    ("resources", [("idx.uri.p", 1), ("idx.uri.v", 1)], False),
    ("resources", [("idx.composite.p", 1), ("idx.composite.c", 1)], False),
    ("versions", [("type", 1), ("id", 1), ("version", 1)], True),
    ("versions", [("seq", 1)], False),
    ("versions", [("type", 1), ("seq", 1)], False),
    ("versions", [("lu", 1)], False),
]
WRITER = "writer"
SEQ = "seq"


@contextmanager
def _driver_errors(what: str) -> Iterator[None]:
    """Translate driver and BSON failures where they enter (nothing else is caught)."""
    try:
        yield
    except (PyMongoError, BSONError, OverflowError) as exc:
        raise StorageError(f"MongoDB {what} failed: {exc}") from exc


async def _resolve_awaitable(value: Any) -> Any:
    """pymongo's `aggregate`/`close` are coroutines, mongomock-motor's are not: accept both."""
    return await value if inspect.isawaitable(value) else value


class MongoWriteTransaction:
    """One serialised write section: a server transaction (`session`) or an undo log (`undo`)."""

    def __init__(self, store: MongoStore, session: Any, undo: list[tuple[str, str, Document | None]] | None):
        self._store = store
        self._session = session
        self._undo = undo

    async def current(self, resource_type: str, resource_id: str) -> StoredVersion | None:
        return await self._store._current(resource_type, resource_id, self._session)

    async def write_version(self, version: NewVersion) -> StoredVersion:
        store, session = self._store, self._session
        with _driver_errors("write"):
            seq = await store._next_seq(session)
            vdoc = make_version_document(version, seq)
            await store._db["versions"].insert_one(vdoc, session=session)
            if self._undo is not None:
                self._undo.append(("versions", vdoc["_id"], None))
            rdoc = resource_document(version, seq)
            previous = await store._db["resources"].find_one_and_replace(
                {"_id": rdoc["_id"]}, rdoc, upsert=True, session=session
            )
            if self._undo is not None:
                self._undo.append(("resources", rdoc["_id"], previous))
        return to_stored(vdoc)

    async def search_ids(self, query: SearchQuery, limit: int) -> list[tuple[str, str]]:
        return await self._store._search_ids(query, limit, self._session)

    async def reindex(self, resource_type: str, resource_id: str, entries: IndexEntries) -> None:
        """Replace the embedded index of the current version ($reindex); the body is untouched."""
        store, session = self._store, self._session
        key = resource_key(resource_type, resource_id)
        with _driver_errors("reindex"):
            previous = await store._db["resources"].find_one_and_update(
                {"_id": key}, {"$set": {"idx": embed_index(entries)}}, session=session
            )
        if self._undo is not None and previous is not None:
            self._undo.append(("resources", key, previous))


class MongoStore:
    """ResourceStore over one MongoDB database (pymongo async client, or mongomock-motor in tests)."""

    def __init__(
        self,
        client_factory: Callable[[], Any],
        database: str,
        *,
        transactions: bool | None,
        lock_timeout: float = 30.0,
    ) -> None:
        self._client_factory = client_factory
        self._database = database
        self._transactions = transactions  # None: ask the server in open()
        self._lock_timeout = lock_timeout
        self._client: Any = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_uri(cls, uri: str, database: str) -> MongoStore:
        """A store on a real server; transactions are used when the deployment supports them."""
        return cls(lambda: AsyncMongoClient(uri, tz_aware=False), database, transactions=None)

    @classmethod
    def mongomock(cls, database: str = "yilian") -> MongoStore:
        """An in-memory store on mongomock-motor (tests; no transactions, so the undo-log path)."""
        from mongomock_motor import AsyncMongoMockClient

        return cls(AsyncMongoMockClient, database, transactions=False)

    @property
    def _db(self) -> Any:
        if self._client is None:
            raise StorageError("MongoDB store is not open")
        return self._client[self._database]

    @property
    def uses_transactions(self) -> bool:
        return bool(self._transactions)

    async def open(self) -> None:
        self._client = self._client_factory()
        with _driver_errors("open"):
            if self._transactions is None:
                hello = await self._db.command("hello")
                self._transactions = "setName" in hello or hello.get("msg") == "isdbgrid"
            for collection, keys, unique in INDEXES:
                await self._db[collection].create_index(keys, unique=unique)
            meta = self._db["meta"]
            await meta.update_one({"_id": SEQ}, {"$setOnInsert": {"value": 0}}, upsert=True)
            await meta.update_one({"_id": WRITER}, {"$setOnInsert": {"sections": 0}}, upsert=True)
        LOGGER.info(
            "MongoDB store open (database %s, %s)",
            self._database,
            "transactions" if self._transactions else "no transactions: single process, undo log",
        )

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await _resolve_awaitable(client.close())

    # ---- reads ----

    async def _current(self, resource_type: str, resource_id: str, session: Any) -> StoredVersion | None:
        with _driver_errors("read"):
            doc = await self._db["resources"].find_one(
                {"_id": resource_key(resource_type, resource_id)}, {"idx": 0}, session=session
            )
        return None if doc is None else to_stored(doc)

    async def current(self, resource_type: str, resource_id: str) -> StoredVersion | None:
        return await self._current(resource_type, resource_id, None)

    async def current_many(self, refs: Sequence[tuple[str, str]]) -> list[StoredVersion]:
        keys = [resource_key(t, i) for t, i in refs]
        with _driver_errors("read"):
            docs = await self._db["resources"].find({"_id": {"$in": keys}}, {"idx": 0}).to_list(None)
        by_key = {d["_id"]: to_stored(d) for d in docs}
        return [by_key[k] for k in keys if k in by_key]

    async def version(self, resource_type: str, resource_id: str, version: int) -> StoredVersion | None:
        with _driver_errors("read"):
            doc = await self._db["versions"].find_one(
                {"type": resource_type, "id": resource_id, "version": version}
            )
        return None if doc is None else to_stored(doc)

    async def _aggregate(self, collection: str, pipeline: list[Document], session: Any) -> list[Document]:
        with _driver_errors("query"):
            cursor = await _resolve_awaitable(self._db[collection].aggregate(pipeline, session=session))
            docs: list[Document] = await cursor.to_list(None)
        return docs

    async def _find(
        self,
        collection: str,
        filter_doc: Document,
        sort: list[tuple[str, int]],
        limit: int,
        session: Any,
        projection: Document | None = None,
    ) -> list[Document]:
        with _driver_errors("query"):
            cursor = self._db[collection].find(filter_doc, projection, session=session)
            docs: list[Document] = await cursor.sort(sort).limit(limit).to_list(None)
        return docs

    async def history(self, request: HistoryRequest) -> list[StoredVersion]:
        if request.count <= 0:
            return []
        if request.at is None:
            filter_doc, sort, limit = history_find(request)
            docs = await self._find("versions", filter_doc, sort, limit, None)
        else:
            docs = await self._aggregate("versions", history_pipeline(request, count_only=False), None)
        return [to_stored(d) for d in docs]

    async def history_count(self, request: HistoryRequest) -> int:
        if request.at is None:
            with _driver_errors("count"):
                return int(await self._db["versions"].count_documents(history_filter(request)))
        docs = await self._aggregate("versions", history_pipeline(request, count_only=True), None)
        return int(docs[0]["n"]) if docs else 0

    # ---- search ----

    async def _resolve(self, query: SearchQuery, session: Any) -> dict[Any, mongo_compile.Keys]:
        """Run the inner queries of chains and _has (innermost first) into (type, id) key sets."""
        resolved: dict[Any, mongo_compile.Keys] = {}
        for f in mongo_compile.unresolved(query.filters, resolved):
            filter_doc, projection = mongo_compile.subquery(f, resolved)
            with _driver_errors("query"):
                cursor = self._db["resources"].find(filter_doc, projection, session=session)
                docs = await cursor.to_list(None)
            resolved[f] = mongo_compile.resolved_keys(f, docs)
        return resolved

    async def _search(self, query: SearchQuery, session: Any) -> SearchPage:
        resolved = await self._resolve(query, session)
        total = None
        if query.total in ("accurate", "estimate") or query.summary == "count":
            match = mongo_compile.match_filter(query.types, query.filters, resolved)
            with _driver_errors("count"):
                total = int(await self._db["resources"].count_documents(match, session=session))
        if query.count == 0 or query.summary == "count":
            return SearchPage([], total, None, None)
        after: list[Any] | None = None
        backwards = False
        if query.cursor:
            direction, after = mongo_compile.decode_cursor(query.cursor, query)
            backwards = direction == "p"
        docs = await self._page(query, resolved, after, backwards, query.count + 1, session)
        more = len(docs) > query.count
        docs = docs[: query.count]
        if backwards:
            docs.reverse()
            more_after, more_before = True, more
        else:
            more_after, more_before = more, after is not None
        next_cursor = prev_cursor = None
        if docs and more_after:
            next_cursor = mongo_compile.encode_cursor("n", mongo_compile.row_keys(query, docs[-1]))
        if docs and more_before:
            prev_cursor = mongo_compile.encode_cursor("p", mongo_compile.row_keys(query, docs[0]))
        return SearchPage([to_stored(d) for d in docs], total, next_cursor, prev_cursor)

    async def search(self, query: SearchQuery) -> SearchPage:
        return await self._search(query, None)

    async def _search_ids(self, query: SearchQuery, limit: int, session: Any) -> list[tuple[str, str]]:
        if limit <= 0:
            return []
        resolved = await self._resolve(query, session)
        docs = await self._page(query, resolved, None, False, limit, session)
        return [(d["type"], d["id"]) for d in docs]

    async def _page(
        self,
        query: SearchQuery,
        resolved: mongo_compile.Resolved,
        after: list[Any] | None,
        backwards: bool,
        limit: int,
        session: Any,
    ) -> list[Document]:
        """Up to `limit` documents after the cursor keys, in page order (reversed when backwards)."""
        if query.sort:
            pipeline = mongo_compile.page_pipeline(
                query, resolved, after=after, backwards=backwards, limit=limit
            )
            return await self._aggregate("resources", pipeline, session)
        filter_doc, sort = mongo_compile.page_find(query, resolved, after=after, backwards=backwards)
        return await self._find("resources", filter_doc, sort, limit, session, {"idx": 0})

    # ---- writes ----

    async def _next_seq(self, session: Any) -> int:
        doc = await self._db["meta"].find_one_and_update(
            {"_id": SEQ},
            {"$inc": {"value": 1}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
            session=session,
        )
        return int(doc["value"])

    async def sync(self) -> None:
        """Every commit is as durable as the client's write concern (`j`, `w` in the URI) makes it."""

    @asynccontextmanager
    async def write(self, *, durable: bool = True) -> AsyncIterator[MongoWriteTransaction]:
        """One serialised, atomic write section (see the module docstring for how and its limits).

        `durable` is not used: durability is the deployment's write concern, the same for every write."""
        async with self._lock:
            if self._transactions:
                async with self._transaction_section() as tx:
                    yield tx
            else:
                async with self._undo_section() as tx:
                    yield tx

    @asynccontextmanager
    async def _transaction_section(self) -> AsyncIterator[MongoWriteTransaction]:
        with _driver_errors("session"):
            session = self._client.start_session()
        try:
            await self._begin(session)
            try:
                yield MongoWriteTransaction(self, session, None)
            except BaseException:
                with _driver_errors("abort"):
                    await session.abort_transaction()
                raise
            await self._commit(session)
        finally:
            await session.end_session()

    async def _begin(self, session: Any) -> None:
        """Start the transaction and take the writer lease; retry while another section holds it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._lock_timeout
        delay = 0.005
        while True:
            with _driver_errors("begin"):
                await session.start_transaction(
                    read_concern=ReadConcern("snapshot"), write_concern=WriteConcern("majority")
                )
            try:
                await self._db["meta"].update_one({"_id": WRITER}, {"$inc": {"sections": 1}}, session=session)
                return
            except PyMongoError as exc:
                with _driver_errors("abort"):
                    await session.abort_transaction()
                if not exc.has_error_label("TransientTransactionError"):
                    raise StorageError(f"MongoDB write section could not start: {exc}") from exc
                if loop.time() > deadline:
                    raise StorageError("MongoDB writer lease not obtained in time (another writer)") from exc
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.2)

    async def _commit(self, session: Any) -> None:
        for attempt in range(5):
            try:
                await session.commit_transaction()
                return
            except PyMongoError as exc:
                if exc.has_error_label("UnknownTransactionCommitResult") and attempt < 4:
                    continue
                raise StorageError(f"MongoDB commit failed, nothing was written: {exc}") from exc

    @asynccontextmanager
    async def _undo_section(self) -> AsyncIterator[MongoWriteTransaction]:
        undo: list[tuple[str, str, Document | None]] = []
        try:
            yield MongoWriteTransaction(self, None, undo)
        except BaseException:
            await self._rollback(undo)
            raise

    async def _rollback(self, undo: list[tuple[str, str, Document | None]]) -> None:
        """Replay the undo log backwards: remove inserted versions, restore replaced documents."""
        with _driver_errors("rollback"):
            for collection, key, previous in reversed(undo):
                if previous is None:
                    await self._db[collection].delete_one({"_id": key})
                else:
                    await self._db[collection].replace_one({"_id": key}, previous)
