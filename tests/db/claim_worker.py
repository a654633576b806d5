"""Subprocess body for the claim and lock tests: `claim_worker.py MODE URL ...` (see each mode)."""

from __future__ import annotations

import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    mode, url = argv[0], argv[1]
    # Imported before any waiting so the workers of one test hit the database together.
    from db import claim_holder
    from db.engine import make_engine, make_session_factory
    from db.locks import advisory_lock
    from db.models import Album

    engine = make_engine(url)
    if mode == "jobs":
        # jobs URL START_AT OWNER KEY... : one pass over the keys; a job "done" is an album row
        # /done/<key>/<owner> written in the same transaction that completes the claim.
        start_at, owner, keys = float(argv[2]), argv[3], argv[4:]
        factory = make_session_factory(engine)
        time.sleep(max(0.0, start_at - time.time()))
        for key in keys:
            with claim_holder.hold(factory, key, owner, lease_s=10.0) as held:
                if held is None:
                    continue
                time.sleep(0.01)  # the "model work": long enough for the others to collide
                with factory.begin() as session:
                    session.add(Album(root=f"/done/{key}/{owner}"))
                    held.complete(session)
                print(f"did {key}", flush=True)
        return 0
    if mode == "hold":
        # hold URL KEY OWNER LEASE_S : claim with a heartbeat, say so, then work until killed.
        key, owner, lease_s = argv[2], argv[3], float(argv[4])
        with claim_holder.hold(engine, key, owner, lease_s=lease_s) as held:
            if held is None:
                print("busy", flush=True)
                return 1
            print(f"claimed {held.claim.attempts}", flush=True)
            time.sleep(3600)
        return 0
    if mode == "lock":
        # lock URL NAME MARKER HOLD_S : hold the advisory lock HOLD_S seconds, then write MARKER
        # just before letting go.
        name, marker, hold_s = argv[2], Path(argv[3]), float(argv[4])
        with advisory_lock(engine, name):
            print("locked", flush=True)
            time.sleep(hold_s)
            marker.write_text("released")
        return 0
    raise ValueError(f"unknown mode {mode!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
