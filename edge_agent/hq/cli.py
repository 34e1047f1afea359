"""``edge-agent hq …``: tools for headquarters integrators."""

import click


@click.group("hq")
def hq() -> None:
    """Headquarters side of the MQTT feed (reference consumers)."""
