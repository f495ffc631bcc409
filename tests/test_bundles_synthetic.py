"""End-to-end runs of the synthetic bundles on tiny generated datasets (train, resume, evaluate, inference)."""

import csv
import json
import os
import re
import subprocess
import sys
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
from _bundle_runs import workflow
from ignite.engine import Events

from monai_embedseg.bundle.datasets import ensure_dataset
from monai_embedseg.bundle.paths import bundle_path
from monai_embedseg.data import CropPoolDataset
from monai_embedseg.data.io import read_tiff

CONFIGS = Path(bundle_path("synthetic_2d")) / "configs"
BUNDLES = sorted(p.name for p in Path(bundle_path("synthetic_2d")).parent.iterdir() if (p / "configs").is_dir())
TINY = {
    "synthetic_2d": {
        "synthetic_kwargs": {"n_train": 4, "n_test": 2, "shape": [64, 64], "seed": 3},
        "num_samples": 2,
        "roi_size": [64, 64],
    },
    "synthetic_3d": {
        "synthetic_kwargs": {
            "n_train": 3,
            "n_test": 2,
            "shape": [12, 48, 48],
            "seed": 3,
            "n_objects": [3, 5],
            "radius": [6, 9],
        },
        "num_samples": 1,
        "roi_size": [12, 48, 48],
    },
}


def run(kind, files, tmp, bundle="synthetic_2d", **overrides):
    return workflow(bundle, kind, files, tmp, **{**TINY[bundle], **overrides})


@pytest.mark.parametrize("bundle", sorted(TINY))
@pytest.mark.parametrize("kind,files", [("train", ["train.json"])])
def test_check_properties(kind, files, bundle, tmp_path):
    kwargs = TINY[bundle]["synthetic_kwargs"]
    ensure_dataset(str(tmp_path / "data"), "nuclei_2d" if bundle.endswith("2d") else "cells_3d", **kwargs)
    wf = run(kind, files, tmp_path, bundle)
    wf.initialize()
    assert wf.check_properties() == []
    # building every object of the workflow writes nothing: no properties file, no TensorBoard events
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("bundle", BUNDLES)
def test_an_untrained_bundles_inference_workflow_passes_monai_property_checks(bundle, tmp_path):
    wf = workflow(bundle, "infer", ["inference.json"], tmp_path)
    wf.initialize()
    assert wf.check_properties() == []
    assert not (tmp_path / "out").exists()
    with pytest.raises(Exception) as info:  # running it says what is missing, in its last line
        wf.run()
    from monai_embedseg.bundle.checks import root_cause

    assert "no trained model" in str(root_cause(info.value)) or "model.pt" in str(root_cause(info.value))


