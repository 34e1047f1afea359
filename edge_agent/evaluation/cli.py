"""``edge-agent eval``: count accuracy and tracking metrics on ground truth."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from ..config import LineConfig, TrackerConfig, load_config

TRACKER_KINDS = ("botsort", "bytetrack", "ultralytics-bytetrack", "ultralytics-botsort")


def _parse_line(text: str) -> LineConfig:
    """``ID=X1,Y1,X2,Y2`` or ``ID=X1,Y1,X2,Y2:left``."""
    name, sep, rest = text.partition("=")
    if not sep:
        raise click.BadParameter(f"{text!r}: write ID=X1,Y1,X2,Y2 (0-1 coordinates), e.g. door=0,0.5,1,0.5")
    coords, _, side = rest.partition(":")
    try:
        values = [float(v) for v in coords.split(",")]
    except ValueError:
        raise click.BadParameter(f"{text!r}: the coordinates must be numbers") from None
    if len(values) != 4:
        raise click.BadParameter(f"{text!r}: a line is four numbers X1,Y1,X2,Y2, got {len(values)}")
    try:
        return LineConfig(id=name, points=[(values[0], values[1]), (values[2], values[3])], in_side=side or "right")
    except Exception as exc:
        raise click.BadParameter(f"{text!r}: {exc}") from None


@click.command("eval")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path), required=True)
@click.option("--line", "line_texts", multiple=True,
              help="Counting line ID=X1,Y1,X2,Y2[:left] (repeat; default: horizontal, vertical and both "
                   "diagonals through the picture's centre).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Take detector, tracker and analytics settings from this configuration.")
@click.option("--model", default=None, help="Model file or manifest name (default: the configured model).")
@click.option("--tracker", "tracker_kinds", multiple=True, type=click.Choice(TRACKER_KINDS),
              help="Tracker(s) to evaluate (repeat; default: the configured one).")
@click.option("--compare-trackers", is_flag=True, help="Evaluate every tracker on the same detections.")
@click.option("--plain-rules", is_flag=True, help="Count with no rules (every geometric crossing counts).")
@click.option("--count-on-exit", is_flag=True, help="Count every line in count-on-exit mode.")
@click.option("--max-frames", type=int, default=None, help="Only the first N frames of each sequence.")
@click.option("--no-baselines", is_flag=True,
              help="Skip the LineZone/ObjectCounter comparison (keeps torch out of the process).")
@click.option("--details", is_flag=True, help="List every missed and extra crossing with its cause.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def eval_command(paths: tuple[Path, ...], line_texts: tuple[str, ...], config_path: Path | None, model: str | None,
                 tracker_kinds: tuple[str, ...], compare_trackers: bool, plain_rules: bool, count_on_exit: bool,
                 max_frames: int | None,
                 no_baselines: bool, details: bool, as_json: bool) -> None:
    """Measure counting accuracy on MOTChallenge ground truth (PATHS: sequence
    folders with gt/gt.txt and img1/ or a video, or folders of them).

    Prints, per line and direction, the true count (every crossing of a
    ground-truth box's bottom centre over the segment), ours and the accuracy
    1 - |ours - true| / true; MOTA, IDF1, HOTA (Roboflow trackers.eval, TrackEval's
    method) and frames/s; the same tracks counted by supervision's LineZone and
    Ultralytics' ObjectCounter; and the cause of every wrong count.
    """
    from ..assets import ensure_asset
    from ..detect import load_detector
    from . import evaluate_sequence, format_report, peak_rss_mb
    from .mot import SequenceError, find_sequences, load_sequence

    os.environ.setdefault("YOLO_OFFLINE", "1")
    config = load_config(config_path)
    lines = [_parse_line(text) for text in line_texts] or None
    if count_on_exit:
        from . import DEFAULT_LINES

        lines = [line.model_copy(update={"count_on_exit": True}) for line in (lines or DEFAULT_LINES)]
    kinds = TRACKER_KINDS if compare_trackers else (tracker_kinds or (config.tracker.kind,))
    trackers = [TrackerConfig(**{**config.tracker.model_dump(), "kind": kind}) for kind in kinds]
    settings = config.analytics
    if plain_rules:
        from ..analytics.settings import PLAIN_RULES

        settings = settings.model_copy(update={"line_rules": PLAIN_RULES})
    model_path = Path(ensure_asset(model or config.detector.model, config.assets_dir))
    detector = load_detector(model_path, config.detector)
    try:
        sequences = [load_sequence(folder) for path in paths for folder in find_sequences(path)]
    except SequenceError as exc:
        raise click.ClickException(str(exc)) from None
    reports = []
    for sequence in sequences:
        report = evaluate_sequence(sequence, detector, trackers, lines, settings, max_frames=max_frames,
                                   baseline_model=None if no_baselines else model_path, baselines=not no_baselines)
        reports.append(report)
        if not as_json:
            click.echo(format_report(report, details))
            click.echo("")
    if as_json:
        click.echo(json.dumps({"model": model_path.name, "peak_rss_mb": round(peak_rss_mb(), 1),
                               "sequences": [r.to_dict() for r in reports]}, indent=1))
    else:
        click.echo(f"model {model_path.name}; peak RSS of this process {peak_rss_mb():.0f} MB"
                   + ("" if no_baselines else " (baselines load Ultralytics, hence torch)"))
