"""Nothing lost, clear errors, no code execution: bad data, audit, resume, safe checkpoints, numerics."""
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import ROOT, cfg_overrides, run_script, tiny_cfg, write_config
from easycls.audit import audit, find_splits
from easycls.checkpoints import atomic_write, load_checkpoint, save_checkpoint
from easycls.cli import evaluate_main, predict_main, train_main
from easycls.errors import CheckpointError, TrainingError
from easycls.images import ImageReadError, decode_full, read_image


# ----------------------------------------------------------------------------- pixels and bad files
def png_header_only(path, width, height):
    """A PNG whose header claims ``width x height`` pixels: a decompression bomb for PIL."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    arr = np.array([[0, 32896, 65535, 1000]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "deep.png")
    assert read_image(str(tmp_path / "deep.png"), 1, (1, 4)).ravel().tolist() == [0, 128, 255, 4]


def test_transparency_is_flattened_onto_white(tmp_path):
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red ...
    rgba[0, 0, 3] = 255  # ... opaque in one pixel only
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    out = read_image(str(tmp_path / "alpha.png"), 3, (2, 2))
    assert out[0, 0].tolist() == [255, 0, 0] and out[1, 1].tolist() == [255, 255, 255]


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("L", (4, 2), 0)
    img.putpixel((0, 0), 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img.save(tmp_path / "rot.jpg", exif=exif, quality=100)
    out = read_image(str(tmp_path / "rot.jpg"), 1, (4, 2))
    assert out.shape == (4, 2, 1) and out[0, 1, 0] > 200  # the top-left pixel moved to the top-right


def _photo(width: int, height: int) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], -1).astype(np.uint8)
    return Image.fromarray(rgb)


def test_large_jpeg_is_decoded_at_a_reduced_scale_close_to_the_full_decode(tmp_path):
    _photo(400, 300).save(tmp_path / "big.jpg", quality=95)
    path = str(tmp_path / "big.jpg")
    assert decode_full(path, 3).shape == (300, 400, 3)
    assert decode_full(path, 3, at_least=32).shape == (38, 50, 3)  # 1/8: both sides stay >= 32
    assert decode_full(path, 1, at_least=100).shape == (150, 200)  # 1/2
    reduced = read_image(path, 3, (32, 32)).astype(int)
    full = cv2.resize(decode_full(path, 3), (32, 32), interpolation=cv2.INTER_AREA).astype(int)
    assert np.abs(reduced - full).mean() < 2.0  # of 255: a different, equally valid downscale


def test_reduced_jpeg_decoding_keeps_exif_rotation_and_size(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated: 300 wide, 400 high
    _photo(400, 300).save(tmp_path / "rot.jpg", exif=exif, quality=95)
    assert decode_full(str(tmp_path / "rot.jpg"), 3, at_least=64).shape == (100, 75, 3)  # 1/4, rotated
    assert read_image(str(tmp_path / "rot.jpg"), 3, (64, 48)).shape == (64, 48, 3)


def test_cmyk_and_palette_images_are_converted(tmp_path):
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    Image.new("RGB", (4, 4), (0, 0, 255)).convert("P").save(tmp_path / "pal.png")
    assert read_image(str(tmp_path / "cmyk.jpg"), 3, (4, 4))[0, 0, 0] > 200  # red
    assert read_image(str(tmp_path / "pal.png"), 3, (4, 4))[0, 0].tolist() == [0, 0, 255]


@pytest.mark.parametrize("name,content,reason", [
    ("trunc.png", "truncate", "truncated"), ("empty.png", b"", "empty file"),
    ("text.png", b"hello, not an image", "not an image"), ("bomb.png", "bomb", "decompression bomb")])
def test_bad_files_give_their_reason(tmp_path, name, content, reason):
    path = tmp_path / name
    if content == "truncate":
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(path)
        path.write_bytes(path.read_bytes()[:200])
    elif content == "bomb":
        png_header_only(path, 30000, 30000)
    else:
        path.write_bytes(content)
    with pytest.raises(ImageReadError, match=reason):
        read_image(str(path), 1, (8, 8))


def add_bad_files(folder):
    """One of each kind of bad file, in class 'left'."""
    (folder / "left" / "empty.png").write_bytes(b"")
    (folder / "left" / "text.jpg").write_bytes(b"not a jpeg")
    (folder / "left" / "._resource.png").write_bytes(b"\x00\x05\x16\x07")
    (folder / "left" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    png_header_only(folder / "left" / "bomb.png", 30000, 30000)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(folder / "left" / "t.png")
    (folder / "left" / "trunc.png").write_bytes((folder / "left" / "t.png").read_bytes()[:200])
    os.remove(folder / "left" / "t.png")


@pytest.mark.parametrize("cache", ["ram", "none"])
def test_training_skips_and_names_every_bad_file(tiny_data, tmp_path, capsys, cache):
    add_bad_files(tiny_data / "train")
    os.makedirs(tiny_data / "train" / "__MACOSX")
    cfg = tiny_cfg(tiny_data, tmp_path / "o", epochs=1, cache=cache)
    assert train_main(cfg_overrides(cfg)) == 0
    out = capsys.readouterr().out
    for name, reason in (("empty.png", "empty file"), ("text.jpg", "not an image"), ("bomb.png", "decompression"),
                         ("trunc.png", "truncated"), ("._resource.png", "macOS metadata"),
                         (".DS_Store", "macOS metadata")):
        assert any(name in line and reason in line for line in out.splitlines()), name
    assert "skipped 2 file(s) in all" in out  # the up-front scan: ._resource.png and .DS_Store
    if cache == "ram":
        assert "skipped 4 file(s) in all" in out  # decoding: empty, text, bomb, truncated
    assert "train_acc" in out


def test_layout_errors_from_the_cli(tiny_data, tmp_path, capsys):
    os.makedirs(tiny_data / "train" / "empty_class")
    assert train_main(cfg_overrides(tiny_cfg(tiny_data, tmp_path / "o"))) == 2
    assert "empty_class has no images" in capsys.readouterr().err


# ----------------------------------------------------------------------------- audit
def test_audit_counts_unreadable_duplicates_and_leakage(tiny_data, tmp_path):
    left = tiny_data / "train" / "left"
    (left / "copy.png").write_bytes((left / "000.png").read_bytes())
    Image.open(left / "001.png").save(tiny_data / "test" / "middle" / "leak.bmp")  # re-encoded copy
    (left / "empty.png").write_bytes(b"")
    report = audit(find_splits(str(tiny_data)))
    assert report["splits"]["train"]["per_class"] == {"left": 18, "middle": 16, "right": 16}
    assert report["splits"]["train"]["imbalance_ratio"] == pytest.approx(18 / 16, abs=1e-3)
    assert [u["reason"] for u in report["unreadable"]] == ["empty file"]
    within = [sorted(os.path.basename(p) for p in d["paths"]) for d in report["duplicates_within"]]
    assert ["000.png", "copy.png"] in within
    assert any(e["splits"] == ["test", "train"] and any(p.endswith("leak.bmp") for p in e["paths"])
               for e in report["leakage"])


def test_audit_command_and_train_preflight(tiny_data, tmp_path):
    result = subprocess.run([sys.executable, "-m", "easycls.audit", str(tiny_data), "--out", str(tmp_path / "a")],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0 and "0 unreadable" in result.stdout + result.stderr
    assert "| train | 48 | 3 | 1.0 |" in (tmp_path / "a" / "audit.md").read_text()
    assert train_main(cfg_overrides(tiny_cfg(tiny_data, tmp_path / "o", epochs=1, audit=True))) == 0
    report = json.load(open(tmp_path / "o" / "audit" / "audit.json"))
    assert set(report["splits"]) == {"train", "val", "test"}


# ----------------------------------------------------------------------------- resume
def resumable_cfg(data, out, epochs=8):
    return tiny_cfg(data, out, epochs=epochs, augment="light", optimizer="AdamW", scheduler="cosine",
                    dropout=0.1, early_stop_patient=0)


def wait_for_rows(path, rows, proc, timeout=120):
    start = time.time()
    while time.time() - start < timeout and proc.poll() is None:
        if os.path.exists(path) and len(open(path).read().strip().splitlines()) - 1 >= rows:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} never reached {rows} rows")


def test_kill_9_then_resume_equals_an_uninterrupted_run(tiny_data, tmp_path):
    full = resumable_cfg(tiny_data, tmp_path / "full")
    assert run_script("train.py", *cfg_overrides(full)).returncode == 0
    killed = resumable_cfg(tiny_data, tmp_path / "killed")
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *cfg_overrides(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_rows(tmp_path / "killed" / "results.csv", 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before_kill = torch.load(tmp_path / "killed" / "last.pth", weights_only=True)["epoch"] + 1
    assert done_before_kill < killed["epochs"]
    result = run_script("train.py", *cfg_overrides({**killed, "resume": True}))
    assert result.returncode == 0, result.stderr
    assert f"resumed from {tmp_path / 'killed' / 'last.pth'} at epoch {done_before_kill + 1}" in result.stdout
    a = torch.load(tmp_path / "full" / "last.pth", weights_only=True)
    b = torch.load(tmp_path / "killed" / "last.pth", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert [r["lr"] for r in a["history"]] == [r["lr"] for r in b["history"]]
    assert [r["val_loss"] for r in a["history"]] == [r["val_loss"] for r in b["history"]]
    assert pd.read_csv(tmp_path / "killed" / "results.csv")["epoch"].tolist() == list(range(1, 9))


def test_resume_a_finished_run_does_nothing(tiny_data, tmp_path, capsys):
    cfg = resumable_cfg(tiny_data, tmp_path / "o", epochs=2)
    assert train_main(cfg_overrides(cfg)) == 0
    before = os.path.getmtime(tmp_path / "o" / "last.pth")
    capsys.readouterr()
    assert train_main(cfg_overrides({**cfg, "resume": True})) == 0
    assert "already finished after epoch 2" in capsys.readouterr().out
    assert os.path.getmtime(tmp_path / "o" / "last.pth") == before


@pytest.mark.parametrize("change,fragment", [
    ({"model_name": "test_efficientnet"}, "model_name: 'test_resnet' -> 'test_efficientnet'"),
    ({"target_img_size": [20, 20]}, "img_size: [16, 16] -> [20, 20]"),
])
def test_resume_with_a_changed_setup_is_refused(tiny_data, tmp_path, capsys, change, fragment):
    cfg = resumable_cfg(tiny_data, tmp_path / "o", epochs=1)
    assert train_main(cfg_overrides(cfg)) == 0
    capsys.readouterr()
    assert train_main(cfg_overrides({**cfg, **change, "epochs": 3, "resume": True})) == 2
    assert "cannot resume from" in capsys.readouterr().err.strip() and fragment


def test_resume_with_changed_classes_is_refused(tiny_data, tmp_path, capsys):
    cfg = resumable_cfg(tiny_data, tmp_path / "o", epochs=1)
    assert train_main(cfg_overrides(cfg)) == 0
    os.rename(tiny_data / "train" / "right", tiny_data / "train" / "zright")
    os.rename(tiny_data / "val" / "right", tiny_data / "val" / "zright")
    capsys.readouterr()
    assert train_main(cfg_overrides({**cfg, "epochs": 3, "resume": True})) == 2
    assert "class_names: ['left', 'middle', 'right'] -> ['left', 'middle', 'zright']" in capsys.readouterr().err


def test_ctrl_c_saves_interrupted_checkpoint_and_resumes(tiny_data, tmp_path):
    cfg = resumable_cfg(tiny_data, tmp_path / "o", epochs=40)
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *cfg_overrides(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_rows(tmp_path / "o" / "results.csv", 1, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted during epoch" in out and os.path.exists(tmp_path / "o" / "interrupted.pth")
    state = torch.load(tmp_path / "o" / "interrupted.pth", weights_only=True)
    assert state["interrupted"] and state["epoch"] + 1 == len(state["history"])
    result = run_script("train.py", *cfg_overrides({**cfg, "epochs": state["epoch"] + 3, "resume": True}))
    assert result.returncode == 0, result.stderr
    assert "interrupted.pth" in result.stdout and not os.path.exists(tmp_path / "o" / "interrupted.pth")


# ----------------------------------------------------------------------------- checkpoint files
def test_crash_or_full_disk_during_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = str(tmp_path / "last.pth")
    save_checkpoint({"w": torch.ones(3)}, path)

    def crash(tmp):
        open(tmp, "wb").write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    with pytest.raises(CheckpointError, match="could not write .*last.pth: No space left on device; the previous"):
        atomic_write(path, crash)
    assert torch.equal(load_checkpoint(path)["w"], torch.ones(3))
    assert os.listdir(tmp_path) == ["last.pth"]  # no temp file left behind


def test_truncated_last_pth_is_a_one_line_error(tiny_data, tmp_path):
    cfg = resumable_cfg(tiny_data, tmp_path / "o", epochs=1)
    assert train_main(cfg_overrides(cfg)) == 0
    last = tmp_path / "o" / "last.pth"
    last.write_bytes(last.read_bytes()[:1000])
    result = run_script("train.py", *cfg_overrides({**cfg, "epochs": 2, "resume": True}))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and f"{last} is damaged or truncated" in result.stderr


# ----------------------------------------------------------------------------- security
class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def test_code_in_a_checkpoint_never_runs(tiny_data, tmp_path, capsys):
    marker = tmp_path / "MARKER"
    evil = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "payload": Evil(str(marker))}, evil)
    cfg = resumable_cfg(tiny_data, tmp_path / "o", epochs=1)
    calls = [(train_main, {"pretrained": str(evil)}), (train_main, {"resume": str(evil)}),
             (evaluate_main, {"model_path": str(evil), "eval_path": str(tiny_data / "test")}),
             (predict_main, {"model_path": str(evil)})]
    for command, extra in calls:
        capsys.readouterr()
        assert command(cfg_overrides({**cfg, **extra})) == 2
        assert f"refusing to load {evil}" in capsys.readouterr().err
    assert not marker.exists()


def test_safetensors_pair_evaluates_like_the_pth(tiny_data, tmp_path):
    cfg = resumable_cfg(tiny_data, tmp_path / "o", epochs=2)
    assert train_main(cfg_overrides(cfg)) == 0
    results = []
    for name in ("best.pth", "best.safetensors"):
        extra = {"model_path": str(tmp_path / "o" / name), "eval_path": str(tiny_data / "test")}
        assert evaluate_main(cfg_overrides({**cfg, **extra})) == 0
        results.append(json.load(open(tmp_path / "o" / "eval" / "metrics.json")))
    assert results[0] == results[1]
    assert json.load(open(tmp_path / "o" / "best.json"))["class_names"] == ["left", "middle", "right"]


# ----------------------------------------------------------------------------- numerics
class NanLoss(torch.nn.Module):
    def forward(self, logits, target):
        return torch.nn.functional.cross_entropy(logits, target) * float("nan")


def make_runner(tiny_data, tmp_path, **extra):
    from easycls import build
    from easycls.config import defaults
    cfg = {**defaults(), **tiny_cfg(tiny_data, tmp_path / "o", **extra)}
    train_loader, val_loader, classes = build.build_train_loaders(cfg, build.DistInfo())
    model, meta = build.build_model(cfg, classes)
    return build.ModelRunner(model, meta, cfg, torch.device("cpu"), loss_fn=NanLoss()), train_loader, val_loader


def test_non_finite_loss_without_amp_stops_naming_epoch_and_step(tiny_data, tmp_path):
    runner, train_loader, val_loader = make_runner(tiny_data, tmp_path, batch_size=8)
    before = {k: v.clone() for k, v in runner.module.state_dict().items()}
    with pytest.raises(TrainingError, match=r"not finite .* at epoch 1, step 3, 3 steps in a row"):
        runner.train(train_loader, val_loader)
    after = runner.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if "running" not in k and "num_batches" not in k)
    assert not os.path.exists(tmp_path / "o" / "last.pth")


def test_gradscaler_skips_steps_with_non_finite_loss(tiny_data, tmp_path):
    """The AMP path (fp16 + GradScaler): a NaN loss makes the scaler skip the step instead of stopping."""
    runner, train_loader, _ = make_runner(tiny_data, tmp_path, batch_size=8)
    runner.amp_dtype = torch.bfloat16  # CPU autocast; fp16 autocast is CUDA's
    runner.scaler = torch.amp.GradScaler("cpu", enabled=True)
    runner._ensure_training_parts()
    weights = {k: v.clone() for k, v in runner.module.named_parameters()}
    runner.onTrainStep(train_loader, 0)  # no error although every loss is NaN
    assert all(torch.equal(weights[k], v) for k, v in runner.module.named_parameters())
    assert runner.scaler.get_scale() < 2.0 ** 16  # the scaler backed off at every skipped step


# ----------------------------------------------------------------------------- predict at scale
@pytest.fixture(scope="module")
def many_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("many")
    rng = np.random.default_rng(0)
    for i in range(20000):
        sub = root / "big" / f"{i // 1000:02d}"
        if i % 1000 == 0:
            os.makedirs(sub)
        cv2.imwrite(str(sub / f"{i:05d}.png"), rng.integers(0, 255, (8, 8), dtype=np.uint8))
    return root


def predict_rss(cfg_path, folder, out):
    """Peak RSS (MB) of predict.py over ``folder``."""
    code = ("import resource, sys; sys.argv = ['predict.py'] + sys.argv[1:]; from easycls.cli import predict_main; "
            "code = predict_main(); print('RSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); "
            "sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", code, "--config", cfg_path, f"test_path={str(folder)!r}",
                             f"save_dir={str(out)!r}"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return int(result.stdout.split("RSS")[-1]) / 1024


def test_predict_memory_stays_flat_and_a_kill_leaves_whole_rows(many_images, tiny_data, tmp_path):
    cfg = tiny_cfg(tiny_data, tmp_path / "o", epochs=1, target_img_size=[8, 8], test_batch_size=64)
    assert train_main(cfg_overrides(cfg)) == 0
    config = write_config(tmp_path / "cfg.py", cfg)
    small = predict_rss(config, many_images / "big" / "00", tmp_path / "o")
    large = predict_rss(config, many_images / "big", tmp_path / "o")
    assert large <= 1.2 * small, (small, large)
    assert len(pd.read_csv(tmp_path / "o" / "pre.csv")) == 20000
    args = [f"test_path={str(many_images / 'big')!r}", f"save_dir={str(tmp_path / 'k')!r}", "test_batch_size=16",
            f"model_path={str(tmp_path / 'o' / 'best.pth')!r}"]
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "predict.py"), "--config", config, *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pre = tmp_path / "k" / "pre.csv"
    start = time.time()
    while (not pre.exists() or pre.stat().st_size < 20000) and time.time() - start < 60:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    text = pre.read_text()
    assert text.endswith("\n") and 100 < len(text.splitlines()) < 20001
    rows = pd.read_csv(pre)
    assert rows["status"].eq("ok").all() and rows["label"].notna().all()
