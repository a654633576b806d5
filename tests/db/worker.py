"""Subprocess body for the multi-process tests: `worker.py init|write URL START_AT [ID N]`."""

from __future__ import annotations

import sys
import time


def main(argv: list[str]) -> int:
    mode, url, start_at = argv[0], argv[1], float(argv[2])
    # Import before waiting so every worker hits the database at the same moment.
    from db import queries
    from db.engine import init_db, make_engine, make_session_factory
    from db.models import EnhancementStatus, RunKind, RunStatus

    if mode == "init":
        time.sleep(max(0.0, start_at - time.time()))
        init_db(url).dispose()
        print("ok")
        return 0
    if mode != "write":
        raise ValueError(f"unknown mode {mode!r}")

    import hashlib

    worker_id, count = argv[3], int(argv[4])
    engine = make_engine(url)
    factory = make_session_factory(engine)
    shared_sha = hashlib.sha256(b"shared").hexdigest()
    time.sleep(max(0.0, start_at - time.time()))
    for i in range(count):
        # One short transaction per step, as the flows do.
        with factory.begin() as session:
            album = queries.get_or_create_album(session, "/albums/shared")
            own_sha = hashlib.sha256(f"{worker_id}-{i}".encode()).hexdigest()
            target = queries.upsert_photo(
                session, album.id, f"{worker_id}/{i}.jpg", sha256=own_sha, size_bytes=i
            )
            ref = queries.upsert_photo(session, album.id, "shared/ref.jpg", sha256=shared_sha)
            queries.add_embedding(session, shared_sha, "fallback:v1", b"\x00" * 16, 4)
            run = queries.start_run(session, RunKind.enhance, album.id, {"i": i}, {"w": worker_id})
        with factory.begin() as session:
            session.add(run)
            queries.record_enhancement(
                session,
                run.id,
                target,
                hashlib.sha256(f"job-{worker_id}-{i}".encode()).hexdigest(),
                status=EnhancementStatus.succeeded,
                model_name="m",
                model_sha256=shared_sha,
                embedder="fallback:v1",
                device="cpu",
                params={},
                timings={"total_s": 0.0},
                output_path=f"/out/{worker_id}/{i}.png",
                output_sha256=own_sha,
                references=[(0, ref.id, shared_sha, 0.5, 0.25)],
            )
            queries.finish_run(session, run, RunStatus.completed, counts={"n": 1})
    engine.dispose()
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
