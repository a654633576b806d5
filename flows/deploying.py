"""A scheduled album run on a Prefect work pool, for `prefect worker start --pool NAME` on any machine."""

from __future__ import annotations

from pathlib import Path

from flows.enhancing import deployment_options, enhance_album
from flows.settings import Settings

ENTRYPOINT = "flows.enhancing.enhance_album"  # a module path: workers import it from their own install


def deploy_to_pool(album: str | Path, settings: Settings, pool: str, *, name: str | None = None,
                   cron: str | None = None, interval: int | None = None) -> str:
    """Create (or update) the album's deployment on work pool `pool`; returns the deployment's name.

    The flow is named by module path, not shipped as code or an image: each worker machine runs
    the refsr-album it has installed (`pip install 'refsr-album[dask,postgres]'`), so the album and
    the output folder must be at the same path there, and the settings' database must be a server
    (PostgreSQL) every worker reaches.
    """
    from prefect.deployments.runner import EntrypointType

    options = deployment_options(album, settings, name=name, cron=cron, interval=interval)
    try:
        enhance_album.deploy(**options, work_pool_name=pool, entrypoint_type=EntrypointType.MODULE_PATH,
                             build=False, push=False, print_next_steps=False)
    except ValueError as exc:
        if "Could not find work pool" not in str(exc):
            raise
        raise ValueError(f"no work pool {pool!r} on this Prefect server; create it once with "
                         f"`prefect work-pool create {pool} --type process`") from None
    return f"{enhance_album.name}/{options['name']}"