@pytest.mark.parametrize("bundle", sorted(TINY))
def test_train_evaluate_infer_and_resume(bundle, tmp_path):
    out = tmp_path / "out"
    shape = tuple(TINY[bundle]["synthetic_kwargs"]["shape"])
    # 1) train 3 epochs but "kill" it after the first one (terminate = the process died after the checkpoint)
    wf = run("train", ["train.json"], tmp_path, bundle, epochs=3, val_interval=1)
    wf.initialize()
    trainer = wf.parser.get_parsed_content("train#trainer")
    trainer.add_event_handler(Events.EPOCH_COMPLETED(once=1), lambda e: e.terminate())
    wf.run()
    assert (out / "checkpoint_epoch=1.pt").is_file()
    assert (out / "model.pt").is_file()
    assert (out / "dataset_properties.json").is_file()
    # the peak of the training images, which makes an image peaking far above it "mostly empty" for this model
    assert json.loads((out / "dataset_properties.json").read_text())["intensity_peak"] > 1.0
    events = list(out.glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0  # one writer for every TensorBoard handler
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out)).Reload()
    tags = acc.Tags()
    assert {"total", "instance", "variance", "seed", "lr"} <= set(tags["scalars"]), tags["scalars"]
    assert "val_ap50" in tags["scalars"] and "val/prediction" in tags["images"]
    assert {"time_to_accuracy/val_ap50", "step_s_forward", "step_data_fraction"} <= set(tags["scalars"])
    with open(out / "time_to_accuracy.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1"]

    # 2) resume: continues at epoch 2 and runs epochs 2 and 3 only
    wf = run("train", ["train.json"], tmp_path, bundle, epochs=3, val_interval=1, resume=True)
    wf.initialize()
    trainer = wf.parser.get_parsed_content("train#trainer")
    started = []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: started.append(e.state.epoch))
    saver = wf.parser.get_parsed_content("validate#handlers#3")
    first = torch.load(out / "checkpoint_epoch=1.pt", weights_only=True)
    first_best = first["best_model"]["_saved"]
    assert first["training_clock"]["seconds"] > 0  # the training time so far, which a time limit continues from
    clock = wf.parser.get_parsed_content("training_clock")
    assert first_best  # epoch 1 was validated and saved a best model
    restored = []
    trainer.add_event_handler(Events.EPOCH_STARTED(once=2), lambda e: restored.append(saver.state_dict()["_saved"]))
    wf.run()
    assert started == [2, 3]
    assert clock.elapsed() > first["training_clock"]["seconds"]
    # the best-score record came back with the epoch checkpoint: a worse first validation cannot replace model.pt
    assert type(saver).__name__ == "BestModelSaver"
    assert [tuple(x) for x in restored[0]] == [tuple(x) for x in first_best]
    assert isinstance(torch.load(out / "model.pt", weights_only=True), dict)  # a plain state dict, as before
    # the killed run's checkpoint_epoch=1.pt is pruned: the 2 newest epoch checkpoints are kept (keep_checkpoints)
    with open(out / "time_to_accuracy.csv") as f:  # the resumed run's clock continues from the killed run's
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert float(rows[0]["seconds"]) < float(rows[1]["seconds"]) < float(rows[2]["seconds"])
    kept = sorted(p.name for p in out.glob("checkpoint_epoch=*.pt"))
    assert kept == ["checkpoint_epoch=2.pt", "checkpoint_epoch=3.pt"]
    # after training, the thresholds were searched on the validation split and saved beside the model
    tuned = json.loads((out / "thresholds.json").read_text())
    assert 0 < tuned["fg_thresh"] <= tuned["seed_thresh"] < 1 and tuned["min_object_size"] >= 0

    # 3) evaluate on the test split: per-image and summary CSVs
    wf = run("eval", ["train.json", "evaluate.json"], tmp_path, bundle, **{"validate#tta": False})
    wf.initialize()
    assert wf.check_properties() == []
    assert wf.parser.get_parsed_content("seed_thresh") == tuned["seed_thresh"]  # evaluation uses the tuned values
    wf.run()
    with open(out / "ap_summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 9 and all(0.0 <= float(r["AP_dsb_pooled"]) <= 1.0 for r in rows)
    with open(out / "ap_per_image.csv") as f:
        assert len(list(csv.DictReader(f))) == 2

    # 4) inference writes one readable label TIFF per test image, and refuses to overwrite them
    wf = run("infer", ["inference.json"], tmp_path, bundle, tta=False)
    wf.initialize()
    assert wf.check_properties() == []
    wf.run()
    written = sorted((out / "predictions").glob("*_labels.tif"))
    assert len(written) == 2
    for path in written:
        labels = read_tiff(str(path))
        assert labels.shape == shape and labels.dtype == np.uint16
    wf = run("infer", ["inference.json"], tmp_path, bundle, tta=False)
    wf.initialize()
    with pytest.raises(Exception) as info:
        wf.run()
    assert "refusing to overwrite" in "".join(traceback.format_exception(info.value))


def test_multi_gpu_config_runs_under_torchrun_on_cpu(tmp_path):
    configs = f"['{CONFIGS / 'train.json'}','{CONFIGS / 'multi_gpu_train.json'}']"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "monai.bundle",
        "run",
        "training",
        "--config_file",
        configs,
        "--meta_file",
        str(CONFIGS / "metadata.json"),
        "--logging_file",
        str(CONFIGS / "logging.conf"),
        "--dataset_dir",
        str(tmp_path / "data"),
        "--output_dir",
        str(tmp_path / "out"),
        "--epochs",
        "100",
        "--max_minutes",
        "0.1",
        "--val_interval",
        "1",
        "--num_samples",
        "2",
        "--roi_size",
        "[64,64]",
        "--synthetic_kwargs",
        "{'n_train': 4, 'n_test': 2, 'shape': [64, 64], 'seed': 3}",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    # both processes stop at the same iteration (the time limit takes the slower one's clock), so neither waits
    stops = re.findall(r"time limit of 0.1 min reached at epoch (\d+), iteration (\d+)", log)
    assert len(stops) == 2 and stops[0] == stops[1] and int(stops[0][0]) < 100, log[-6000:]
    assert (tmp_path / "out" / "model.pt").is_file()  # the part of an epoch run was validated by the first process
    if int(stops[0][0]) > 1:  # and the first process saved the epochs completed
        assert list((tmp_path / "out").glob("checkpoint_epoch=*.pt"))


@pytest.mark.parametrize("bundle, synthetic", [("dsb2018", "nuclei_2d"), ("bbbc010", "worms_2d")])
def test_fast_profile_trains_on_generated_data(bundle, synthetic, tmp_path):
    """The shipped train_fast.json merged over train.json: one short epoch from the cached crop pool (no DataLoader
    workers), the one-cycle schedule stepped per iteration, the auto precision, then the threshold search on the
    validation split."""
    out = tmp_path / "out"
    kwargs = {"n_train": 4, "n_test": 1, "shape": [96, 96], "seed": 5}
    wf = workflow(
        bundle,
        "train",
        ["train.json", "train_fast.json"],
        tmp_path,
        synthetic=synthetic,
        synthetic_kwargs=kwargs,
        epochs=1,
        samples_per_epoch=24 if bundle == "dsb2018" else 3,  # two steps, the second a partial batch
        refresh_rate=0.5,
        val_interval=1,
        roi_size=[96, 96],
        **(
            {"in_channels": 1, "image_channel_dim": None, "label_key": "label", "label_channel_dim": None}
            if bundle == "bbbc010"
            else {}
        ),
    )
    wf.initialize()
    assert wf.check_properties() == []
    loader = wf.parser.get_parsed_content("train#dataloader")
    assert loader.num_workers == 0 and isinstance(loader.dataset, CropPoolDataset)
    n_train = len(wf.parser.get_parsed_content("datalists")["train"])
    assert loader.dataset.pool_size == 4 * n_train  # 4 crops per training image
    scheduler = wf.parser.get_parsed_content("lr_scheduler")
    assert type(scheduler).__name__ == "TimedOneCycleLR" and scheduler.total_steps == 2
    assert wf.parser.get_parsed_content("runner").precision == "auto"
    wf.run()
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.iteration == scheduler.total_steps  # the schedule ends exactly with training
    assert (out / "model.pt").is_file() and (out / "thresholds.json").is_file()
    assert loader.dataset.crops_cut > loader.dataset.pool_size  # crops were re-cut while training


def test_a_short_run_leaves_a_model_and_a_used_folder_is_refused(tmp_path):
    out = tmp_path / "out"
    # 2 epochs with validation every 10: the final epoch is validated anyway, so model.pt exists
    wf = run("train", ["train.json"], tmp_path, epochs=2, val_interval=10, tune_thresholds=False)
    wf.initialize()
    wf.run()
    assert (out / "model.pt").is_file() and (out / "checkpoint_epoch=2.pt").is_file()
    trained = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    # a fresh run into the same folder would later resume from the wrong run: refused with the way out, and the
    # trained run's files (its dataset_properties.json included) are left exactly as they were
    wf = run("train", ["train.json"], tmp_path, epochs=1, val_interval=1, tune_thresholds=False, spacing=[3.0, 1.0])
    wf.initialize()
    with pytest.raises(Exception) as info:
        wf.run()
    message = "".join(traceback.format_exception(info.value))
    assert "checkpoint_epoch=2.pt" in message and "--resume true" in message and "--overwrite true" in message
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == trained
    # resuming with data or settings that change the model's properties is refused, nothing written either
    wf = run("train", ["train.json"], tmp_path, epochs=3, val_interval=1, tune_thresholds=False, resume=True)
    wf.initialize()
    wf.parser["spacing"] = [3.0, 1.0]
    with pytest.raises(Exception) as info:
        wf.run()
    assert "cannot resume" in "".join(traceback.format_exception(info.value))
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == trained
    # --overwrite true: the old epoch checkpoints go, the new run writes its own
    wf = run("train", ["train.json"], tmp_path, epochs=1, val_interval=1, tune_thresholds=False, overwrite=True)
    wf.initialize()
    wf.run()
    assert sorted(p.name for p in out.glob("checkpoint_epoch=*.pt")) == ["checkpoint_epoch=1.pt"]


def test_fast_profile_with_a_time_limit_stops_on_time_with_its_schedule_run_through(tmp_path):
    """--max_minutes: the fast profile's one-cycle schedule is fitted into the minutes given, training stops when they
    are spent (long before its epochs), the part of an epoch run is validated and the threshold search follows."""
    out = tmp_path / "out"
    wf = workflow(
        "dsb2018",
        "train",
        ["train.json", "train_fast.json"],
        tmp_path,
        synthetic="nuclei_2d",
        synthetic_kwargs={"n_train": 4, "n_test": 1, "shape": [96, 96], "seed": 5},
        epochs=200,
        max_minutes=0.05,
        samples_per_epoch=48,
        batch_size=4,
        val_interval=50,
        roi_size=[96, 96],
    )
    wf.initialize()
    wf.run()
    trainer = wf.parser.get_parsed_content("train#trainer")
    clock = wf.parser.get_parsed_content("training_clock")
    scheduler = wf.parser.get_parsed_content("lr_scheduler")
    assert trainer.state.epoch < 200 and clock.fraction() == 1.0
    assert 3.0 <= clock.elapsed() < 3.0 + 30  # stopped at the first iteration past 3 s (one iteration and a validation)
    assert scheduler.schedule_step() == scheduler.total_steps - 1  # the cycle ran through to its final learning rate
    assert scheduler.get_last_lr()[0] < 0.002 / 10  # the last step trained deep in the annealing (a 0.002 peak)
    with open(out / "time_to_accuracy.csv") as f:  # the last (partial) epoch was validated
        assert int(list(csv.DictReader(f))[-1]["epoch"]) == trainer.state.epoch
    assert (out / "model.pt").is_file() and (out / "thresholds.json").is_file()
