"""``edge-agent eval``: ground-truth counts, metrics, baselines and an accuracy
regression on PETS09-S2L1 (the real annotated footage in ../shared)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edge_agent.cli import main
from edge_agent.config import DetectorConfig, LineConfig, TrackerConfig
from edge_agent.evaluation import DEFAULT_LINES, evaluate_sequence
from edge_agent.evaluation.metrics import tracking_metrics, write_mot
from edge_agent.evaluation.mot import SequenceError, load_sequence, true_crossings
from edge_agent.evaluation.run import PipelineRun, run_baselines

# Measured with the default config (yolov8n_fp32.onnx on OpenVINO, BoT-SORT, default rules)
# on the development machine; see docs/analytics.md. Margins absorb backend/CPU rounding.
SHORT_FRAMES = 200
SHORT_ABS_ERROR, SHORT_MOTA, SHORT_IDF1 = 6, 0.580, 0.671
FULL_ABS_ERROR, FULL_MOTA, FULL_IDF1, FULL_HOTA = 10, 0.762, 0.720, 0.549  # docs/analytics.md


@pytest.fixture(scope="module")
def pets(shared_dir) -> Path:
    return shared_dir / "data" / "eval" / "PETS09-S2L1"


def spec(lines):
    return [(line.id, tuple(line.points[0]), tuple(line.points[1]), line.in_side) for line in lines]


def totals(crossings, line_id):
    return {d: sum(1 for c in crossings if c.line_id == line_id and c.direction == d) for d in ("in", "out")}


def test_ground_truth_counts_match_the_published_figures(pets):
    sequence = load_sequence(pets)
    assert (sequence.length, sequence.fps, sequence.width, sequence.height) == (795, 7.0, 768, 576)
    truth = true_crossings(sequence.gt, sequence.width, sequence.height, spec(DEFAULT_LINES[:2]))
    # ../shared/README.md: vertical 13 one way and 18 the other; horizontal 19 and 13
    assert totals(truth, "vertical") == {"in": 18, "out": 13}
    assert totals(truth, "horizontal") == {"in": 13, "out": 19}


def test_ground_truth_ignores_zero_confidence_boxes_and_counts_every_crossing(tmp_path):
    seq = tmp_path / "SEQ"
    (seq / "gt").mkdir(parents=True)
    rows = [
        # person 1 walks down across y=0.5 and back up: 1 in, 1 out (in = right of left→right = down)
        "1,1,40,10,10,30,1,-1,-1,-1", "2,1,40,40,10,30,1,-1,-1,-1", "3,1,40,10,10,30,1,-1,-1,-1",
        # person 2 crosses only in an ignored (conf 0) box: nothing
        "1,2,70,10,10,30,1,-1,-1,-1", "2,2,70,40,10,30,0,-1,-1,-1",
        # person 3 crosses beside the segment (x > 0.8): nothing
        "1,3,85,10,10,30,1,-1,-1,-1", "2,3,85,40,10,30,1,-1,-1,-1",
    ]
    (seq / "gt" / "gt.txt").write_text("\n".join(rows) + "\n")
    import cv2

    (seq / "img1").mkdir()
    for k in range(1, 4):
        cv2.imwrite(str(seq / "img1" / f"{k:06d}.jpg"), np.zeros((100, 100, 3), np.uint8))
    sequence = load_sequence(seq)
    assert sequence.length == 3 and sequence.images is not None
    line = LineConfig(id="h", points=[(0.0, 0.5), (0.8, 0.5)])
    crossings = true_crossings(sequence.gt, 100, 100, spec([line]))
    assert [(c.gt_id, c.direction, c.frame) for c in crossings] == [(1, "in", 2), (1, "out", 3)]


def test_a_folder_without_ground_truth_is_a_clear_error(tmp_path, assets_dir):
    with pytest.raises(SequenceError, match="gt/gt.txt"):
        load_sequence(tmp_path)
    result = CliRunner().invoke(main, ["eval", str(tmp_path), "--model", str(assets_dir / "yolov8n_fp32.onnx")])
    assert result.exit_code != 0 and "gt/gt.txt" in result.output


def test_metrics_match_trackeval(pets, tmp_path):
    """trackers.eval (what eval prints) against TrackEval itself on perturbed ground truth."""
    trackeval = pytest.importorskip("trackeval")
    gt = load_sequence(pets).gt
    gt = gt[gt[:, 0] <= 150]
    rng = np.random.default_rng(8)
    tracks = gt[:, :6].copy()
    tracks[:, 2:4] += rng.normal(0, 4, (len(tracks), 2))
    tracks = tracks[rng.random(len(tracks)) > 0.1]  # misses
    tracks[(tracks[:, 1] == 9) & (tracks[:, 0] > 80), 1] = 99  # an ID switch
    xyxy = tracks.copy()
    xyxy[:, 4:6] += xyxy[:, 2:4]
    ours = tracking_metrics(gt, xyxy)

    (tmp_path / "gt" / "SEQ" / "gt").mkdir(parents=True)
    (tmp_path / "tr" / "t" / "data").mkdir(parents=True)
    write_mot(tmp_path / "gt" / "SEQ" / "gt" / "gt.txt", gt)
    write_mot(tmp_path / "tr" / "t" / "data" / "SEQ.txt", tracks)
    (tmp_path / "gt" / "SEQ" / "seqinfo.ini").write_text("[Sequence]\nname=SEQ\nseqLength=150\n")
    (tmp_path / "seqmap.txt").write_text("name\nSEQ\n")
    evaluator = trackeval.Evaluator({"USE_PARALLEL": False, "PRINT_RESULTS": False, "PRINT_CONFIG": False,
                                     "OUTPUT_SUMMARY": False, "OUTPUT_DETAILED": False, "PLOT_CURVES": False,
                                     "TIME_PROGRESS": False})
    dataset = trackeval.datasets.MotChallenge2DBox({
        "GT_FOLDER": str(tmp_path / "gt"), "TRACKERS_FOLDER": str(tmp_path / "tr"), "BENCHMARK": "MOT17",
        "SEQMAP_FILE": str(tmp_path / "seqmap.txt"), "SKIP_SPLIT_FOL": True, "PRINT_CONFIG": False})
    results, _ = evaluator.evaluate([dataset], [trackeval.metrics.HOTA(), trackeval.metrics.CLEAR(),
                                                trackeval.metrics.Identity()])
    theirs = results["MotChallenge2DBox"]["t"]["SEQ"]["pedestrian"]
    assert ours.mota == pytest.approx(theirs["CLEAR"]["MOTA"], abs=1e-9)
    assert ours.idf1 == pytest.approx(theirs["Identity"]["IDF1"], abs=1e-9)
    assert ours.hota == pytest.approx(float(theirs["HOTA"]["HOTA"].mean()), abs=1e-9)
    assert ours.id_switches == theirs["CLEAR"]["IDSW"] >= 1


def test_baselines_read_directions_like_ours(pets, model_path):
    """One track walking onto each line's "in" side must be an "in" for every baseline."""
    sequence = load_sequence(pets)
    rows = []
    for frame in range(1, 21):  # a box walking from the top-right corner to the bottom-left one
        t = (frame - 1) / 19
        cx, bottom = (0.9 - 0.8 * t) * sequence.width, (0.1 + 0.8 * t) * sequence.height
        rows.append([frame, 1, cx - 15, bottom - 80, cx + 15, bottom, 0.9])
    run = PipelineRun("synthetic", np.array(rows, float), [], 0.0, 20)
    lines = [LineConfig(id="h", points=[(0, 0.5), (1, 0.5)]), LineConfig(id="v", points=[(0.5, 0), (0.5, 1)]),
             LineConfig(id="v-left", points=[(0.5, 0), (0.5, 1)], in_side="left")]
    counts = run_baselines(sequence, run, lines, model_path)
    for name, by_line in counts.items():
        # down across the horizontal line and leftwards across the vertical one
        assert by_line["h"] == {"in": 1, "out": 0}, name
        assert by_line["v"] == {"in": 1, "out": 0}, name
        assert by_line["v-left"] == {"in": 0, "out": 1}, name


