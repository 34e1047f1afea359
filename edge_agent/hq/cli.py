"""``edge-agent hq …``: tools for headquarters integrators."""

import click


@click.group("hq")
def hq() -> None:
    """Headquarters side of the MQTT feed (reference consumers)."""


from .tail import tail_command  # noqa: E402

hq.add_command(tail_command)

# Commands that live in their own modules.
from .ingest import ingest  # noqa: E402

hq.add_command(ingest)
from .report import import_group, report  # noqa: E402

hq.add_command(report)
hq.add_command(import_group)
