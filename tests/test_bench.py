"""The benchmark's quick mode, as a smoke test: it produces its table and JSON. No timing is asserted."""
import json
import subprocess
import sys


def test_quick_benchmark_writes_json_and_table(tmp_path):
    result = subprocess.run([sys.executable, "-m", "easycls.bench", "--quick", "--model", "test_resnet",
                             "--json", str(tmp_path / "bench.json")], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    data = json.load(open(tmp_path / "bench.json"))
    for key in ("pure_train_ips", "pure_predict_ips", "e2e_train_ips", "e2e_predict_ips", "peak_rss_mb"):
        assert data[key] > 0, key
    assert data["train_ratio"] == data["e2e_train_ips"] / data["pure_train_ips"]
    assert data["predict_ratio"] == data["e2e_predict_ips"] / data["pure_predict_ips"]
    assert data["cache"] == "ram" and data["data"].startswith("/")  # generated images: no dataset here
    table = (tmp_path / "bench.md").read_text()
    assert "| train |" in table and "| predict |" in table and table.strip() == result.stdout.strip()
