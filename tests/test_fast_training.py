"""The fast training path: FastForward, threshold search on the validation split, step timing, time to accuracy."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events

from monai_embedseg.engines import PAPER_THRESHOLDS, ThresholdSearch, read_thresholds
from monai_embedseg.handlers import StepTimeHandler, TimeToAccuracyHandler
from monai_embedseg.networks.nets import BranchedERFNet, FastForward, bf16_supported, resolve_precision
from monai_embedseg.testing.oracle import oracle_prediction

# ---------------------------------------------------------------- FastForward


@pytest.mark.parametrize("spatial_dims, shape", [(2, (37, 50)), (3, (12, 20, 17))])
def test_fast_forward_float32_channels_last_equals_plain(spatial_dims, shape):
    torch.manual_seed(0)
    net = BranchedERFNet(spatial_dims, 2, init_offset_scale=None, init_sigma_bias=None).eval()
    x = torch.rand(2, 2, *shape)
    with torch.no_grad():
        ref = net(x)
        out = FastForward(net, precision="float32", channels_last=True)(x)
    assert out.shape == ref.shape and out.dtype == torch.float32 and out.is_contiguous()
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


def test_fast_forward_keeps_the_state_dict_and_trains():
    torch.manual_seed(0)
    net = BranchedERFNet(2, 1)
    keys = list(net.state_dict())
    runner = FastForward(net, precision="auto")
    assert runner.network is net
    out = runner(torch.rand(2, 1, 32, 32))
    out.sum().backward()
    assert list(net.state_dict()) == keys
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in net.parameters() if p.requires_grad)


@pytest.mark.skipif(not bf16_supported("cpu"), reason="this CPU has no native bf16 (the float32 path is tested above)")
def test_fast_forward_bf16_is_close_to_float32():
    torch.manual_seed(0)
    net = BranchedERFNet(2, 1, init_offset_scale=None, init_sigma_bias=None).eval()
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        ref = net(x)
        out = FastForward(net, precision="bfloat16")(x)
    assert out.dtype == torch.float32
    assert (out - ref).abs().max() < 0.05 * ref.abs().max() + 0.05


def test_precision_names():
    assert resolve_precision("float32", "cpu") == torch.float32
    assert resolve_precision("auto", "cpu") == (torch.bfloat16 if bf16_supported("cpu") else torch.float32)
    with pytest.raises(ValueError, match="precision must be one of"):
        FastForward(torch.nn.Identity(), precision="fp8")
    if not bf16_supported("cpu"):
        with pytest.raises(ValueError, match="no native bf16"):
            resolve_precision("bfloat16", "cpu")


# ---------------------------------------------------------------- threshold search


def _val_case(seed: int):
    """A label map and a raw prediction whose true objects have seed 0.75 (below the paper's 0.9) and whose
    spurious 2x2 blobs have seed 0.97: the paper's thresholds find nothing, a search finds every object."""
    rng = np.random.default_rng(seed)
    label = np.zeros((1, 64, 64), dtype=np.int64)
    for i, (y, x) in enumerate([(10, 10), (10, 40), (40, 12), (42, 44)]):
        r = 5 + rng.integers(0, 3)
        yy, xx = np.ogrid[:64, :64]
        label[0][(yy - y) ** 2 + (xx - x) ** 2 <= r * r] = i + 1
    pred = oracle_prediction(label)
    logit = lambda p: float(np.log(p / (1 - p)))  # noqa: E731
    pred[-1][label[0] > 0] = logit(0.75)
    for y, x in [(58, 2), (2, 58), (30, 30)]:
        pred[-1][y : y + 2, x : x + 2] = logit(0.97)
    return torch.as_tensor(label), torch.as_tensor(pred)


class _FixedInferer:
    """Returns the stored prediction of the image (the image holds its index)."""

    def __init__(self, preds):
        self.preds = preds
        self.tta = False

    def __call__(self, image, network):
        return torch.stack([self.preds[int(i)] for i in image.flatten(1)[:, 0]])


def test_threshold_search_beats_the_paper_thresholds_on_validation(tmp_path):
    cases = [_val_case(s) for s in range(3)]
    loader = [{"image": torch.full((1, 1, 64, 64), float(i)), "label": lab[None]} for i, (lab, _) in enumerate(cases)]
    search = ThresholdSearch(
        torch.nn.Identity(),
        _FixedInferer([p for _, p in cases]),
        loader,
        str(tmp_path / "thresholds.json"),
        min_object_size=1,
        mean_object_size=80.0,
        tta=True,
    )
    result = search.run()
    assert result["val_ap50_by_image_paper_thresholds"] == 0.0
    assert result["val_ap50_by_image"] == 1.0
    assert result["seed_thresh"] < 0.75 and result["min_object_size"] > 1  # 1-pixel spurious objects dropped
    saved = read_thresholds(str(tmp_path), min_object_size=1)
    assert saved["seed_thresh"] == result["seed_thresh"] and saved["source"].endswith("thresholds.json")
    assert read_thresholds(str(tmp_path), 7, use_tuned=False) == {
        **PAPER_THRESHOLDS,
        "min_object_size": 7,
        "exclude_border": False,
        "source": "paper",
    }
    assert saved["exclude_border"] is False and result["exclude_border"] is False  # no object touches the border
    assert read_thresholds(str(tmp_path / "none"), 3)["source"] == "paper"
    (tmp_path / "thresholds.json").write_text(json.dumps({"seed": 1}))
    with pytest.raises(ValueError, match="not a thresholds file"):
        read_thresholds(str(tmp_path), 3)
    (tmp_path / "thresholds.json").write_text(
        json.dumps({**PAPER_THRESHOLDS, "min_object_size": 1, "exclude_border": 1})
    )
    with pytest.raises(ValueError, match="exclude_border must be true or false"):
        read_thresholds(str(tmp_path), 3)


def test_threshold_search_never_drops_objects_as_large_as_the_training_ones(tmp_path):
    """Bounded by ``max_min_object_size`` (the training objects' small end), the search keeps the minimum size that
    the unbounded search raises to drop the validation images' 4-pixel spurious objects."""
    cases = [_val_case(s) for s in range(3)]
    loader = [{"image": torch.full((1, 1, 64, 64), float(i)), "label": lab[None]} for i, (lab, _) in enumerate(cases)]
    found = {}
    for bound in (None, 3):
        found[bound] = ThresholdSearch(
            torch.nn.Identity(),
            _FixedInferer([p for _, p in cases]),
            loader,
            str(tmp_path / f"thresholds_{bound}.json"),
            min_object_size=1,
            mean_object_size=80.0,
            max_min_object_size=bound,
        ).run()
    assert found[None]["min_object_size"] > 3 and found[3]["min_object_size"] <= 3
    assert found[3]["val_ap50_by_image"] < found[None]["val_ap50_by_image"]  # the bound cost AP on these images


class _TTAInferer(_FixedInferer):
    """Without TTA: true objects at seed 0.95 and object-sized spurious blobs at 0.65; with TTA (an average) the
    blobs are gone and the true objects' seeds fall to 0.6."""

    def __call__(self, image, network):
        good = super().__call__(image, network)
        out = []
        for pred, (label, blobs) in zip(good, [self.labels[int(i)] for i in image.flatten(1)[:, 0]]):
            seed = torch.full_like(pred[-1], -20.0)
            seed[label[0] > 0] = np.log(0.6 / 0.4) if self.tta else np.log(0.95 / 0.05)
            if not self.tta:
                seed[blobs[0] > 0] = np.log(0.65 / 0.35)
            out.append(torch.cat([pred[:-1], seed[None]]))
        return torch.stack(out)


def test_threshold_search_tunes_inference_without_tta_apart(tmp_path):
    """An averaged (TTA) seed map peaks lower than a single prediction's: each mode gets its own thresholds, and
    inference without TTA reads its own."""
    labels, preds = [], []
    for seed in range(2):
        label, _ = _val_case(seed)
        blobs = torch.zeros_like(label)
        blobs[0, 50:58, 25:33] = 7  # object-sized, so only the seed threshold can reject it
        preds.append(torch.as_tensor(oracle_prediction(label + blobs)))
        labels.append((label, blobs))
    inferer = _TTAInferer(preds)
    inferer.labels = labels
    loader = [{"image": torch.full((1, 1, 64, 64), float(i)), "label": lab[None]} for i, (lab, _) in enumerate(labels)]
    out = str(tmp_path / "thresholds.json")
    result = ThresholdSearch(torch.nn.Identity(), inferer, loader, out, 1, 80.0, tta=True).run()
    assert result["seed_thresh"] == 0.5 and result["val_ap50_by_image"] == 1.0  # 0.6 seeds need 0.5
    plain = result["without_tta"]
    assert plain["seed_thresh"] >= 0.7 and plain["val_ap50_by_image"] == 1.0  # the 0.65 blobs are rejected
    assert plain["val_ap50_by_image_paper_thresholds"] == 1.0
    assert read_thresholds(str(tmp_path), 1)["seed_thresh"] == 0.5
    no_tta = read_thresholds(str(tmp_path), 1, tta=False)
    assert no_tta["seed_thresh"] == plain["seed_thresh"] and no_tta["source"].endswith("(without TTA)")
    assert "without_tta" not in ThresholdSearch(torch.nn.Identity(), inferer, loader, out, 1, 80.0, tta=False).run()
    assert (
        read_thresholds(str(tmp_path), 1, tta=False)["seed_thresh"] == read_thresholds(str(tmp_path), 1)["seed_thresh"]
    )  # a file without the entry serves both modes


@pytest.mark.parametrize("annotated_at_border", [False, True])
def test_threshold_search_drops_border_objects_only_where_the_annotations_do(annotated_at_border, tmp_path):
    """Predictions find every nucleus, also those the image border cuts; the search drops these only when the
    validation masks leave them out (as automatic annotations often do), and keeps them when they are labelled."""
    cases = []
    for seed in range(2):
        label, _ = _val_case(seed)
        full = label.clone()
        full[0, 28:36, 0:5] = 5  # cut by the left border
        full[0, 59:64, 20:28] = 6  # cut by the bottom border
        cases.append((full if annotated_at_border else label, torch.as_tensor(oracle_prediction(full))))
    loader = [{"image": torch.full((1, 1, 64, 64), float(i)), "label": lab[None]} for i, (lab, _) in enumerate(cases)]
    search = ThresholdSearch(
        torch.nn.Identity(), _FixedInferer([p for _, p in cases]), loader, str(tmp_path / "thresholds.json"), 1, 80.0
    )
    result = search.run()
    assert result["exclude_border"] is not annotated_at_border
    assert result["val_ap50_by_image"] == 1.0
    assert result["val_ap50_by_image_border_objects_kept"] == (1.0 if annotated_at_border else pytest.approx(4 / 6))
    assert read_thresholds(str(tmp_path), 1)["exclude_border"] is result["exclude_border"]


def test_bounded_validation_keeps_validation_under_its_share_of_training():
    import time

    from monai_embedseg.handlers import BoundedValidationHandler

    runs = []

    class Validator:  # a MONAI evaluator's run(global_epoch), 50 ms each
        def run(self, epoch):
            runs.append(epoch)
            time.sleep(0.05)

    validator = Validator()
    trainer = Engine(lambda e, b: time.sleep(0.01))  # 10 ms per epoch
    handler = BoundedValidationHandler(validator, interval=1, max_fraction=0.5)
    handler.attach(trainer)
    trainer.run([0], max_epochs=12)
    assert runs and handler.skipped  # the first ran, then runs were skipped while 50 ms > 0.5 x 10 ms per epoch
    assert len(runs) + len(handler.skipped) == 12
    assert runs[0] == 1 and runs[-1] == 12 and handler.skipped[-1] < 12  # the last epoch is always validated
    roomy = BoundedValidationHandler(validator, interval=2, max_fraction=100.0)  # 50 ms < 100 x 20 ms of training
    trainer = Engine(lambda e, b: time.sleep(0.01))
    roomy.attach(trainer)
    trainer.run([0], max_epochs=6)
    assert roomy.skipped == []  # a cheap validation is never skipped
    with pytest.raises(ValueError, match="max_fraction"):
        BoundedValidationHandler(validator, max_fraction=0)


class _Switch(torch.nn.Module):
    """A "network" with one weight: positive -> the stored good predictions, else predictions with no seed."""

    def __init__(self, w: float):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(float(w)))


