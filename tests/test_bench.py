"""The benchmark's arithmetic: each side's throughput counts the images that side really processed, and the JSON
and the Markdown table report the same figures. A clock that reads one second later at every call makes each
timed chunk last exactly 1 s, so every throughput is an exact image count."""
import json
import tempfile

import pytest

from easycls.bench import throughput


class OneSecondClock:
    """Stands in for the benchmark's ``time``: every ``perf_counter()`` is one second after the previous one."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def bench(tmp_path, monkeypatch, capsys):
    """Run ``python -m easycls.bench`` in-process on generated images; return its JSON, table and stdout."""
    monkeypatch.chdir(tmp_path)  # no data/fashion_mnist here: the benchmark generates its images
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # its generated data and save_dir
    monkeypatch.setattr(throughput, "time", OneSecondClock())

    def run(*argv):
        assert throughput.main(["--model", "test_resnet", "--size", "16", "--workers", "0", "--augment", "none",
                                "--json", str(tmp_path / "bench.json"), *argv]) == 0
        return (json.load(open(tmp_path / "bench.json")), (tmp_path / "bench.md").read_text(),
                capsys.readouterr().out)
    return run


def test_throughput_counts_the_images_of_a_short_batch_not_a_full_one(bench):
    """12 images in batches of 16: one batch of 12 per epoch (too few to drop the last batch). A benchmark that
    counts ``batches x batch_size`` would report 16 images per chunk."""
    data, _, _ = bench("--batch", "16", "--images", "12", "--rounds", "2")
    assert data["train_images_per_epoch"] == 12 and data["predict_images"] == 12
    assert data["e2e_train_ips"] == 12 and data["pure_train_ips"] == 12  # one epoch, one step of 12 images
    assert data["e2e_predict_ips"] == 12 and data["pure_predict_ips"] == 3 * 12  # at least 3 forward passes
    assert data["train_ratio"] == 1.0 and data["predict_ratio"] == pytest.approx(1 / 3)
    assert data["rounds_ips"] == {"pure_train": [12, 12], "e2e_train": [12, 12], "pure_predict": [36, 36],
                                  "e2e_predict": [12, 12]}
    assert data["setup_seconds"] == 1.0 and data["rounds"] == 2


def test_a_dropped_last_batch_is_not_counted_and_the_table_matches_the_json(bench, tmp_path):
    """40 images in batches of 16: training drops the last 8 (a batch of one would break BatchNorm), so an epoch
    trains 32; prediction labels all 40."""
    data, table, out = bench("--batch", "16", "--images", "40", "--rounds", "1")
    assert data["train_images_per_epoch"] == 32 and data["e2e_train_ips"] == 32 and data["pure_train_ips"] == 32
    assert data["predict_images"] == 40 and data["e2e_predict_ips"] == 40 and data["pure_predict_ips"] == 48
    assert (data["model"], data["img_size"], data["batch"], data["device"], data["cache"]) == \
        ("test_resnet", 16, 16, "cpu", "ram")
    assert data["data"].startswith(str(tmp_path)) and data["peak_rss_mb"] > 0 and data["quick"] is False
    lines = table.splitlines()
    assert lines[0].startswith("test_resnet, 16x16, batch 16, cpu (") and "cache ram, workers 0, augment none" in \
        lines[0]
    assert "| train | 32 | 32 | 1.00 |" in lines and "| predict | 48 | 40 | 0.83 |" in lines
    assert lines[-1].startswith("best of 1 alternating rounds; one-time scan + decode 1.0 s; peak RSS ")
    assert out.strip() == table.strip()


def test_quick_mode_is_one_round_of_384_images():
    args = throughput.parse_args(["--quick"])
    assert (args.rounds, args.images) == (1, 384)
