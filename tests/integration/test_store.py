"""Both catalogue stores against real databases, through `create_store` as the service uses it."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import numpy as np
import pytest

from service.audio.hashes import Fingerprints
from service.errors import IndexMismatch, InvalidInput, StoreUnavailable
from service.settings import Settings
from service.store import EnvelopeRange, Hits, NewSong, SongMeta, Store, create_store
from service.store.migrations import list_migrations
from service.store.sqlite import SqliteStore

VERSION = "fp1-test00000000"
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def _settings(url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": url,
        "environment": "test",
        "db_pool_min_size": 1,
        "db_pool_max_size": 4,
        "db_command_timeout_s": 30.0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@asynccontextmanager
async def opened(url: str, version: str = VERSION, **overrides: object) -> AsyncIterator[Store]:
    store = create_store(_settings(url, **overrides), version)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def make_fingerprints(
    rng: np.random.Generator, n: int, low: int = INT32_MIN, high: int = INT32_MAX
) -> Fingerprints:
    hashes = rng.integers(low, high, n, endpoint=True).astype(np.int32)
    frames = rng.integers(0, 6000, n).astype(np.int32)
    return Fingerprints(hashes=hashes, offsets=frames)


def make_song(
    fingerprints: Fingerprints,
    sha: str,
    title: str = "A Song",
    n_frames: int = 6000,
    **meta: str | None,
) -> NewSong:
    return NewSong(
        meta=SongMeta(title=title, **meta),
        duration_s=n_frames * 0.032,
        n_frames=n_frames,
        content_sha256=sha,
        fingerprints=fingerprints,
    )


def stored_rows(song_id: int, n_frames: int, fp: Fingerprints) -> set[tuple[int, int, int, int]]:
    return {(int(h), song_id, int(f), n_frames) for h, f in zip(fp.hashes, fp.offsets, strict=True)}


def hit_rows(hits) -> list[tuple[int, int, int, int]]:
    return list(
        zip(
            hits.hashes.tolist(),
            hits.song_ids.tolist(),
            hits.offsets.tolist(),
            hits.song_frames.tolist(),
            strict=True,
        )
    )


async def count_rows(url: str, sql: str) -> int:
    """A count straight from the database, bypassing the store under test."""
    settings = _settings(url)
    if settings.is_sqlite:
        with sqlite3.connect(settings.sqlite_path) as conn:
            return conn.execute(sql).fetchone()[0]
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


@pytest.fixture(params=["postgres", "sqlite"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database of each backend that has never been migrated."""
    if request.param == "postgres":
        return request.getfixturevalue("pg_empty_url")
    return f"sqlite:///{tmp_path / 'fresh' / 'catalogue.sqlite3'}"


# --- songs ------------------------------------------------------------------------------------


async def test_add_and_get(store_url: str) -> None:
    rng = np.random.default_rng(1)
    fp = make_fingerprints(rng, 5000)
    # A repeated (hash, frame) pair is stored once.
    fp = Fingerprints(np.append(fp.hashes, fp.hashes[:10]), np.append(fp.offsets, fp.offsets[:10]))
    new = make_song(fp, "a" * 64, "Título", 4321, artist="Ärtist", isrc="GBAYE0601498")
    before = datetime.now(UTC) - timedelta(seconds=5)
    async with opened(store_url) as store:
        song, created = await store.add_song(new)
        assert created
        assert song.id > 0
        assert (song.title, song.artist, song.album, song.isrc, song.external_id) == (
            "Título",
            "Ärtist",
            None,
            "GBAYE0601498",
            None,
        )
        assert song.n_frames == 4321
        assert song.duration_s == pytest.approx(4321 * 0.032)
        assert song.content_sha256 == "a" * 64
        assert song.fingerprint_count == 5000
        assert song.created_at.utcoffset() == timedelta(0)
        assert before <= song.created_at <= datetime.now(UTC) + timedelta(seconds=5)

        assert await store.get_song(song.id) == song
        assert await store.find_by_content("a" * 64) == song
        assert await store.get_song(song.id + 1000) is None
        assert await store.find_by_content("b" * 64) is None
        assert await store.get_songs([song.id, song.id, song.id + 1000]) == {song.id: song}
        assert await store.get_songs([]) == {}

        stats = await store.stats()
        assert (stats.songs, stats.fingerprints) == (1, 5000)
    assert await count_rows(store_url, "SELECT count(*) FROM fingerprints") == 5000


async def test_same_content_is_stored_once(store_url: str) -> None:
    rng = np.random.default_rng(2)
    first_fp, other_fp = make_fingerprints(rng, 3000), make_fingerprints(rng, 4000)
    async with opened(store_url) as store:
        first, created = await store.add_song(make_song(first_fp, "c" * 64, "First"))
        again, created_again = await store.add_song(make_song(other_fp, "c" * 64, "Renamed"))
        assert created and not created_again
        assert again == first  # the stored song, not the new metadata
        stats = await store.stats()
        assert (stats.songs, stats.fingerprints) == (1, 3000)
        # None of the second upload's fingerprints were written.
        leaked = set(hit_rows(await store.lookup(other_fp.hashes))) - stored_rows(
            first.id, 6000, first_fp
        )
        assert leaked == set()
    assert await count_rows(store_url, "SELECT count(*) FROM fingerprints") == 3000


async def test_concurrent_adds_of_the_same_content_yield_one_song(store_url: str) -> None:
    rng = np.random.default_rng(3)
    songs = [make_song(make_fingerprints(rng, 20_000), "d" * 64, f"Upload {i}") for i in range(4)]
    async with opened(store_url) as store:
        results = await asyncio.gather(*(store.add_song(s) for s in songs))
        assert sorted(created for _, created in results) == [False, False, False, True]
        assert len({song.id for song, _ in results}) == 1
        stats = await store.stats()
        assert (stats.songs, stats.fingerprints) == (1, 20_000)
    assert await count_rows(store_url, "SELECT count(*) FROM fingerprints") == 20_000