def test_accuracy_regression_on_the_first_200_frames(pets, assets_dir):
    args = ["eval", str(pets), "--model", str(assets_dir / "yolov8n_fp32.onnx"), "--max-frames", str(SHORT_FRAMES),
            "--json", "--no-baselines"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    tracker = report["sequences"][0]["trackers"][0]
    assert tracker["tracker"] == "botsort"
    assert tracker["abs_error"] <= SHORT_ABS_ERROR + 2, tracker["errors"]
    assert tracker["mota"] >= SHORT_MOTA - 0.03 and tracker["idf1"] >= SHORT_IDF1 - 0.05
    assert tracker["frames_per_second"] > 0


def test_eval_without_baselines_keeps_torch_out(pets, assets_dir):
    code = (
        "import sys; from click.testing import CliRunner; from edge_agent.cli import main; "
        f"r = CliRunner().invoke(main, ['eval', {str(pets)!r}, '--model', {str(assets_dir / 'yolov8n_fp32.onnx')!r}, "
        "'--max-frames', '10', '--json', '--no-baselines']); "
        "assert r.exit_code == 0, r.output; print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False"


@pytest.mark.slow
def test_full_sequence_beats_both_baselines(pets, model_path):
    from edge_agent.detect import load_detector

    sequence = load_sequence(pets)
    detector = load_detector(model_path, DetectorConfig())
    report = evaluate_sequence(sequence, detector, [TrackerConfig()], baseline_model=model_path).to_dict()
    tracker = report["trackers"][0]
    assert tracker["abs_error"] <= FULL_ABS_ERROR + 3, tracker["errors"]
    for name in ("supervision LineZone", "Ultralytics ObjectCounter"):
        assert tracker["abs_error"] < tracker["baseline_abs_error"][name], (name, tracker["baseline_abs_error"])
    assert tracker["mota"] >= FULL_MOTA - 0.03
    assert tracker["idf1"] >= FULL_IDF1 - 0.05 and tracker["hota"] >= FULL_HOTA - 0.03
    # Worst documented cell: 13 of 17 (76.5 %). Detector numerics (bf16 in OpenVINO on CPUs that
    # have it) move a borderline detection, i.e. one count (6 % of that cell): the floor allows
    # that one count and no more.
    for line in tracker["lines"].values():
        for cell in line.values():
            assert abs(cell["ours"] - cell["true"]) <= 5, tracker["lines"]
            assert cell["accuracy"] >= 0.70, tracker["lines"]
