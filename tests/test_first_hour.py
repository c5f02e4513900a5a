"""The first hour with your own photos (issue 24): a run trained with command-line paths is continued by the later
commands, data mistakes are named, fewer keys need repeating, outputs say what produced them, and waiting shows
progress. Commands run in-process, in a scratch folder without config.py, as a user in a fresh folder would."""
import json
import logging
import os
import shutil
import stat

import pytest
import torch
from photos import PHOTO_CLASSES, make_photos
from PIL import Image

from easycls.cli.inference import evaluate_main, export_main, predict_main
from easycls.cli.train import train_main
from easycls.config import make_config, parse_overrides, read_config_file
from easycls.core.errors import ConfigError
from easycls.data import audit as audit_module
from easycls.data import loaders
from easycls.data.checks import colour_example, has_colour, with_class_number
from easycls.data.loaders import decode_all
from easycls.data.scan import scan_labelled
from easycls.engine.hooks.records import LoggerHook

SMALL = ["model_name=test_resnet", "target_img_size=[32,40]", "batch_size=16", "num_workers=0", "cfg_verbose=False",
         "augment='none'", "learning_rate=0.01"]


def train_args(photos: str, *extra: str):
    """A photo run as a user types it: the paths on the command line, no class_number."""
    return ["channels=3", f"train_path={photos}/train", f"val_path={photos}/val", f"test_path={photos}/test",
            *SMALL, *extra]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One photo run trained from the command line in a scratch folder: (that folder, the photos folder)."""
    root = tmp_path_factory.mktemp("first_hour")
    photos = make_photos(root / "photos")
    work = root / "work"
    work.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        assert train_main(train_args("../photos", "epochs=2")) == 0
    return work, photos


# ----------------------------------------------------------------------------- 1. later commands know the run
def test_a_json_config_is_read_like_a_python_one(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"epochs": 3, "target_img_size": [38, 50], "mean": None}))
    assert read_config_file(str(path)) == {"epochs": 3, "target_img_size": [38, 50], "mean": None}
    assert make_config(str(path), {"epochs": 4})["epochs"] == 4
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must hold a JSON object of config keys"):
        make_config(str(path))
    path.write_text("{'epochs': 3}")
    with pytest.raises(ConfigError, match="is not valid JSON"):
        make_config(str(path))


def test_a_hook_instance_recorded_by_name_in_config_json_is_left_out(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("easycls"), "propagate", True)  # the CLI turns it off for its console
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"custom_hooks": ["StopAtAccuracy", "LoggerHook", {"type": "EMAHook"}]}))
    with caplog.at_level(logging.WARNING, logger="easycls"):
        assert make_config(str(path))["custom_hooks"] == ["LoggerHook", {"type": "EMAHook"}]
    assert "custom_hooks ['StopAtAccuracy'] are not registered" in caplog.text


def test_predict_and_export_continue_the_run_with_its_config_json(run, monkeypatch, capsys):
    work, _ = run
    monkeypatch.chdir(work)
    assert predict_main(["--config", "output/config.json"]) == 0
    assert len(open("output/pre.csv").read().splitlines()) == 1 + 6
    assert export_main(["--config", "output/config.json"]) == 0
    assert os.path.getsize("output/model.onnx") > 0
    assert "differs from the model" not in capsys.readouterr().out  # config.json holds the model's own values


@pytest.mark.parametrize("main,expected", [
    (predict_main, "test_path data/digits/test does not exist; this model was trained with test_path=../photos/test: "
                   "pass --config output/config.json or test_path=..."),
    (evaluate_main, "test_path data/digits/test does not exist; this model was trained with test_path="
                    "../photos/test: pass --config output/config.json or test_path=..."),
    (export_main, "val_path data/digits/val does not exist; test_path data/digits/test does not exist; this model was "
                  "trained with val_path=../photos/val, test_path=../photos/test: pass --config output/config.json "
                  "or val_path=..."),
])
def test_a_missing_path_names_the_key_the_value_and_the_runs_own(run, monkeypatch, capsys, main, expected):
    """predict and evaluate stop; export checks parity on synthetic images instead (issue 21: export anywhere) and
    says how to check on the run's own."""
    monkeypatch.chdir(run[0])
    assert main([]) == (0 if main is export_main else 2)
    out = capsys.readouterr()
    assert expected in (out.out if main is export_main else out.err)