async def test_lookup_returns_exactly_the_stored_rows(store_url: str) -> None:
    rng = np.random.default_rng(4)
    # Hashes from a narrow range collide within and across songs; the int32 extremes check
    # that signs survive the binary round trip.
    fp_a = make_fingerprints(rng, 20_000, -3000, 3000)
    fp_a = Fingerprints(
        np.append(fp_a.hashes, np.array([INT32_MIN, INT32_MAX], np.int32)),
        np.append(fp_a.offsets, np.array([0, 5999], np.int32)),
    )
    fp_b = make_fingerprints(rng, 8000, -3000, 3000)
    async with opened(store_url) as store:
        a, _ = await store.add_song(make_song(fp_a, "e" * 64, "A", n_frames=7000))
        b, _ = await store.add_song(make_song(fp_b, "f" * 64, "B", n_frames=2500))
        rows = stored_rows(a.id, 7000, fp_a) | stored_rows(b.id, 2500, fp_b)

        query = np.concatenate(
            [
                rng.choice(fp_a.hashes, 500),
                rng.choice(fp_b.hashes, 500),
                np.array([INT32_MIN, INT32_MAX, INT32_MAX], np.int32),
                rng.integers(10_000, 20_000, 300).astype(np.int32),  # never stored
            ]
        ).astype(np.int32)
        hits = await store.lookup(query)
        wanted = set(query.tolist())
        expected = {row for row in rows if row[0] in wanted}
        got = hit_rows(hits)
        assert len(got) == len(expected)  # each stored row once, however often it was asked
        assert set(got) == expected
        assert {row[1] for row in got} == {a.id, b.id}
        for array in (hits.hashes, hits.song_ids, hits.offsets, hits.song_frames):
            assert array.dtype.kind == "i"

        everything = await store.lookup(np.concatenate([fp_a.hashes, fp_b.hashes]))
        assert set(hit_rows(everything)) == rows
        assert len(everything) == len(rows)

        assert len(await store.lookup(np.array([], dtype=np.int32))) == 0
        assert len(await store.lookup(np.arange(10_000, 10_100, dtype=np.int32))) == 0


def _left_out(hits: Hits) -> dict[int, int]:
    return dict(zip(hits.left_out.hashes.tolist(), hits.left_out.postings.tolist(), strict=True))


async def test_lookup_leaves_out_hashes_stored_more_often_than_the_cap(store_url: str) -> None:
    """A frequent hash is left out whole, whether its postings are compacted or still in the
    delta; rarer hashes come back complete; the total the cap scales with follows adds and
    deletes."""
    frames = np.arange(0, 40, 2, dtype=np.int32)

    def song(counts: dict[int, int]) -> Fingerprints:
        hashes = np.concatenate([np.full(n, h, np.int32) for h, n in counts.items()])
        offsets = np.concatenate([frames[:n] for n in counts.values()])
        return Fingerprints(hashes, offsets)

    fp_a = song({7: 5, 9: 1, 11: 4})
    fp_b = song({7: 3, 11: 2, 13: 6})
    async with opened(store_url) as store:
        await store.add_song(make_song(fp_a, "1" * 64, "A"))
        assert await store.fingerprint_total() == 10
        for compacted in (False, True):
            if compacted:
                await store.compact()
            b, _ = await store.add_song(make_song(fp_b, f"{int(compacted) + 2}" * 64, "B"))
            query = np.array([7, 9, 11, 13], np.int32)
            everything = await store.lookup(query)
            assert np.bincount(everything.hashes, minlength=14)[[7, 9, 11, 13]].tolist() == [
                8, 1, 6, 6,
            ]  # fmt: skip
            capped = await store.lookup(query, max_postings=6)
            assert sorted(set(capped.hashes.tolist())) == [9, 11, 13]
            assert set(hit_rows(capped)) == {r for r in hit_rows(everything) if r[0] != 7}
            assert len(await store.lookup(query, max_postings=0)) == 0
            # A budget of postings keeps the rarest hashes first (ties: the lower hash).
            # What the budget left out, with its postings, beside the catalogue's frames: the
            # hashes over the cap are not among them (the cap is part of the chance model).
            cases = (
                (6, 7, [9, 11], {13: 6}),
                (6, 6, [9], {11: 6, 13: 6}),
                (None, 20, [9, 11, 13], {7: 8}),
                (None, None, [7, 9, 11, 13], {}),
            )
            for cap, budget, kept, left_out in cases:
                limited = await store.lookup(query, max_postings=cap, max_hits=budget)
                assert sorted(set(limited.hashes.tolist())) == kept
                assert set(hit_rows(limited)) == {r for r in hit_rows(everything) if r[0] in kept}
                assert _left_out(limited) == left_out
                assert limited.left_out.catalogue_frames == (12_000 if left_out else 0)
            assert await store.fingerprint_total() == 21
            assert await store.delete_song(b.id)
            assert await store.fingerprint_total() == 10
            alone = await store.lookup(query, max_hits=6)
            assert _left_out(alone) == {7: 5}
            assert alone.left_out.catalogue_frames == 6000


