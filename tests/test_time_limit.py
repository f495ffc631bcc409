"""Training for a time budget: the clock handler, the one-cycle schedule that follows it, resuming the budget."""

import logging

import pytest
import torch
from ignite.engine import Engine, Events
from torch.optim.lr_scheduler import OneCycleLR

from monai_embedseg.bundle.checks import check_training_settings
from monai_embedseg.handlers import FinalValidationHandler, ResumeHandler, TrainingTimeLimit
from monai_embedseg.optimizers import TimedOneCycleLR


class FakeClock:
    """A clock whose share of the budget the test sets."""

    def __init__(self):
        self.value = 0.0

    def fraction(self):
        return self.value


def _optimizer():
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1, momentum=0.9)


def _lrs(scheduler, optimizer, steps, clock=None, fractions=None):
    out = []
    for i in range(steps):
        if clock is not None:
            clock.value = fractions[i]
        optimizer.step()
        scheduler.step()
        out.append(optimizer.param_groups[0]["lr"])
    return out


def test_timed_one_cycle_without_a_limit_is_one_cycle_step_for_step():
    opt_a, opt_b = _optimizer(), _optimizer()
    plain = OneCycleLR(opt_a, max_lr=0.01, total_steps=40, pct_start=0.1)
    timed = TimedOneCycleLR(opt_b, max_lr=0.01, total_steps=40, clock=FakeClock(), pct_start=0.1)
    assert _lrs(plain, opt_a, 39) == _lrs(timed, opt_b, 39)
    assert opt_a.param_groups[0]["momentum"] == opt_b.param_groups[0]["momentum"]


def test_timed_one_cycle_follows_the_time_spent_and_ends_at_the_final_rate():
    reference_opt = _optimizer()
    reference = OneCycleLR(reference_opt, max_lr=0.01, total_steps=100, pct_start=0.1)
    by_step = _lrs(reference, reference_opt, 99)  # by_step[k] is the rate of schedule step k + 1
    clock, opt = FakeClock(), _optimizer()
    timed = TimedOneCycleLR(opt, max_lr=0.01, total_steps=100, clock=clock, pct_start=0.1)
    # five iterations, each taking a fifth of the budget: the cycle is run through in five steps
    lrs = _lrs(timed, opt, 5, clock, [0.2, 0.4, 0.6, 0.8, 1.0])
    assert lrs[0] == pytest.approx(by_step[int(0.2 * 99) - 1])
    assert lrs[-1] == pytest.approx(by_step[-1])  # the final (smallest) rate when the time is up
    assert lrs[-1] < 0.01 / 1000
    # the step count wins when it is further along than the time
    clock.value, timed.steps_taken = 0.0, 49
    opt.step()
    timed.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(by_step[49])


def test_timed_one_cycle_state_dict_leaves_the_clock_out():
    clock = FakeClock()
    timed = TimedOneCycleLR(_optimizer(), max_lr=0.01, total_steps=10, clock=clock)
    state = timed.state_dict()
    assert "clock" not in state and state["steps_taken"] == 0
    torch.save(state, "/dev/null")  # a checkpoint holds it
    other = TimedOneCycleLR(_optimizer(), max_lr=0.01, total_steps=10, clock=FakeClock())
    other_clock = other.clock
    other.load_state_dict(state)
    assert other.clock is other_clock and other.steps_taken == 0
    with pytest.raises(ValueError, match="without an epoch"):
        timed.step(3)


def _slow_engine(seconds_per_iteration=0.02):
    import time

    return Engine(lambda engine, batch: time.sleep(seconds_per_iteration))


def test_time_limit_stops_within_an_epoch_and_the_part_run_is_validated(caplog):
    trainer = _slow_engine()
    validated = []

    class Validator:  # what FinalValidationHandler calls: MONAI's evaluator.run(global_epoch)
        def run(self, epoch):
            validated.append((epoch, trainer.state.iteration))

    validator = Validator()
    limit = TrainingTimeLimit(max_minutes=0.15 / 60)  # 0.15 s: about 7 of the 10 iterations of epoch 1
    limit.attach(trainer)
    FinalValidationHandler(validator, interval=1).attach(trainer)
    completed = []
    trainer.add_event_handler(Events.COMPLETED, lambda e: completed.append(True))
    with caplog.at_level(logging.INFO, logger="monai_embedseg.handlers.time_limit"):
        trainer.run(range(10), max_epochs=100)
    assert trainer.state.epoch == 1 and 0 < trainer.state.iteration < 10
    assert completed == [True]  # stopping fires COMPLETED, as the end of the epochs does
    assert validated == [(1, trainer.state.iteration)]  # the stopped epoch was validated once
    assert limit.fraction() == 1.0 and limit.elapsed() >= 0.15
    assert "time limit of 0.0025 min reached at epoch 1" in caplog.text


def test_time_limit_budget_continues_after_resume():
    limit = TrainingTimeLimit(max_minutes=1.0)
    limit.load_state_dict({"seconds": 45.0})  # a resumed run had trained 45 s
    assert limit.fraction() == pytest.approx(0.75)
    trainer = _slow_engine(0.0)
    limit.attach(trainer)
    trainer.run(range(3), max_epochs=1)
    assert 45.0 <= limit.state_dict()["seconds"] < 50.0
    assert 0.75 <= limit.fraction() < 0.85
    no_limit = TrainingTimeLimit()
    no_limit.attach(trainer := _slow_engine(0.0))
    trainer.run(range(3), max_epochs=2)
    assert no_limit.fraction() == 0.0 and trainer.state.epoch == 2 and no_limit.elapsed() > 0


@pytest.mark.parametrize("minutes", [0, -1, "5", True, float("nan")])
def test_a_time_limit_that_cannot_train_is_refused(minutes):
    with pytest.raises(ValueError, match="max_minutes"):
        check_training_settings(3, minutes)
    with pytest.raises(ValueError, match="max_minutes"):
        TrainingTimeLimit(minutes if not isinstance(minutes, str) else -1)


def test_resume_from_a_checkpoint_without_the_clock_starts_the_clock_afresh(tmp_path, caplog):
    model = torch.nn.Linear(2, 2)
    limit = TrainingTimeLimit(max_minutes=5)
    trainer = Engine(lambda engine, batch: None)
    torch.save({"model": model.state_dict(), "trainer": trainer.state_dict()}, tmp_path / "checkpoint_epoch=1.pt")
    resume = ResumeHandler(str(tmp_path), {"model": model, "training_clock": limit}, enabled=True)
    with caplog.at_level(logging.WARNING):
        resume.attach(trainer)
        trainer.run(range(2), max_epochs=2)
    assert "holds no 'training_clock'" in caplog.text and limit.elapsed() < 5
    torch.save({"trainer": trainer.state_dict()}, tmp_path / "checkpoint_epoch=2.pt")
    with pytest.raises(ValueError, match="holds no 'model'"):
        ResumeHandler(str(tmp_path), {"model": model}, enabled=True).attach(Engine(lambda e, b: None))
