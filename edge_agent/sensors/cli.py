"""``edge-agent sensors …``: check the node registry and rehearse nodes before flashing."""

from __future__ import annotations

import time
from pathlib import Path

import click

from ..config import load_config
from .config import resolve_nodes


@click.group("sensors")
def sensors() -> None:
    """ESPHome sensor nodes: the registry and simulated nodes."""


def _sensors_config(config_path: Path):
    config = load_config(config_path)
    if config.sensors is None:
        raise click.UsageError(f"{config_path} has no sensors: section (see docs/sensors.md)")
    return config


@sensors.command("nodes")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), required=True)
def nodes(config_path: Path) -> None:
    """List registered nodes, where they are and which rollup reports them."""
    config = _sensors_config(config_path)
    root = config.sensors.broker.topic_root
    for node in resolve_nodes(config.sensors, config.cameras).values():
        where = node.door and f"door {node.door}" or f"zone {node.zone}"
        seen = f"camera {node.camera}" + (f" line {node.line}" if node.line else "") if node.camera else "no camera"
        product = f"  product {node.product!r}" if node.product else ""
        state = "" if node.enabled else "  (disabled)"
        click.echo(f"{node.id:24} {node.kind:12} {where:22} {seen:34} rollup {node.source:12} "
                   f"topic {root}/{node.id}/#{product}{state}")


@sensors.command("simulate")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--node", "node_ids", multiple=True, help="Only these node ids (default: every registered node).")
@click.option("--count", type=click.IntRange(1, 1000), default=3, show_default=True,
              help="Events per node (crossings alternate in/out; shelves alternate pick-up/put-back).")
@click.option("--password", envvar="EDGE_AGENT_SENSOR_NODE_PASSWORD", default=None,
              help="The nodes' MQTT password (mqtt_password in secrets.yaml).")
def simulate(config_path: Path, node_ids: tuple[str, ...], count: int, password: str | None) -> None:
    """Publish what real nodes would, to the store broker, as the registered nodes.

    Run it before flashing (a simulated node takes over the real node's MQTT
    client id), then check the agent's health or dashboard.
    """
    from .simulate import NODE_CLASSES

    config = _sensors_config(config_path)
    broker = config.sensors.broker
    registry = resolve_nodes(config.sensors, config.cameras)
    unknown = [n for n in node_ids if n not in registry]
    if unknown:
        raise click.BadParameter(f"not in sensors.nodes: {', '.join(unknown)}", param_hint="--node")
    for node_id in node_ids or list(registry):
        kind = registry[node_id].kind
        node = NODE_CLASSES[kind](node_id, broker.port, host=broker.host, topic_root=broker.topic_root,
                                  password=password)
        try:
            node.connect()
        except (OSError, TimeoutError) as exc:
            raise click.ClickException(f"cannot reach the store broker {broker.host}:{broker.port}: {exc}") from None
        sent = [node.diag(up=1, rssi=-60)]
        for i in range(count):
            if kind == "door_beam":
                sent.append(node.walk("in" if i % 2 == 0 else "out"))
            elif kind == "pir":
                sent.append(node.set_motion(i % 2 == 0))
            else:
                if i == 0:
                    node.place(2000.0)
                sent.append(node.place(2000.0 - node.item_weight * (1 if i % 2 == 0 else 0)))
        sent.append(node.state())
        time.sleep(0.2)
        node.close()
        for payload in sent:
            if payload:
                click.echo(f"{node.base}  {payload}")
