"""Catalogue routes: index, list, read, edit and delete songs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Response, UploadFile, status

from service.api.deps import FingerprintParamsDep, PoolDep, SettingsDep, StoreDep
from service.api.openapi import GUARDED, UPLOAD, error_responses
from service.api.params import Offset, SongId, WholeNumber
from service.api.uploads import saved_upload
from service.core.index import IndexOptions, index_path
from service.errors import NotFound
from service.schemas import SongIndexedOut, SongOut, SongPageOut, SongPatch
from service.store import SongMeta, reject_nul

router = APIRouter(prefix="/songs", tags=["songs"])

OptionalField = Annotated[str | None, Form(max_length=500)]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=SongIndexedOut,
    responses={
        200: {
            "model": SongIndexedOut,
            "description": "The audio was already indexed, or is the same recording as a stored "
            "song (`duplicate_of`).",
        },
        **error_responses(*UPLOAD, "no_fingerprints", *GUARDED),
    },
)
async def add_song(
    response: Response,
    store: StoreDep,
    pool: PoolDep,
    settings: SettingsDep,
    fp_params: FingerprintParamsDep,
    file: Annotated[UploadFile, File(description="Audio or video file holding the song.")],
    title: OptionalField = None,
    artist: OptionalField = None,
    album: OptionalField = None,
    isrc: Annotated[str | None, Form(max_length=64)] = None,
    external_id: OptionalField = None,
    allow_duplicate: Annotated[
        bool,
        Query(
            description="Index the file even when it is the same recording as a stored song "
            "(by default that song is answered, with `duplicate_of`)."
        ),
    ] = False,
) -> SongIndexedOut:
    """Index a song. Title and artist default to the file's tags, then its name. Audio that
    is the same recording as a stored song (re-encoded, another container or sample rate,
    quieter, silence trimmed) answers 200 with that song, `created: false` and
    `duplicate_of`; a radio edit, an extended mix or a live version is a song of its own."""
    reject_nul(title, artist, album, isrc, external_id)  # before the upload is analysed
    meta = SongMeta(
        title=title or "", artist=artist, album=album, isrc=isrc, external_id=external_id
    )
    async with saved_upload(file, settings.upload_max_bytes) as path:
        options = IndexOptions(meta, file.filename, allow_duplicate=allow_duplicate)
        indexed = await index_path(
            store, pool, path, options, params=fp_params, max_audio_s=settings.max_index_audio_s
        )
    if not indexed.created:
        response.status_code = status.HTTP_200_OK
    overlap = indexed.duplicate
    return SongIndexedOut(
        **SongOut.of(indexed.song).model_dump(),
        created=indexed.created,
        duplicate_of=None if overlap is None else overlap.song_id,
        duplicate_coverage=None
        if overlap is None
        else round(min(overlap.new_coverage, overlap.stored_coverage), 3),
    )


@router.get("", response_model=SongPageOut, responses=error_responses("validation_error", *GUARDED))
async def list_songs(
    store: StoreDep,
    q: Annotated[str | None, Query(max_length=200, description="Text filter")] = None,
    limit: Annotated[int, WholeNumber, Query(ge=1, le=1000)] = 50,
    offset: Offset = 0,
) -> SongPageOut:
    """Songs in the order they were indexed, optionally filtered by text in any field."""
    return SongPageOut.of(await store.list_songs(limit=limit, offset=offset, query=q or None))


@router.get(
    "/{song_id}",
    response_model=SongOut,
    responses=error_responses("not_found", "validation_error", *GUARDED),
)
async def get_song(song_id: SongId, store: StoreDep) -> SongOut:
    """One song of the catalogue."""
    song = await store.get_song(song_id)
    if song is None:
        raise NotFound(f"no song with id {song_id}")
    return SongOut.of(song)


@router.patch(
    "/{song_id}",
    response_model=SongOut,
    responses=error_responses("not_found", "validation_error", *GUARDED),
)
async def update_song(song_id: SongId, patch: SongPatch, store: StoreDep) -> SongOut:
    """Change a song's metadata; its fingerprints stay as they are."""
    song = await store.update_song(song_id, patch.model_dump(exclude_unset=True))
    if song is None:
        raise NotFound(f"no song with id {song_id}")
    return SongOut.of(song)


@router.delete(
    "/{song_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses("not_found", "validation_error", *GUARDED),
)
async def delete_song(song_id: SongId, store: StoreDep) -> Response:
    """Remove a song and its fingerprints: it is found no more."""
    if not await store.delete_song(song_id):
        raise NotFound(f"no song with id {song_id}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
