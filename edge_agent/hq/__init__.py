"""Headquarters side: reference consumers of the stores' MQTT feed.

The HQ tools need PostgreSQL and RabbitMQ clients that a store box does not:
they come with the ``hq`` extra (``pip install 'edge-agent[hq]'``) and are
imported only when an HQ command runs.
"""


def require(module: str):
    """Import an HQ-only dependency, or stop with the install line."""
    import importlib

    import click

    try:
        return importlib.import_module(module)
    except ImportError:
        raise click.ClickException(
            f"this command needs {module.split('.')[0]}, which comes with the hq extra: "
            "pip install 'edge-agent[hq]'") from None