class _SwitchInferer(_FixedInferer):
    def __call__(self, image, network):
        good = super().__call__(image, network)
        return good if network.w > 0 else torch.cat([good[:, :-1], torch.full_like(good[:, -1:], -20.0)], 1)


@pytest.mark.parametrize("final_is_better", [True, False])
def test_threshold_search_keeps_the_better_of_the_best_and_the_last_model(final_is_better, tmp_path):
    cases = [_val_case(s) for s in range(2)]
    loader = [{"image": torch.full((1, 1, 64, 64), float(i)), "label": lab[None]} for i, (lab, _) in enumerate(cases)]
    ckpt = tmp_path / "model.pt"
    torch.save(_Switch(-1.0 if final_is_better else 1.0).state_dict(), ckpt)
    net = _Switch(1.0 if final_is_better else -1.0)  # the weights of the last training step
    before = ckpt.read_bytes()
    search = ThresholdSearch(
        net, _SwitchInferer([p for _, p in cases]), loader, str(tmp_path / "thresholds.json"), 1, 80.0, str(ckpt)
    )
    search.compare_final = True
    result = search.run()
    assert result["val_ap50_by_image"] == 1.0  # the good weights were found either way
    assert result["model"] == (
        "last training step" if final_is_better else "best validation AP at the paper's thresholds"
    )
    assert float(torch.load(ckpt, weights_only=True)["w"]) == 1.0 and float(net.w.detach()) == 1.0
    assert (ckpt.read_bytes() == before) is not final_is_better  # replaced only when the last step won
    assert json.loads((tmp_path / "thresholds.json").read_text())["model"] == result["model"]