# ----------------------------------------------------------------------------- 3. data mistakes are named
@pytest.fixture
def flawed_run(tmp_path, monkeypatch, capsys):
    """Colour photos trained with channels=1, a val folder without flower_right and an unreadable train file:
    (stdout of train.py, its save_dir)."""
    photos = make_photos(tmp_path / "photos", train=6, val=2)
    shutil.rmtree(os.path.join(photos, "val", "flower_right"))
    (tmp_path / "photos" / "train" / "leaf_left" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    monkeypatch.chdir(tmp_path)
    args = [a for a in train_args("photos", "epochs=1", "audit=True") if a != "channels=3"]
    assert train_main(args) == 0
    return capsys.readouterr().out, tmp_path / "output"


def test_data_mistakes_are_named_once_at_start(flawed_run):
    out, save_dir = flawed_run
    lacking = [line for line in out.splitlines() if "has no images of flower_right" in line
               and not line.startswith("audit: ")]  # audit=True: the audit's summary line names it too
    assert lacking == ["val_path photos/val has no images of flower_right: val accuracy, best.pth and early stopping "
                       "never check them"]
    colour = [line for line in out.splitlines() if "channels=3 keeps the colour" in line]
    assert len(colour) == 1 and "channels=1 trains on them in grayscale" in colour[0]
    # the counts are of the images used: 25 files found in train, one of them unreadable
    assert "data: 24 train / 6 val images, 4 classes, decoded once into memory, 1 unreadable skipped" in out
    data = json.load(open(save_dir / "data.json"))
    assert data["missing_classes"] == {"train": [], "val": ["flower_right"]}
    assert data["class_counts"]["train"]["leaf_left"] == 6
    audit = json.load(open(save_dir / "audit" / "audit.json"))
    assert audit["missing_classes"] == {"val": ["flower_right"]}
    assert "- val: flower_right" in (save_dir / "audit" / "audit.md").read_text()
    assert "val has no images of flower_right" in (save_dir / "report.html").read_text()


def test_colour_is_told_apart_from_gray_stored_as_rgb(tmp_path):
    gray = Image.effect_noise((50, 38), 40).convert("RGB")  # three equal channels, saved as a colour JPEG
    gray.save(tmp_path / "gray.jpg", quality=90)
    make_photos(tmp_path / "photos", train=1, val=1, test=0)
    assert not has_colour(str(tmp_path / "gray.jpg"))
    assert has_colour(str(tmp_path / "photos" / "train" / "leaf_left" / "000000.jpg"))
    cfg = make_config(None, {"train_path": str(tmp_path / "photos" / "train"), "channels": 1})
    assert colour_example(cfg).endswith(os.path.join("flower_left", "000000.jpg"))
    assert colour_example({**cfg, "channels": 3}) is None


def test_predict_takes_one_image_file(run, monkeypatch):
    monkeypatch.chdir(run[0])
    assert predict_main(["--config", "output/config.json", "test_path=../photos/test/IMG_0002.jpg"]) == 0
    rows = open("output/pre.csv").read().splitlines()
    assert len(rows) == 2 and rows[1].startswith("IMG_0002.jpg,") and rows[1].endswith(",ok")


def test_predict_and_evaluate_on_a_file_say_what_they_need(run, monkeypatch, capsys):
    monkeypatch.chdir(run[0])
    (run[0] / "notes.txt").write_text("not an image")
    assert predict_main(["--config", "output/config.json", "test_path=notes.txt"]) == 2
    assert "notes.txt is a file but not an image" in capsys.readouterr().err
    assert evaluate_main(["--config", "output/config.json", "eval_path=../photos/test/IMG_0001.jpg"]) == 2
    assert ("eval_path ../photos/test/IMG_0001.jpg is a file; evaluate needs a folder of labelled images, one "
            "sub-folder per class: set eval_path, such as eval_path=../photos/val") in capsys.readouterr().err


# ----------------------------------------------------------------------------- 4. fewer keys to repeat
def test_class_number_is_counted_from_the_class_folders(run):
    work, _ = run
    assert make_config()["class_number"] is None
    assert json.load(open(work / "output" / "config.json"))["class_number"] == 4
    meta = torch.load(work / "output" / "best.pth", weights_only=True)["meta"]
    assert meta["class_names"] == sorted(PHOTO_CLASSES)


def test_a_class_number_that_is_set_is_still_checked(run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert train_main(train_args(run[1], "epochs=1", "class_number=3")) == 2
    assert f"class_number is 3 but {run[1]}/train has 4 class folders" in capsys.readouterr().err
    cfg = make_config(None, {"train_path": f"{run[1]}/train", "class_weight": [1.0, 2.0]})
    with pytest.raises(ConfigError, match="class_weight has 2 values but the data has 4 classes"):
        with_class_number(cfg)


def test_defaults_nobody_set_are_not_reported_as_conflicts(run, monkeypatch, capsys):
    monkeypatch.chdir(run[0])  # no config.py here: model_name, size, channels and class_number are defaults
    assert predict_main(["test_path=../photos/test"]) == 0
    assert "differs from the model" not in capsys.readouterr().out
    assert predict_main(["test_path=../photos/test", "channels=1", "target_img_size=[64,64]"]) == 0
    said = [line for line in capsys.readouterr().out.splitlines() if "differs from the model" in line]
    assert said == ["config target_img_size=[64, 64] differs from the model's [32, 40]; channels=1 differs from the "
                    "model's 3; using the model's"]


@pytest.mark.parametrize("argv,expected", [
    (["target_img_size=[64,", "64]"], "the shell split the override 'target_img_size=[64, 64]' at its spaces; quote "
                                      "it: \"target_img_size=[64, 64]\", or leave out the spaces: "
                                      "target_img_size=[64,64]"),
    (["class_names=[a,", "b]", "epochs=1"], "quote it: \"class_names=[a, b]\""),
])
def test_an_override_split_by_the_shell_shows_how_to_quote_it(argv, expected, capsys):
    assert train_main(argv) == 2
    assert expected in capsys.readouterr().err


def test_parse_overrides_keeps_whole_values():
    assert parse_overrides(["target_img_size=[64,64]", "mean=[0.5]"]) == {"target_img_size": [64, 64], "mean": [0.5]}
    assert parse_overrides(["save_dir=a[1"]) == {"save_dir": "a[1"}  # the last argument: nothing was split off


def test_train_help_points_to_the_key_reference(capsys):
    with pytest.raises(SystemExit) as stop:
        train_main(["--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert "docs/config.md" in text and "--config output/config.json" in text and "config.json" in text


# ----------------------------------------------------------------------------- 5. outputs say what produced them
def test_evaluate_records_the_model_path_tta_and_calibration(run, monkeypatch, capsys):
    monkeypatch.chdir(run[0])
    assert evaluate_main(["--config", "output/config.json", "eval_path=../photos/val", "TTA=True"]) == 0
    captured = capsys.readouterr()
    metrics = json.load(open("output/eval/metrics.json"))
    assert (metrics["model_path"], metrics["path"], metrics["TTA"], metrics["calibrate"]) == \
        ("output/best.pth", "../photos/val", True, True)
    report = open("output/report.html").read()
    assert "Model <code>output/best.pth</code>; TTA on; calibration temperature" in report
    log = open("output/evaluate.log").read()
    assert f"accuracy: {metrics['accuracy']:.4f}" in log and "macro: precision" in log
    assert f"accuracy: {metrics['accuracy']:.4f}" in captured.out
    assert "evaluate: 100%" in captured.err  # the command line shows progress


def test_every_output_of_training_has_the_usual_permissions(run):
    mask = os.umask(0)
    os.umask(mask)
    usual = 0o666 & ~mask  # what open() gives; safetensors alone used to leave best.safetensors at 0600
    modes = {name: stat.S_IMODE(os.stat(run[0] / "output" / name).st_mode) for name in
             ("best.safetensors", "best.pth", "best.json", "last.pth", "config.json")}
    assert modes == dict.fromkeys(modes, usual)


def test_the_audit_command_writes_under_the_default_save_dir(run, monkeypatch):
    monkeypatch.chdir(run[0])
    assert audit_module.main(["../photos"]) == 0  # test/ holds unlabelled photos: skipped, not an error
    report = json.load(open("output/audit/audit.json"))
    assert set(report["splits"]) == {"train", "val"} and report["missing_classes"] == {}
    assert not os.path.exists("audit")


# ----------------------------------------------------------------------------- 6. progress where people wait
def test_decoding_into_memory_shows_progress_only_when_asked(run, capsys, monkeypatch):
    monkeypatch.setattr(loaders, "PROGRESS_DELAY", 0.0)  # these 16 small images decode in under its 1 s
    samples = scan_labelled(os.path.join(run[1], "val"))
    images, kept = decode_all(samples, 3, (19, 25), 1, progress=True)
    assert images.shape == (16, 3, 19, 25) and "decoding into memory" in capsys.readouterr().err
    decode_all(samples, 3, (19, 25), 1)
    assert capsys.readouterr().err == ""


class FakeRunner:
    """What LoggerHook reads of a runner: batches per epoch, the epoch, and the running metrics."""

    def __init__(self, batches):
        self.train_batches, self.epoch, self.max_epochs, self.progress = batches, 0, 1, True
        self.dist = type("Dist", (), {"is_main": True})()
        self.acc = 0.0

    def running_metrics(self):
        return 1.0, self.acc


@pytest.mark.parametrize("batches,seconds,refreshed", [(3, 1e9, [0, 1, 2]), (200, 1e9, [0, 199]),
                                                       (200, 0.0, list(range(200)))])
def test_the_epoch_bar_shows_the_running_accuracy_of_recent_batches(batches, seconds, refreshed):
    runner, hook = FakeRunner(batches), LoggerHook(seconds=seconds)
    hook.before_train_epoch(runner)
    shown = []
    for step in range(batches):
        runner.acc = step / 1000
        hook.after_train_iter(runner, step, None, None)
        if f"acc={runner.acc:.4f}" in (hook.bar.postfix or ""):
            shown.append(step)
    hook.after_train_epoch(runner)
    assert shown == refreshed


def test_the_api_prints_no_progress_by_default(run, capsys, monkeypatch):
    import easycls
    logger = logging.getLogger("easycls")  # without the console handler an earlier in-process command left there
    monkeypatch.setattr(logger, "handlers", [h for h in logger.handlers if not getattr(h, "easycls_console", False)])
    easycls.evaluate(str(run[0] / "output" / "config.json"), save_dir=str(run[0] / "output"),
                     eval_path=os.path.join(run[1], "val"))
    assert capsys.readouterr().err == ""
