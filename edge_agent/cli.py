"""``edge-agent`` command line (``python agent.py`` is the same)."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from pathlib import Path

import click

from . import __version__
from .assets import AssetError, ensure_asset, export_model, load_manifest
from .config import AgentConfig, CameraConfig, ConfigError, dump_config, load_config
from .detect import DetectorError

log = logging.getLogger("edge_agent")

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "0")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


class FriendlyGroup(click.Group):
    """Known failures end with one clear line and exit status 2, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (ConfigError, AssetError, DetectorError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=FriendlyGroup)
@click.version_option(__version__, prog_name="edge-agent")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """Edge smart-store agent: count people on the store box, keep the counts in
    SQLite, sync summaries to headquarters over MQTT."""
    _setup_logging(verbose)


def _run_agent(config: AgentConfig, duration: float | None, announce: str | None = None,
               config_path: Path | None = None) -> None:
    from .ops.logs import configure_logging
    from .runtime import Agent

    configure_logging(config.logging, verbose=logging.getLogger().level == logging.DEBUG)
    agent = Agent(config, config_path=config_path)
    signal.signal(signal.SIGTERM, lambda *_: agent.stop())
    signal.signal(signal.SIGINT, lambda *_: agent.stop())
    agent.start()
    if agent.dashboard is not None:
        click.echo(f"dashboard: {agent.dashboard.url}", err=False)
    if announce:
        click.echo(announce)
    sys.stdout.flush()
    try:
        agent.run(duration=duration)
    finally:
        agent.shutdown()


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="YAML configuration file.")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds (default: run until stopped).")
def run(config_path: Path, duration: float | None) -> None:
    """Run the agent with a configuration file."""
    _run_agent(load_config(config_path), duration, config_path=config_path)


def demo_config(assets_dir: Path | None = None, **overrides) -> AgentConfig:
    """The built-in demo: the sample clip looped as a camera, two counting lines."""
    base = load_config(**({"assets_dir": assets_dir} if assets_dir else {}))
    video = ensure_asset("vtest.avi", base.assets_dir)
    camera = CameraConfig(
        id="square",
        source=str(video),
        loop=True,
        lines=[
            {"id": "north-south", "points": [[0.5, 0.05], [0.5, 0.95]], "in_side": "right"},
            {"id": "east-west", "points": [[0.02, 0.55], [0.98, 0.55]], "in_side": "right"},
        ],
        zones=[{"id": "centre", "polygon": [[0.3, 0.3], [0.7, 0.3], [0.7, 0.8], [0.3, 0.8]]}],
    )
    data = base.model_dump()
    data["cameras"] = [camera.model_dump()]
    data.update(overrides)
    return AgentConfig(**data)


@main.command()
@click.option("--assets-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the model and the clip are (default ~/.cache/edge-agent; missing files are fetched).")
@click.option("--port", type=int, default=8080, show_default=True, help="Dashboard port on 127.0.0.1 (0: any free).")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
def demo(assets_dir: Path | None, port: int, duration: float | None) -> None:
    """Run the agent on the sample clip with a local SQLite file and dashboard."""
    from .mosquitto import Mosquitto, free_port, port_open

    broker = None
    config = demo_config(assets_dir)
    mqtt = config.mqtt.model_dump()
    if not port_open(mqtt["host"], mqtt["port"]):
        try:
            broker = Mosquitto().start()
            mqtt["port"] = broker.port
            click.echo(f"started a private mosquitto on 127.0.0.1:{broker.port}")
        except (FileNotFoundError, RuntimeError, TimeoutError) as exc:
            click.echo(f"no MQTT broker ({exc}); counting continues and the uplink catches up later", err=True)
    if port and port_open("127.0.0.1", port):
        port = free_port()
    config = demo_config(assets_dir, mqtt=mqtt, dashboard={"host": "127.0.0.1", "port": port})
    click.echo(f"database: {config.storage.path}")
    # The Setup page saves lines and zones into this file.
    config_file = Path(config.storage.path).expanduser().parent / "demo.yaml"
    config_file.parent.mkdir(parents=True, exist_ok=True)
    if config_file.exists():  # keep lines and zones drawn in an earlier demo run
        try:
            config = config.model_copy(update={"cameras": load_config(config_file).cameras})
        except ConfigError:
            pass
    config_file.write_text(dump_config(config), encoding="utf-8")
    from .dashboard.cli import ensure_demo_account

    password = ensure_demo_account(config)
    login = f"dashboard login: admin / {password}" if password else "dashboard login: your existing account"
    try:
        _run_agent(config, duration, announce=f"{login}\npress Ctrl+C to stop", config_path=config_file)
    finally:
        if broker is not None:
            broker.stop()


def _parse_line(text: str) -> list[tuple[float, float]]:
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"{text!r}: write four numbers X1,Y1,X2,Y2 in 0-1 image coordinates") from None
    if len(values) != 4:
        raise click.BadParameter(f"{text!r}: a line is X1,Y1,X2,Y2 (four numbers), got {len(values)}")
    return [(values[0], values[1]), (values[2], values[3])]