def test_threshold_search_searches_once_when_the_best_model_is_the_last_step(tmp_path):
    cases = [_val_case(s) for s in range(2)]
    loader = [{"image": torch.full((1, 1, 64, 64), float(i)), "label": lab[None]} for i, (lab, _) in enumerate(cases)]
    ckpt = tmp_path / "model.pt"
    torch.save(_Switch(1.0).state_dict(), ckpt)
    before = ckpt.read_bytes()
    inferer = _SwitchInferer([p for _, p in cases])
    calls = []

    def counted(x, n):
        calls.append(1)
        return inferer(x, n)

    search = ThresholdSearch(_Switch(1.0), counted, loader, str(tmp_path / "t.json"), 1, 80.0, str(ckpt))
    search.compare_final = True
    result = search.run()
    assert result["model"] == "last training step" and result["val_ap50_by_image"] == 1.0
    assert len(calls) == len(loader) and ckpt.read_bytes() == before  # one prediction pass, the file untouched


# ---------------------------------------------------------------- timing handlers


def test_step_time_and_time_to_accuracy_handlers(tmp_path):
    from monai.engines.utils import IterationEvents

    trainer = Engine(
        lambda e, b: (
            e.fire_event(IterationEvents.FORWARD_COMPLETED),
            e.fire_event(IterationEvents.LOSS_COMPLETED),
            e.fire_event(IterationEvents.MODEL_COMPLETED),
        )
    )
    trainer.register_events(*IterationEvents, event_to_attr={})
    validator = Engine(lambda e, b: None)
    validator.add_event_handler(Events.COMPLETED, lambda e: e.state.metrics.update(val_ap50=e.state.epoch / 10))

    def validate(_):
        validator.run([0], max_epochs=validator.state.max_epochs + 1 if validator.state.max_epochs else 1)

    trainer.add_event_handler(Events.EPOCH_COMPLETED, validate)
    (tmp_path / "model.pt").write_bytes(b"weights")
    steps = StepTimeHandler()
    steps.attach(trainer)
    tta = TimeToAccuracyHandler(validator, str(tmp_path), snapshot_minutes=[0.0, 1000.0])
    tta.attach(trainer)
    trainer.run(range(4), max_epochs=2)

    assert steps.totals["steps"] == 8
    mean = steps.mean_step()
    assert set(mean) == {"data", "forward", "loss", "backward_step", "total"} and mean["total"] > 0
    assert 0.0 <= trainer.state.metrics["step_data_fraction"] <= 1.0
    with open(tmp_path / "time_to_accuracy.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"] and "val_ap50" in rows[0]
    assert float(rows[1]["seconds"]) >= float(rows[0]["seconds"]) >= 0
    # the 0-min mark is passed at once, the 1000-min mark is taken at the end of training
    assert (tmp_path / "model_0min.pt").read_bytes() == b"weights"
    assert (tmp_path / "model_1000min.pt").read_bytes() == b"weights"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert "time_to_accuracy/val_ap50" in EventAccumulator(str(tmp_path)).Reload().Tags()["scalars"]


