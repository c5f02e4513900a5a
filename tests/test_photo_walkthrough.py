"""docs/photos.md, run as written on a generated 4-class photo folder: its commands give a trained model, a pre.csv
and an ONNX model, and its onnxruntime snippet runs and agrees with predict.py."""
import contextlib
import io
import json
import os
import shlex

import pandas as pd
import pytest
from photos import make_photos

import easycls
from easycls.cli.inference import evaluate_main, export_main, predict_main
from easycls.cli.train import train_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = {"train.py": train_main, "evaluate.py": evaluate_main, "predict.py": predict_main,
            "export.py": export_main}
# What a 2-core test machine without network can run: each is replaced exactly once, and nothing else is edited.
SMALLER = {"model_name=resnet18": "model_name=test_resnet", "pretrained=True": "",
           "target_img_size=[224,224]": "target_img_size=[32,40]", "epochs=15": "epochs=3"}


def blocks(text: str, language: str):
    return [block.split("```")[0] for block in text.split(f"```{language}\n")[1:]]


def walkthrough():
    text = open(os.path.join(ROOT, "docs", "photos.md"), encoding="utf-8").read()
    commands = "\n".join(blocks(text, "bash")).replace("\\\n", " ")
    for old, new in SMALLER.items():
        assert commands.count(old) == 1, old
        commands = commands.replace(old, new)
    lines = [shlex.split(line, comments=True) for line in commands.splitlines()]
    snippet = next(block for block in blocks(text, "python") if "onnxruntime" in block)
    return [line for line in lines if line], snippet


def test_the_photo_walkthrough_runs(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    make_photos(tmp_path / "my_photos")
    monkeypatch.chdir(tmp_path)
    commands, snippet = walkthrough()
    assert [(c[0], c[1]) for c in commands] == [("python", "train.py"), ("python", "evaluate.py"),
                                                ("python", "predict.py"), ("python", "export.py")]
    for command in commands:
        assert COMMANDS[command[1]](command[2:]) == 0, command
    pre = pd.read_csv("output/pre.csv")
    assert pre["image_id"].tolist() == [f"IMG_{i:04d}.jpg" for i in range(1, 7)]
    assert (pre["status"] == "ok").all()
    metrics = json.load(open("output/eval/metrics.json"))
    assert metrics["TTA"] is True and metrics["n_images"] == 16 and metrics["model_path"] == "output/best.pth"
    assert os.path.getsize("output/model.onnx") > 0

    printed, names = io.StringIO(), {"__name__": "snippet"}
    with contextlib.redirect_stdout(printed):
        exec(compile(snippet, "docs/photos.md", "exec"), names)  # fails on any name it does not define
    # an image resized as (height, width) instead of (width, height) would not fit the graph's fixed 32x40 input
    assert names["batch"].shape == (1, 3, 32, 40)
    ours = easycls.load_model("output/model.onnx", "cpu").predict("my_photos/test/IMG_0001.jpg")[0]
    assert names["probs"] == pytest.approx(ours, abs=0.01)  # PIL's BOX resize against OpenCV's area resize
    classes = sorted(os.listdir("my_photos/train"))
    assert printed.getvalue().split()[0] == classes[int(names["probs"].argmax())]