async def test_postgres_lookup_decodes_hits_off_the_event_loop(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 10,000 songs a lookup decodes ~10^6 hits (10^7 in a speed search): on the event loop
    that would stall health checks and every other request for the time it takes."""
    import threading

    import service.store.postgres.lookup as postgres

    decoded_in: list[threading.Thread] = []

    def spy(*args: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        decoded_in.append(threading.current_thread())
        return real(*args)

    real = postgres.decode_lookup
    monkeypatch.setattr(postgres, "decode_lookup", spy)
    fp = make_fingerprints(np.random.default_rng(9), 3000, -500, 500)
    async with opened(pg_url) as store:
        song, _ = await store.add_song(make_song(fp, "d" * 64, n_frames=6000))
        await store.compact()
        hits = await store.lookup(fp.hashes[:200])
    assert set(hit_rows(hits)) == {
        r for r in stored_rows(song.id, 6000, fp) if r[0] in set(fp.hashes[:200].tolist())
    }
    assert decoded_in and threading.main_thread() not in decoded_in


async def test_postgres_store_knows_every_song_length_once_open(pg_url: str) -> None:
    """A new replica must not spend its first identifications fetching the lengths of the
    songs its lookups meet (thousands per lookup in a large catalogue): it reads them all when
    it opens, and a lookup then costs one statement."""
    rng = np.random.default_rng(11)
    async with opened(pg_url) as writer:
        songs = [
            (
                await writer.add_song(
                    make_song(make_fingerprints(rng, 400, -50, 50), c * 64, n_frames=3000 + i)
                )
            )[0]
            for i, c in enumerate("efg")
        ]
    async with opened(pg_url) as store:
        ids = np.array([s.id for s in songs])
        assert store._song_frames.missing(ids).size == 0  # type: ignore[attr-defined]
        hits = await store.lookup(np.arange(-50, 51, dtype=np.int32))
        assert set(hits.song_ids.tolist()) == set(ids.tolist())
        assert {int(f) for f in hits.song_frames} == {3000, 3001, 3002}


async def test_delete_removes_the_song_and_its_fingerprints(store_url: str) -> None:
    rng = np.random.default_rng(5)
    fp_keep, fp_gone = make_fingerprints(rng, 3000, -500, 500), make_fingerprints(rng, 3000)
    async with opened(store_url) as store:
        keep, _ = await store.add_song(make_song(fp_keep, "1" * 64, "Keep"))
        gone, _ = await store.add_song(make_song(fp_gone, "2" * 64, "Gone"))

        assert await store.delete_song(gone.id)
        assert await store.get_song(gone.id) is None
        assert await store.find_by_content("2" * 64) is None
        gone_hashes = set(fp_gone.hashes.tolist())
        assert set(hit_rows(await store.lookup(fp_gone.hashes))) == {
            row for row in stored_rows(keep.id, 6000, fp_keep) if row[0] in gone_hashes
        }
        assert set(hit_rows(await store.lookup(fp_keep.hashes))) == stored_rows(
            keep.id, 6000, fp_keep
        )
        assert not await store.delete_song(gone.id)
        stats = await store.stats()
        assert (stats.songs, stats.fingerprints) == (1, 3000)

        # The same audio can be indexed again, as a new song.
        again, created = await store.add_song(make_song(fp_gone, "2" * 64, "Back"))
        assert created and again.id != gone.id
    assert await count_rows(store_url, "SELECT count(*) FROM fingerprints") == 6000


async def test_update_song(store_url: str) -> None:
    rng = np.random.default_rng(6)
    async with opened(store_url) as store:
        song, _ = await store.add_song(
            make_song(make_fingerprints(rng, 100), "3" * 64, "Old", artist="Someone")
        )
        updated = await store.update_song(
            song.id, {"title": "New", "album": "LP", "artist": None, "external_id": "cat-7"}
        )
        assert updated is not None
        assert (updated.title, updated.artist, updated.album, updated.external_id) == (
            "New",
            None,
            "LP",
            "cat-7",
        )
        assert (updated.id, updated.content_sha256, updated.fingerprint_count) == (
            song.id,
            song.content_sha256,
            song.fingerprint_count,
        )
        assert await store.get_song(song.id) == updated
        assert await store.update_song(song.id, {}) == updated
        assert await store.update_song(song.id + 1000, {"title": "Nobody"}) is None

        for bad in (
            {"content_sha256": "x"},
            {"n_frames": "1"},
            {"title": None},
            {"title": " "},
            {"title": "a\x00b"},
            {"album": "\x00"},
        ):
            with pytest.raises(InvalidInput) as raised:
                await store.update_song(song.id, bad)  # type: ignore[arg-type]
            assert raised.value.status == 422
        assert await store.get_song(song.id) == updated
        # Both stores refuse NUL text and take ids past their columns for "no such row".
        with pytest.raises(InvalidInput):
            await store.list_songs(limit=10, offset=0, query="a\x00")
        with pytest.raises(InvalidInput):
            await store.get_stream("radio\x00")
        for too_big in (2**31, 2**63, 2**64):
            assert await store.get_song(too_big) is None
            assert await store.update_song(too_big, {"title": "x"}) is None
            assert await store.delete_song(too_big) is False
        page = await store.list_songs(limit=10, offset=2**62)
        assert page.items == [] and page.total >= 1


async def test_list_filters_and_paginates(store_url: str) -> None:
    rng = np.random.default_rng(7)
    metas = [
        {"title": "Yesterday", "artist": "The Beatles", "album": "Help!"},
        {"title": "Let It Be", "artist": "the beatles"},
        {"title": "Halo", "artist": "Beyoncé", "isrc": "USSM10804555"},
        {"title": "50% Off", "external_id": "shop_01"},
        {"title": "500 Off"},
        {"title": "Blackbird", "album": "The White Album", "external_id": "BEAT-9"},
        {"title": "Zebra"},
    ]
    async with opened(store_url) as store:
        ids = []
        for i, meta in enumerate(metas):
            fp = make_fingerprints(rng, 50)
            song, _ = await store.add_song(make_song(fp, f"{i:064d}", **meta))
            ids.append(song.id)
        assert ids == sorted(ids)

        first = await store.list_songs(limit=3, offset=0)
        assert (first.total, first.limit, first.offset) == (7, 3, 0)
        assert [s.id for s in first.items] == ids[:3]
        last = await store.list_songs(limit=3, offset=6)
        assert [s.id for s in last.items] == ids[6:]
        past = await store.list_songs(limit=3, offset=50)
        assert (past.items, past.total) == ([], 7)

        async def titles(query: str, limit: int = 100, offset: int = 0) -> tuple[list[str], int]:
            page = await store.list_songs(limit=limit, offset=offset, query=query)
            return [s.title for s in page.items], page.total

        # Any field, any case; the filter applies before pagination.
        assert await titles("BEATLES") == (["Yesterday", "Let It Be"], 2)
        assert await titles("beat") == (["Yesterday", "Let It Be", "Blackbird"], 3)
        assert await titles("beat", limit=1, offset=1) == (["Let It Be"], 3)
        assert await titles("help") == (["Yesterday"], 1)
        assert await titles("ussm1080") == (["Halo"], 1)
        assert await titles("BEYONCÉ") == (["Halo"], 1)
        assert await titles("white album") == (["Blackbird"], 1)
        # LIKE wildcards in the query are literal characters.
        assert await titles("50%") == (["50% Off"], 1)
        assert await titles("p_0") == (["50% Off"], 1)
        assert await titles("p_") == (["50% Off"], 1)
        assert await titles("nothing like this") == ([], 0)


# --- schema and lifecycle -------------------------------------------------------------------


async def test_migrate_on_a_migrated_database_is_a_no_op(store_url: str) -> None:
    store = create_store(_settings(store_url), VERSION)
    try:
        assert await store.migrate() == []
        assert await store.migrate() == []
    finally:
        await store.close()
    versions = len(list_migrations("sqlite" if "sqlite" in store_url else "postgres"))
    assert await count_rows(store_url, "SELECT count(*) FROM schema_migrations") == versions


async def test_fresh_database_is_not_ready_until_migrated(fresh_url: str) -> None:
    dialect = "sqlite" if fresh_url.startswith("sqlite") else "postgres"
    versions = [m.version for m in list_migrations(dialect)]
    settings = _settings(fresh_url, migrate_on_start=False)

    unopened = create_store(settings, VERSION)  # probes may ask before open()
    try:
        assert not await unopened.ready()
    finally:
        await unopened.close()

    store = create_store(settings, VERSION)
    await store.open()
    try:
        assert not await store.ready()
        assert await store.migrate() == versions
        assert await store.ready()
        assert await store.migrate() == []
    finally:
        await store.close()
    assert await count_rows(fresh_url, "SELECT count(*) FROM schema_migrations") == len(versions)


async def test_open_migrates_when_asked(fresh_url: str) -> None:
    async with opened(fresh_url, migrate_on_start=True) as store:
        assert await store.ready()
        assert await store.migrate() == []
        assert (await store.stats()).songs == 0


async def test_concurrent_migrations_apply_each_migration_once(fresh_url: str) -> None:
    dialect = "sqlite" if fresh_url.startswith("sqlite") else "postgres"
    versions = [m.version for m in list_migrations(dialect)]
    # Separate stores: separate connections (and, for SQLite, threads), as separate replicas.
    stores = [create_store(_settings(fresh_url), VERSION) for _ in range(4)]
    try:
        results = await asyncio.gather(*(s.migrate() for s in stores))
        assert sorted(v for applied in results for v in applied) == sorted(versions)
        assert all(await asyncio.gather(*(s.ready() for s in stores)))
    finally:
        for s in stores:
            await s.close()
    assert await count_rows(fresh_url, "SELECT count(*) FROM schema_migrations") == len(versions)


def test_both_dialects_share_one_numbering() -> None:
    """A migration number names the same step in PostgreSQL and SQLite (the docs cite one)."""
    postgres = [m.version for m in list_migrations("postgres")]
    sqlite = [m.version for m in list_migrations("sqlite")]
    assert postgres == sqlite
    assert [v[:4] for v in postgres] == [f"{n:04d}" for n in range(1, len(postgres) + 1)]


#: What SQLite catalogues migrated before the shared numbering recorded for each of today's
#: migrations: the same files under lower numbers, and nothing for 0004_postings.
_OLD_SQLITE_NAMES = {
    "0001_init": "0001_init",
    "0002_worker": "0002_worker",
    "0003_streams": "0003_streams",
    "0005_envelopes": "0004_envelopes",
    "0006_stream_envelopes": "0005_stream_envelopes",
    "0007_stream_sustained_peaks": "0006_stream_sustained_peaks",
}


def _newer_than_the_old_numbering() -> list[str]:
    """Migrations added since the numbering was shared: pending on such a catalogue."""
    last_old = max(_OLD_SQLITE_NAMES)
    return [m.version for m in list_migrations("sqlite") if m.version > last_old]


def _migrate_as_before(path: Path, old_steps: int) -> None:
    """Apply the first `old_steps` SQLite migrations as the runner did under the old numbering:
    the same SQL, each in its own transaction, recorded under its old name."""
    from service.store.sqlite import split_statements

    old = [m for m in list_migrations("sqlite") if m.version in _OLD_SQLITE_NAMES][:old_steps]
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for migration in old:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version TEXT PRIMARY KEY,"
                " applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"
                ") STRICT"
            )
            for statement in split_statements(migration.sql()):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version) VALUES (?)",
                (_OLD_SQLITE_NAMES[migration.version],),
            )
            conn.execute("COMMIT")
    finally:
        conn.close()


def _schema(path: Path) -> list[tuple[str, str, str | None]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE name <> 'schema_migrations'"
            " ORDER BY type, name"
        ).fetchall()


def _recorded_versions(path: Path) -> dict[str, str]:
    with sqlite3.connect(path) as conn:
        return dict(conn.execute("SELECT version, applied_at FROM schema_migrations").fetchall())


async def test_sqlite_catalogue_under_the_old_numbering_is_ready_and_nothing_is_reapplied(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.sqlite3"
    _migrate_as_before(path, len(_OLD_SQLITE_NAMES))
    before = _schema(path)
    old_rows = _recorded_versions(path)
    assert set(old_rows) == set(_OLD_SQLITE_NAMES.values())

    # Migrations written after the renumbering are all the old catalogue lacks.
    later = [m.version for m in list_migrations("sqlite") if m.version > max(_OLD_SQLITE_NAMES)]
    store = SqliteStore(path, VERSION, migrate_on_start=False)
    await store.open()
    try:
        assert await store.ready() == (not later)  # nothing else pending, before any migrate
        assert await store.migrate() == later
        fp = make_fingerprints(np.random.default_rng(41), 300)
        song, _ = await store.add_song(make_song(fp, "e" * 64, n_frames=500))
        await store.set_song_envelope(song.id, np.ones((500, 4), np.int8), 1)
        assert await store.ready()
        before = _schema(path)
        assert set(hit_rows(await store.lookup(fp.hashes))) == stored_rows(song.id, 500, fp)
    finally:
        await store.close()

    async with opened(f"sqlite:///{path}", migrate_on_start=True) as store:
        assert await store.ready()
        assert await store.migrate() == []
        assert (await store.get_song(song.id)) == song
        assert await store.song_envelopes([EnvelopeRange(song.id, 0, 500)], 1)

    fresh = tmp_path / "fresh.sqlite3"
    async with opened(f"sqlite:///{fresh}", migrate_on_start=True):
        pass
    assert {(t, n) for t, n, _ in before} <= {(t, n) for t, n, _ in _schema(path)}
    assert _schema(path) == _schema(fresh)
    recorded = _recorded_versions(path)
    assert set(recorded) == {m.version for m in list_migrations("sqlite")}
    for today, old in _OLD_SQLITE_NAMES.items():  # renamed, still saying when they ran
        assert recorded[today] == old_rows[old]


@pytest.mark.parametrize("old_steps", [3, 4, 5])
async def test_sqlite_catalogue_part_migrated_under_the_old_numbering_finishes(
    tmp_path: Path, old_steps: int
) -> None:
    """A catalogue the old numbering left part-way gets exactly the migrations it lacks, and
    ends with the schema of a catalogue migrated from scratch."""
    path = tmp_path / "old.sqlite3"
    _migrate_as_before(path, old_steps)
    today = [m.version for m in list_migrations("sqlite")]
    had = set(list(_OLD_SQLITE_NAMES)[:old_steps])
    if old_steps > 3:
        had.add("0004_postings")
    store = SqliteStore(path, VERSION, migrate_on_start=False)
    try:
        assert not await store.ready()
        assert await store.migrate() == [v for v in today if v not in had]
        assert await store.ready()
        assert await store.migrate() == []
    finally:
        await store.close()

    fresh = tmp_path / "fresh.sqlite3"
    store = SqliteStore(fresh, VERSION, migrate_on_start=False)
    try:
        assert await store.migrate() == today
    finally:
        await store.close()
    assert _schema(path) == _schema(fresh)
    assert set(_recorded_versions(path)) == set(today)


async def test_index_built_with_other_parameters_is_refused(store_url: str) -> None:
    async with opened(store_url, "fp1-aaaaaaaaaaaa"):
        pass
    with pytest.raises(IndexMismatch) as raised:
        async with opened(store_url, "fp1-bbbbbbbbbbbb"):
            pass
    assert "fp1-aaaaaaaaaaaa" in raised.value.message
    assert "fp1-bbbbbbbbbbbb" in raised.value.message
    async with opened(store_url, "fp1-aaaaaaaaaaaa") as store:  # the right version still opens
        assert await store.ready()


async def test_replica_started_before_migration_checks_the_version_when_ready(
    fresh_url: str,
) -> None:
    """Replicas that do not migrate start against a bare database and stay not-ready; once
    the schema exists, ready() checks the index version they skipped at open()."""
    replica = create_store(_settings(fresh_url, migrate_on_start=False), "fp1-bbbbbbbbbbbb")
    await replica.open()
    try:
        assert not await replica.ready()
        async with opened(fresh_url, "fp1-aaaaaaaaaaaa", migrate_on_start=True):
            pass
        with pytest.raises(IndexMismatch):
            await replica.ready()
    finally:
        await replica.close()


async def test_unreachable_postgres_is_store_unavailable(pg_url: str) -> None:
    for url in ("postgresql://postgres@127.0.0.1:1/none", pg_url + "_missing"):
        store = create_store(_settings(url), VERSION)
        with pytest.raises(StoreUnavailable):
            await store.open()
        with pytest.raises(StoreUnavailable):
            await store.migrate()
        with pytest.raises(StoreUnavailable):
            await store.ready()


async def test_unopenable_sqlite_is_store_unavailable(tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("not a directory")
    store = SqliteStore(tmp_path / "a_file" / "catalogue.sqlite3", VERSION)
    with pytest.raises(StoreUnavailable):
        await store.open()


async def test_sqlite_parent_folder_is_created(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "catalogue.sqlite3"
    async with opened(f"sqlite:///{path}") as store:
        assert await store.ready()
    assert path.is_file()


async def test_postgres_lookup_is_an_index_only_scan(pg_url: str) -> None:
    rng = np.random.default_rng(8)
    async with opened(pg_url) as store:
        await store.add_song(make_song(make_fingerprints(rng, 2000), "9" * 64))
    conn = await asyncpg.connect(pg_url)
    try:
        # Tiny tables tempt the planner into a scan; forbid that to see which index serves.
        await conn.execute("SET enable_seqscan = off; SET enable_bitmapscan = off")
        plan = "\n".join(
            r[0]
            for r in await conn.fetch(
                "EXPLAIN SELECT f.hash, f.song_id, f.frame FROM fingerprints f"
                " WHERE f.hash = ANY('{1,2,3}'::int4[])"
            )
        )
    finally:
        await conn.close()
    assert "Index Only Scan using fingerprints_hash_idx" in plan, plan


async def test_optimize_after_a_bulk_load_keeps_lookups_on_the_index(store_url: str) -> None:
    async with opened(store_url, VERSION) as store:
        rng = np.random.default_rng(11)
        for i in range(3):
            fingerprints = make_fingerprints(rng, 5000, 0, (1 << 23) - 1)
            await store.add_song(make_song(fingerprints, f"bulk-{i}"))
        await store.optimize()
        probe = rng.integers(0, 1 << 23, 2000).astype(np.int32)
        before = await store.lookup(probe)
        await store.optimize()  # idempotent, and changes no data
        after = await store.lookup(probe)
        assert sorted(before.hashes.tolist()) == sorted(after.hashes.tolist())
    if store_url.startswith("postgresql"):
        conn = await asyncpg.connect(store_url)
        try:
            analyzed = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_user_tables WHERE last_analyze IS NOT NULL"
                " AND relname IN ('fingerprints', 'fp_postings')"
            )
            plan = await conn.fetchval(
                "EXPLAIN (FORMAT JSON) SELECT postings FROM fp_postings"
                " WHERE hash = ANY($1::int4[])",
                list(range(0, 1 << 23, 1 << 17)),  # 64 hashes: a clip-sized probe
            )
            delta = await conn.fetchval("SELECT count(*) FROM fingerprints")
        finally:
            await conn.close()
        assert analyzed == 2
        assert "fp_postings_pkey" in str(plan)
        assert delta == 0  # optimize() compacts


async def test_optimize_outlasts_the_stall_timeout(pg_url: str) -> None:
    """VACUUM of a large catalogue takes longer than an ordinary statement may (the stall
    timeout that turns a hung database into 503s): optimize() must not be cut off by it. Here
    another session's lock keeps VACUUM waiting for three stall timeouts."""
    async with opened(pg_url, VERSION, db_stall_timeout_s=0.3) as store:
        await store.add_song(make_song(make_fingerprints(np.random.default_rng(5), 2000), "v"))
        holder = await asyncpg.connect(pg_url)
        try:
            locked = holder.transaction()
            await locked.start()
            await holder.execute("LOCK TABLE fp_tombstones IN SHARE UPDATE EXCLUSIVE MODE")
            optimizing = asyncio.create_task(store.optimize())
            await asyncio.sleep(0.9)
            assert not optimizing.done()  # VACUUM waits for the lock
            await locked.rollback()
            await asyncio.wait_for(optimizing, 30)
        finally:
            await holder.close()


# --- compaction (PostgreSQL postings + delta; a no-op that must change nothing on SQLite) ------


def _is_pg(url: str) -> bool:
    return url.startswith("postgresql")


def _song_rows(hits) -> list[tuple[int, int, int, int]]:
    return sorted(hit_rows(hits))


async def _all_postings(url: str) -> set[tuple[int, int, int]]:
    """Every (hash, song_id, frame) in fp_postings, decoded straight from the table."""
    from service.store.postings import decode_postings

    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT hash, postings FROM fp_postings")
    finally:
        await conn.close()
    found: set[tuple[int, int, int]] = set()
    for row in rows:
        songs, frames = decode_postings(row["postings"])
        found |= {(row["hash"], int(s), int(f)) for s, f in zip(songs, frames, strict=True)}
    return found


async def test_compaction_keeps_lookups_identical(store_url: str) -> None:
    rng = np.random.default_rng(20)
    # A narrow hash range: hashes shared within and across songs, so postings rows merge.
    fps = [make_fingerprints(rng, 4000, -2000, 2000) for _ in range(4)]
    probe = np.concatenate([rng.integers(-2500, 2500, 3000).astype(np.int32), fps[0].hashes])
    async with opened(store_url) as store:
        songs = [
            (await store.add_song(make_song(fp, f"compact-{i}", n_frames=6000 + i)))[0]
            for i, fp in enumerate(fps[:3])
        ]
        expected = set().union(
            *(
                stored_rows(s.id, 6000 + i, fp)
                for i, (s, fp) in enumerate(zip(songs, fps, strict=False))
            )
        )
        wanted = set(probe.tolist())
        in_delta = _song_rows(await store.lookup(probe))
        assert set(in_delta) == {r for r in expected if r[0] in wanted}
        assert len(in_delta) == len(set(in_delta))

        first = await store.compact()
        assert not first.skipped
        assert _song_rows(await store.lookup(probe)) == in_delta
        if _is_pg(store_url):
            assert first.fingerprints == sum(s.fingerprint_count for s in songs)
            assert await count_rows(store_url, "SELECT count(*) FROM fingerprints") == 0

        # A song added after compaction sits in the delta next to the others' postings.
        last, _ = await store.add_song(make_song(fps[3], "compact-3", n_frames=6003))
        expected |= stored_rows(last.id, 6003, fps[3])
        mixed = _song_rows(await store.lookup(probe))
        assert set(mixed) == {r for r in expected if r[0] in wanted}
        assert len(mixed) == len(set(mixed))

        await store.compact()
        assert _song_rows(await store.lookup(probe)) == mixed
        assert (await store.compact()).fingerprints == 0  # nothing left to move
        assert _song_rows(await store.lookup(probe)) == mixed
        everything = await store.lookup(np.concatenate([fp.hashes for fp in fps]))
        assert set(hit_rows(everything)) == expected
        assert len(everything) == len(expected)
    if _is_pg(store_url):
        assert await _all_postings(store_url) == {r[:3] for r in expected}


async def test_delete_before_and_after_compaction(store_url: str) -> None:
    rng = np.random.default_rng(21)
    fp_keep, fp_old, fp_new = (make_fingerprints(rng, 3000, -800, 800) for _ in range(3))
    probe = np.arange(-800, 801, dtype=np.int32)
    async with opened(store_url) as store:
        keep, _ = await store.add_song(make_song(fp_keep, "k" * 64, "Keep"))
        old, _ = await store.add_song(make_song(fp_old, "o" * 64, "Compacted, then deleted"))
        await store.compact()
        new, _ = await store.add_song(make_song(fp_new, "n" * 64, "Deleted from the delta"))

        assert await store.delete_song(old.id)
        assert await store.delete_song(new.id)
        expected = stored_rows(keep.id, 6000, fp_keep)
        assert set(hit_rows(await store.lookup(probe))) == expected
        if _is_pg(store_url):
            # Only the compacted song needs a tombstone; the delta song's rows are gone.
            tombstones = await count_rows(store_url, "SELECT count(*) FROM fp_tombstones")
            assert tombstones == 1

        result = await store.compact(purge=True)
        assert set(hit_rows(await store.lookup(probe))) == expected
        assert len(await store.lookup(probe)) == len(expected)
        if _is_pg(store_url):
            assert result.purged_songs == 1
            assert await count_rows(store_url, "SELECT count(*) FROM fp_tombstones") == 0
            assert await _all_postings(store_url) == {r[:3] for r in expected}

        # The deleted audio can come back, as a new song found again.
        back, created = await store.add_song(make_song(fp_old, "o" * 64, "Back"))
        assert created and back.id not in (old.id, new.id)
        await store.compact(purge=True)
        expected |= stored_rows(back.id, 6000, fp_old)
        assert set(hit_rows(await store.lookup(probe))) == expected
        stats = await store.stats()
        assert (stats.songs, stats.fingerprints) == (2, len(expected))


async def test_adds_deletes_and_lookups_during_compaction(store_url: str) -> None:
    rng = np.random.default_rng(22)
    fps = [make_fingerprints(rng, 40_000, 0, 200_000) for _ in range(10)]
    probe = rng.integers(0, 200_000, 5000).astype(np.int32)
    wanted = set(probe.tolist())
    async with opened(store_url) as store:
        first = [
            (await store.add_song(make_song(fp, f"early-{i}")))[0] for i, fp in enumerate(fps[:6])
        ]
        doomed = first[0]

        async def add_late(i: int):
            return (await store.add_song(make_song(fps[i], f"late-{i}")))[0]

        async def lookups() -> list[set[tuple[int, int, int, int]]]:
            seen = []
            for _ in range(5):
                seen.append(set(hit_rows(await store.lookup(probe))))
                await asyncio.sleep(0)
            return seen

        results = await asyncio.gather(
            store.compact(),
            add_late(6),
            store.delete_song(doomed.id),
            add_late(7),
            lookups(),
            store.compact(),
            add_late(8),
            add_late(9),
        )
        late = [results[1], results[3], results[6], results[7]]
        survivors = [(s, fps[i + 1]) for i, s in enumerate(first[1:])] + [
            (s, fps[6 + i]) for i, s in enumerate(late)
        ]
        expected = set().union(*(stored_rows(s.id, 6000, fp) for s, fp in survivors))
        early_rows = set().union(*(stored_rows(s.id, 6000, fp) for s, fp in survivors[:5]))
        # Every lookup during the compactions saw each surviving early song's rows exactly.
        for seen in results[4]:
            assert {r for r in early_rows if r[0] in wanted} <= seen
            assert seen <= {r for r in expected if r[0] in wanted} | stored_rows(
                doomed.id, 6000, fps[0]
            )

        for _ in range(2):
            got = hit_rows(await store.lookup(probe))
            assert set(got) == {r for r in expected if r[0] in wanted}
            assert len(got) == len(set(got))
            await store.compact(purge=True)
        stats = await store.stats()
        assert (stats.songs, stats.fingerprints) == (9, len(expected))
    if _is_pg(store_url):
        assert await _all_postings(store_url) == {r[:3] for r in expected}
        assert await count_rows(store_url, "SELECT count(*) FROM fingerprints") == 0


async def test_background_compaction_once_the_delta_grows(pg_url: str) -> None:
    rng = np.random.default_rng(23)
    fps = [make_fingerprints(rng, 3000, 0, 50_000) for _ in range(4)]
    async with opened(pg_url, compact_delta_rows=5000) as store:
        songs = [(await store.add_song(make_song(fp, f"bg-{i}")))[0] for i, fp in enumerate(fps)]
        expected = set().union(
            *(stored_rows(s.id, 6000, fp) for s, fp in zip(songs, fps, strict=True))
        )
        for _ in range(200):  # the compaction runs in the background: give it 10 s
            if await count_rows(pg_url, "SELECT count(*) FROM fp_postings") > 0:
                break
            await asyncio.sleep(0.05)
        assert await count_rows(pg_url, "SELECT count(*) FROM fp_postings") > 0
        assert set(hit_rows(await store.lookup(np.arange(50_001, dtype=np.int32)))) == expected
    # Compacted in the background, never during add_song: the threshold was crossed twice
    # (after songs 2 and 4), and whatever the last one left is still found.
    assert await _all_postings(pg_url) | {(h, s, f) for h, s, f in await _delta_rows(pg_url)} == {
        r[:3] for r in expected
    }


async def _delta_rows(url: str) -> set[tuple[int, int, int]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT hash, song_id, frame FROM fingerprints")
    finally:
        await conn.close()
    return {(r["hash"], r["song_id"], r["frame"]) for r in rows}


async def test_migration_converts_a_populated_database(pg_empty_url: str, tmp_path: Path) -> None:
    """A catalogue built before the postings layout (0001 + 0002) keeps every song, found
    exactly as before, once 0004 has moved its rows into postings."""
    from service.store.postgres import PostgresStore, encode_fingerprint_copy

    old_dir = tmp_path / "migrations" / "postgres"
    old_dir.mkdir(parents=True)
    for migration in list_migrations("postgres"):
        if migration.version[:4] in ("0001", "0002"):
            (old_dir / migration.path.name).write_text(migration.sql())
    assert await PostgresStore(pg_empty_url, VERSION, migrations_dir=old_dir.parent).migrate() == [
        "0001_init",
        "0002_worker",
    ]

    rng = np.random.default_rng(24)
    fps = [make_fingerprints(rng, 5000, -3000, 3000) for _ in range(3)]
    conn = await asyncpg.connect(pg_empty_url)
    try:
        ids = []
        for i, fp in enumerate(fps):
            song_id = await conn.fetchval(
                "INSERT INTO songs (title, duration_s, n_frames, content_sha256,"
                " fingerprint_count) VALUES ($1, 192.0, $2, $3, $4) RETURNING id",
                f"Old {i}",
                6000 + i,
                f"old-{i}",
                len(fp),
            )
            await conn.copy_to_table(
                "fingerprints",
                source=memoryview(encode_fingerprint_copy(song_id, fp.hashes, fp.offsets)),
                columns=["hash", "song_id", "frame"],
                format="binary",
            )
            ids.append(song_id)
        # A row of no song (never returned by lookups) must not become a posting.
        await conn.execute("INSERT INTO fingerprints VALUES (7, 999, 1)")
        await conn.execute(
            "INSERT INTO index_meta (key, value) VALUES ('fingerprint_version', $1)", VERSION
        )
    finally:
        await conn.close()
    expected = set().union(
        *(
            stored_rows(song_id, 6000 + i, fp)
            for i, (song_id, fp) in enumerate(zip(ids, fps, strict=True))
        )
    )

    async with opened(pg_empty_url) as store:  # applies every later migration
        assert await store.ready()
        probe = np.arange(-3000, 3001, dtype=np.int32)
        got = hit_rows(await store.lookup(probe))
        assert set(got) == expected and len(got) == len(expected)
        assert await count_rows(pg_empty_url, "SELECT count(*) FROM fingerprints") == 0
        assert await _all_postings(pg_empty_url) == {r[:3] for r in expected}

        assert await store.delete_song(ids[1])
        expected -= stored_rows(ids[1], 6001, fps[1])
        assert set(hit_rows(await store.lookup(probe))) == expected
        await store.compact(purge=True)
        assert set(hit_rows(await store.lookup(probe))) == expected
        assert (await store.stats()).songs == 2


async def test_song_envelopes_ranges_formats_and_deletion(store_url: str) -> None:
    """A ranged read returns exactly the stored frames asked for (fewer past the song's end),
    only for the format asked, and the envelope goes with its song."""
    rng = np.random.default_rng(11)
    envelope = rng.integers(-127, 128, (500, 24)).astype(np.int8)
    async with opened(store_url) as store:
        song, _ = await store.add_song(
            NewSong(
                meta=SongMeta(title="Enveloped"),
                duration_s=16.0,
                n_frames=500,
                content_sha256="e" * 64,
                fingerprints=make_fingerprints(rng, 100),
                envelope=envelope,
                envelope_format=1,
            )
        )
        bare, _ = await store.add_song(make_song(make_fingerprints(rng, 100), "f" * 64, "Bare"))
        got = await store.song_envelopes(
            [EnvelopeRange(song.id, 40, 140), EnvelopeRange(bare.id, 0, 50)], 1
        )
        assert set(got) == {song.id}
        assert got[song.id].first == 40
        np.testing.assert_array_equal(got[song.id].values, envelope[40:140])

        tail = await store.song_envelopes([EnvelopeRange(song.id, 450, 900)], 1)
        np.testing.assert_array_equal(tail[song.id].values, envelope[450:])
        assert await store.song_envelopes([EnvelopeRange(song.id, 0, 10)], 2) == {}

        assert await store.delete_song(song.id)
        assert await store.song_envelopes([EnvelopeRange(song.id, 0, 10)], 1) == {}
    assert await count_rows(store_url, "SELECT count(*) FROM song_envelopes") == 0


async def test_a_song_without_envelopes_gets_them_once(store_url: str) -> None:
    """Songs indexed before envelopes existed get them later; a song's envelopes of the same
    format are never replaced, another format's are; a deleted song gets none."""
    rng = np.random.default_rng(12)
    first = rng.integers(-127, 128, (300, 24)).astype(np.int8)
    second = rng.integers(-127, 128, (300, 24)).astype(np.int8)
    async with opened(store_url) as store:
        song, _ = await store.add_song(make_song(make_fingerprints(rng, 100), "a" * 64, "Old"))
        whole = [EnvelopeRange(song.id, 0, 300)]
        assert await store.song_envelopes(whole, 1) == {}

        await store.set_song_envelope(song.id, first, 1)
        await store.set_song_envelope(song.id, second, 1)
        np.testing.assert_array_equal((await store.song_envelopes(whole, 1))[song.id].values, first)

        await store.set_song_envelope(song.id, second, 2)
        assert await store.song_envelopes(whole, 1) == {}
        np.testing.assert_array_equal(
            (await store.song_envelopes(whole, 2))[song.id].values, second
        )

        assert await store.delete_song(song.id)
        await store.set_song_envelope(song.id, first, 1)
    assert await count_rows(store_url, "SELECT count(*) FROM song_envelopes") == 0
