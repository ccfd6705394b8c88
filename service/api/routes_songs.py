"""Catalogue routes: index, list, read, edit and delete songs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Response, UploadFile, status

from service.api.deps import FingerprintParamsDep, PoolDep, SettingsDep, StoreDep
from service.api.params import Offset, SongId, WholeNumber
from service.api.uploads import saved_upload
from service.core.index import index_file
from service.errors import NotFound
from service.schemas import SongIndexedOut, SongOut, SongPageOut, SongPatch
from service.store import SongMeta, reject_nul

router = APIRouter(prefix="/songs", tags=["songs"])

OptionalField = Annotated[str | None, Form(max_length=500)]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=SongIndexedOut,
    responses={200: {"model": SongIndexedOut, "description": "The audio was already indexed."}},
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
) -> SongIndexedOut:
    """Index a song. Title and artist default to the file's tags, then its name."""
    reject_nul(title, artist, album, isrc, external_id)  # before the upload is analysed
    meta = SongMeta(
        title=title or "", artist=artist, album=album, isrc=isrc, external_id=external_id
    )
    async with saved_upload(file, settings.upload_max_bytes) as path:
        song, created = await index_file(
            store,
            pool,
            path,
            meta,
            file.filename,
            fp_params,
            max_audio_s=settings.max_index_audio_s,
        )
    if not created:
        response.status_code = status.HTTP_200_OK
    return SongIndexedOut(**SongOut.of(song).model_dump(), created=created)


@router.get("", response_model=SongPageOut)
async def list_songs(
    store: StoreDep,
    q: Annotated[str | None, Query(max_length=200, description="Text filter")] = None,
    limit: Annotated[int, WholeNumber, Query(ge=1, le=1000)] = 50,
    offset: Offset = 0,
) -> SongPageOut:
    """Songs in the order they were indexed, optionally filtered by text in any field."""
    return SongPageOut.of(await store.list_songs(limit=limit, offset=offset, query=q or None))


@router.get("/{song_id}", response_model=SongOut)
async def get_song(song_id: SongId, store: StoreDep) -> SongOut:
    song = await store.get_song(song_id)
    if song is None:
        raise NotFound(f"no song with id {song_id}")
    return SongOut.of(song)


@router.patch("/{song_id}", response_model=SongOut)
async def update_song(song_id: SongId, patch: SongPatch, store: StoreDep) -> SongOut:
    song = await store.update_song(song_id, patch.model_dump(exclude_unset=True))
    if song is None:
        raise NotFound(f"no song with id {song_id}")
    return SongOut.of(song)


@router.delete("/{song_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_song(song_id: SongId, store: StoreDep) -> Response:
    if not await store.delete_song(song_id):
        raise NotFound(f"no song with id {song_id}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