# ---------------------------------------------------------------- threads


def test_busy_cpus_counts_only_this_process_cpus(monkeypatch):
    from monai_embedseg.utils import threads as th

    class Me:  # this process's own CPU use over the interval
        own = 0.0

        def cpu_percent(self, interval=None):
            return self.own

    monkeypatch.setattr(th.psutil, "Process", Me)
    monkeypatch.setattr(th.psutil, "cpu_percent", lambda interval, percpu: [100.0, 90.0, 0.0, 100.0])
    monkeypatch.setattr(th.os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert th.busy_cpus() == 2  # CPU 3 is busy but not ours
    Me.own = 100.0
    assert th.busy_cpus() == 1  # one of the two busy cores is this process itself
    monkeypatch.setattr(th.psutil, "cpu_percent", lambda interval, percpu: [0.0, 10.0, 5.0, 100.0])
    assert th.busy_cpus() == 0


def test_thread_count_is_chosen_again_while_training_runs(monkeypatch, caplog):
    """A run started while another program was busy takes the idle core back at a later epoch, and says so."""
    import logging

    from monai_embedseg.handlers import ThreadCountHandler
    from monai_embedseg.utils import threads as th

    before = torch.get_num_threads()
    busy = iter([1, 1, 0, 0, 1])
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setattr(th, "available_cpus", lambda: 2)
    monkeypatch.setattr(th, "busy_cpus", lambda: next(busy))
    try:
        th.configure_threads()
        assert torch.get_num_threads() == 1  # the other core was busy at start
        engine = Engine(lambda e, b: None)
        handler = ThreadCountHandler(min_interval=0.0)
        handler.attach(engine)
        with caplog.at_level(logging.INFO, logger="monai_embedseg.utils.threads"):
            engine.run([0], max_epochs=4)
        assert handler.history == [1, 2, 2, 1]  # one check per epoch, following the other program
        assert "using 2 torch CPU thread(s), was 1" in caplog.text
        assert "using 1 torch CPU thread(s), was 2" in caplog.text
        fixed = ThreadCountHandler(threads=2, min_interval=0.0)
        fixed(engine)
        assert fixed.history == []  # the user's explicit count is kept
        limited = ThreadCountHandler(min_interval=3600.0)
        limited(engine)
        assert limited.history == []  # at most one check per min_interval
    finally:
        torch.set_num_threads(before)


def test_configure_threads(monkeypatch):
    from monai_embedseg.utils import threads as th

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
        monkeypatch.setattr(th, "available_cpus", lambda: 8)
        monkeypatch.setattr(th, "busy_cpus", lambda: 3)
        assert th.configure_threads(reserve=1) == 5 == torch.get_num_threads()  # 8 CPUs, 3 busy
        monkeypatch.setattr(th, "busy_cpus", lambda: 20)
        assert th.configure_threads() == 1  # a fully loaded machine: one thread, never zero
        assert th.configure_threads(threads=2) == 2
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        torch.set_num_threads(3)
        assert th.configure_threads(reserve=1) == 3  # the user's choice wins
    finally:
        torch.set_num_threads(before)


def test_non_bottleneck_inference_path_equals_the_training_formula():
    """Without autograd the residual block adds and rectifies in place (it keeps bf16 channels-last chains); in
    float32 the values equal ``relu(x + residual(x))`` and the block input is left untouched."""
    from monai_embedseg.networks.blocks.erfnet import NonBottleneck1d

    torch.manual_seed(0)
    block = NonBottleneck1d(2, 8, dilation=2).eval()
    x = torch.randn(2, 8, 17, 19)
    x_before = x.clone()
    with torch.no_grad():
        out = block(x)
        ref = torch.relu(x + block.residual(x))
    assert torch.equal(x, x_before)
    torch.testing.assert_close(out, ref, atol=0, rtol=0)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = block(x.to(memory_format=torch.channels_last))
    assert mixed.dtype == torch.bfloat16  # the residual's dtype; x + r would have promoted it to float32
    y = block.train()(x.requires_grad_())
    y.sum().backward()  # the training path keeps autograd working
    assert x.grad is not None
