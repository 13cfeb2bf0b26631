"""``evothesis spool …``: the disk spool (``SPOOL_DIR``) from a shell.

``status`` and ``quarantine`` only read the folder: no database, nothing changed, safe
while collectors run. ``replay-quarantine`` stores what quarantined files still hold
through the same ``EventStore.insert`` as the collectors' replayer, on the configured (or
embedded) database.
"""

from __future__ import annotations

import typer

from evothesis.cli.common import command_group, load_settings, print_json, print_table, run_services
from evothesis.config import environment_help
from evothesis.services import Services
from evothesis.storage.events import EventStore
from evothesis.storage.replay import QuarantineReplay, replay_quarantine
from evothesis.storage.spool import QUARANTINE, Quarantine, backlog

__all__ = ["spool_app"]

spool_app = command_group(
    "spool", "Inspect the disk spool and recover what its quarantine still holds."
)


def _quarantine() -> Quarantine:
    return Quarantine(load_settings(quiet=True).spool_folder / QUARANTINE)


@spool_app.command("status", epilog=environment_help())
def status() -> None:
    """Segments waiting for replay (every collector's folder), their bytes, and the
    quarantined files, as JSON."""
    settings = load_settings(quiet=True)
    folder = settings.spool_folder
    waiting = backlog(folder)
    quarantined = Quarantine(folder / QUARANTINE).files()
    print_json(
        {
            "folder": str(folder),
            "max_bytes": settings.spool_max_bytes,
            "folders": waiting.folders,
            "segments": waiting.segments,
            "bytes": waiting.bytes,
            "quarantined_files": len(quarantined),
            "quarantined_bytes": sum(file.size for file in quarantined),
        }
    )


@spool_app.command("quarantine", epilog=environment_help())
def quarantine() -> None:
    """List quarantined files: size, where the bytes came from (spool folder, segment,
    offset), why, and how many records and events can still be recovered from each (and
    how many bytes cannot)."""
    files = _quarantine().files()
    if not files:
        typer.echo("The spool's quarantine is empty.")
        return
    rows = []
    for file in files:
        decoded = file.read()
        rows.append(
            (
                file.path.name,
                str(file.size),
                file.origin,
                file.reason or "unknown",
                str(len(decoded.records)),
                str(sum(len(intact.record.rows) for intact in decoded.records)),
                str(sum(damage.length for damage in decoded.damaged)),
            )
        )
    print_table(("FILE", "BYTES", "ORIGIN", "REASON", "RECORDS", "EVENTS", "DAMAGED"), rows)


@spool_app.command("replay-quarantine", epilog=environment_help())
def replay() -> None:
    """Store the records quarantined files still hold (event ids keep it exactly once),
    remove the files that were nothing but intact records, keep the others; print a JSON
    summary."""

    async def work(services: Services) -> QuarantineReplay:
        folder = Quarantine(services.settings.spool_folder / QUARANTINE)
        store = EventStore(services.pool, dedup_window_s=services.settings.dedup_window_s)
        return await replay_quarantine(folder, store.insert)

    print_json(run_services(work).as_dict())
