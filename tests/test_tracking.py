import os

import pytest
import torch

from easycls.core.errors import TrainingError
from easycls.engine.tracking import CheckpointSaver, EarlyStopper

# (mode, patience, min_delta, values, epoch it stops at (None = never), best epoch)
CASES = [
    ("max", 2, 0.0, [0.5, 0.6, 0.6, 0.59], 3, 1),
    ("max", 3, 0.0, [0.5, 0.6, 0.55, 0.7, 0.6, 0.6], None, 3),
    ("min", 2, 0.0, [1.0, 0.8, 0.9, 0.7, 0.71, 0.72], 5, 3),
    ("max", 2, 0.05, [0.5, 0.52, 0.54, 0.9], 2, 0),
    ("max", 0, 0.0, [0.9, 0.1, 0.1, 0.1, 0.1], None, 0),
    ("min", 1, 0.0, [1.0, 1.0], 1, 0),
]


@pytest.mark.parametrize("mode,patience,delta,values,stop_at,best_epoch", CASES)
def test_early_stopping_table(mode, patience, delta, values, stop_at, best_epoch):
    stopper = EarlyStopper(mode, patience, delta)
    stopped = None
    for epoch, value in enumerate(values):
        stopper.update(value, epoch)
        if stopper.should_stop:
            stopped = epoch
            break
    assert stopped == stop_at
    assert stopper.best_epoch == best_epoch


def test_bad_mode():
    with pytest.raises(ValueError, match="'min' or 'max'"):
        EarlyStopper("up", 3)


def state(value=1.0):
    return {"model": {"w": torch.full((2,), value)}, "meta": {"model_name": "x"}, "config": {}, "epoch": 0,
            "history": []}


@pytest.mark.parametrize("best_only,one_only,expected", [
    (True, True, {"last.pth", "best.pth", "best.safetensors", "best.json"}),
    (False, True, {"last.pth", "best.pth", "best.safetensors", "best.json", "epoch_001.pth", "epoch_002.pth",
                   "epoch_003.pth"}),
    (True, False, {"last.pth", "best.pth", "best.safetensors", "best.json", "best_e001_0.5000.pth",
                   "best_e003_0.7000.pth"}),
])
def test_saver_honours_save_flags(tmp_path, best_only, one_only, expected):
    saver = CheckpointSaver(str(tmp_path), best_only, one_only)
    tracker = EarlyStopper("max", patience=0)
    for epoch, value in enumerate([0.5, 0.4, 0.7]):
        saver.save(state(value), epoch, value, tracker.update(value, epoch))
    assert set(os.listdir(tmp_path)) == expected
    assert torch.load(tmp_path / "best.pth", weights_only=True)["model"]["w"][0] == 0.7


def test_non_finite_weights_are_never_saved(tmp_path):
    saver = CheckpointSaver(str(tmp_path))
    with pytest.raises(TrainingError, match="not finite"):
        saver.save(state(float("nan")), 0, 0.5, True)
    assert os.listdir(tmp_path) == []


def test_stopper_state_holds_progress_not_settings():
    stopper = EarlyStopper("max", patience=5)
    for epoch, value in enumerate([0.5, 0.7, 0.6]):
        stopper.update(value, epoch)
    resumed = EarlyStopper("max", patience=2)  # the patience of the resumed run's config wins
    resumed.load_state_dict(stopper.state_dict())
    assert (resumed.best, resumed.best_epoch, resumed.wait, resumed.patience) == (0.7, 1, 1, 2)
    resumed.update(0.65, 3)
    assert resumed.should_stop
