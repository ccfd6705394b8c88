"""Identification route."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Query, UploadFile

from service.api.deps import FingerprintParamsDep, MatchParamsDep, PoolDep, SettingsDep, StoreDep
from service.api.openapi import GUARDED, UPLOAD, error_responses
from service.api.uploads import saved_upload
from service.core.identify.identify import identify_file
from service.schemas import IdentifyOut

router = APIRouter(tags=["identify"])


@router.post("/identify", response_model=IdentifyOut, responses=error_responses(*UPLOAD, *GUARDED))
async def identify(
    store: StoreDep,
    pool: PoolDep,
    settings: SettingsDep,
    match_params: MatchParamsDep,
    fp_params: FingerprintParamsDep,
    file: Annotated[UploadFile, File(description="Audio or video clip to identify.")],
    timeline: Annotated[
        bool, Query(description="Also list every song found with its start and end.")
    ] = False,
) -> IdentifyOut:
    """Which catalogue songs play in this clip, where, and how sure we are (best first)."""
    async with saved_upload(file, settings.upload_max_bytes) as path:
        result = await identify_file(
            store,
            pool,
            path,
            match_params,
            fp_params,
            timeline=timeline,
            max_audio_s=settings.max_identify_audio_s,
        )
    return IdentifyOut.of(result)
