"""Query functions over a caller-owned Session: they add and flush, callers commit.

One module per subject (photos, runs, enhancements); callers use them through this package
(``from db import queries``; ``queries.upsert_photo(session, ...)``).
"""

from db.queries.copies import CopyPair, album_copies, checked_pairs, record_copy_check
from db.queries.enhancements import (
    ReferenceRow,
    enhancements_for_album,
    enhancements_for_output,
    enhancements_for_run,
    enhancements_for_target,
    latest_succeeded_enhancement,
    output_hashes,
    record_enhancement,
)
from db.queries.photos import (
    PHOTO_FIELDS,
    PhotoVector,
    add_embedding,
    embeddings_for_album,
    get_album,
    get_embedding,
    get_or_create_album,
    mark_gone,
    photo_by_path,
    photos,
    photos_by_rel_path,
    upsert_photo,
)
from db.queries.runs import (RunSummary, annotate_run, finish_run, last_record_at, latest_run, run_history,
                             start_run)

__all__ = [
    "CopyPair",
    "album_copies",
    "checked_pairs",
    "record_copy_check",
    "PHOTO_FIELDS",
    "PhotoVector",
    "ReferenceRow",
    "RunSummary",
    "add_embedding",
    "embeddings_for_album",
    "enhancements_for_album",
    "enhancements_for_output",
    "enhancements_for_run",
    "enhancements_for_target",
    "annotate_run",
    "finish_run",
    "last_record_at",
    "latest_run",
    "get_album",
    "get_embedding",
    "get_or_create_album",
    "latest_succeeded_enhancement",
    "mark_gone",
    "photo_by_path",
    "photos",
    "photos_by_rel_path",
    "record_enhancement",
    "run_history",
    "start_run",
    "upsert_photo",
]