@main.command()
@click.argument("video", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--line", "line_text", required=True, help="Counting line X1,Y1,X2,Y2 (0-1 coordinates).")
@click.option("--in-side", type=click.Choice(["left", "right"]), default="right", show_default=True,
              help="Side of the line (looking from the first point to the second on the picture) that is 'in'.")
@click.option("--model", default=None, help="Model file or manifest name (default: the configured model).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Take detector and tracker settings from this configuration.")
@click.option("--max-frames", type=int, default=None, help="Stop after this many frames.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def count(video: Path, line_text: str, in_side: str, model: str | None, config_path: Path | None,
          max_frames: int | None, as_json: bool) -> None:
    """Count people crossing a line in a recorded video (every frame, offline)."""
    from .detect import load_detector
    from .offline import count_video

    config = load_config(config_path)
    points = _parse_line(line_text)
    try:
        camera = CameraConfig(id="video", source=str(video), lines=[{"id": "line", "points": points, "in_side": in_side}])
    except Exception as exc:
        raise click.BadParameter(str(exc), param_hint="--line") from None
    model_path = ensure_asset(model or config.detector.model, config.assets_dir)
    detector = load_detector(Path(model_path), config.detector)
    result = count_video(camera, detector, config.tracker, max_frames=max_frames, settings=config.analytics)
    counts = result.counts["line"]
    output = {"in": counts["in"], "out": counts["out"], "frames": result.frames, "fps": round(result.fps, 1)}
    if as_json:
        click.echo(json.dumps(output))
    else:
        click.echo(f"in {output['in']}  out {output['out']}  ({output['frames']} frames, {output['fps']} frames/s, "
                   f"{detector.backend})")


@main.group("config")
def config_group() -> None:
    """Check or print a configuration."""


@config_group.command("validate")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def config_validate(path: Path) -> None:
    """Exit 0 if PATH is a valid configuration, else name each wrong field and the fix."""
    config = load_config(path)
    problems = []
    for camera in config.cameras:
        if camera.is_file and not Path(str(camera.source)).exists():
            problems.append(f"cameras ({camera.id!r}).source: file {camera.source} does not exist")
    if problems:
        raise ConfigError("the configuration is not valid:\n" + "\n".join(f"  - {p}" for p in problems))
    click.echo(f"{path}: valid ({len(config.cameras)} cameras, "
               f"{sum(len(c.lines) for c in config.cameras)} lines)")


@config_group.command("show")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path), required=False)
def config_show(path: Path | None) -> None:
    """Print the effective configuration (file + environment + defaults) as YAML."""
    click.echo(dump_config(load_config(path)), nl=False)


@main.group("models")
def models_group() -> None:
    """Model files: list the manifest, fetch, export for this box."""


@models_group.command("list")
def models_list() -> None:
    for name, asset in load_manifest().items():
        click.echo(f"{name:22} {asset.kind:6} {asset.sha256 or '-':64}  {asset.url or '(installer / ../shared)'}")


@models_group.command("fetch")
@click.argument("name")
@click.option("--assets-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
def models_fetch(name: str, assets_dir: Path | None) -> None:
    """Make NAME present and verified in the assets directory."""
    directory = assets_dir or load_config().assets_dir
    click.echo(ensure_asset(name, directory))


@models_group.command("export")
@click.argument("model")
@click.option("--format", "fmt", type=click.Choice(["openvino", "onnx", "ncnn", "engine", "torchscript", "tflite", "pt"]),
              required=True, help="openvino: Intel/AMD x86 boxes; ncnn: Raspberry Pi / ARM; engine: Jetson (TensorRT, "
                                  "run it on the Jetson itself); pt: PyTorch weights rebuilt from an Ultralytics ONNX.")
@click.option("--imgsz", type=int, default=640, show_default=True)
@click.option("--dynamic/--static", default=None,
              help="Free input shapes (default for openvino and onnx: each camera at its own size, cameras batched).")
@click.option("--half", is_flag=True, help="FP16 weights (TensorRT, OpenVINO).")
@click.option("--batch", type=int, default=1, show_default=True, help="Largest batch (static exports, TensorRT).")
@click.option("--assets-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
def models_export(model: str, fmt: str, imgsz: int, dynamic: bool | None, half: bool, batch: int,
                  assets_dir: Path | None) -> None:
    """Convert MODEL (a .pt, or an Ultralytics .onnx export) for this box with Ultralytics' exporter.

    The result lands beside MODEL (e.g. yolov8n_fp32_openvino_model/ in the assets directory); name it as
    detector.model in the configuration.
    """
    directory = assets_dir or load_config().assets_dir
    source = ensure_asset(model, directory)
    click.echo(export_model(Path(source), fmt, imgsz=imgsz, dynamic=dynamic, half=half, batch=batch))


# Command groups that live in their own modules.
from .export import export_command  # noqa: E402
from .benchmark import bench_command  # noqa: E402
from .hq.cli import hq  # noqa: E402
from .synthetic import simulate_command  # noqa: E402

main.add_command(hq)
main.add_command(export_command)
main.add_command(simulate_command)
from .sensors.cli import sensors  # noqa: E402

main.add_command(sensors)
from .dashboard.cli import dashboard  # noqa: E402

main.add_command(dashboard)
from .evaluation.cli import eval_command  # noqa: E402

main.add_command(eval_command)
from .ops.doctor import doctor  # noqa: E402

main.add_command(doctor)
from .fleet import fleet  # noqa: E402

main.add_command(fleet)
main.add_command(bench_command)

if __name__ == "__main__":
    main()

