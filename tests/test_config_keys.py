"""Every config key reaches the code that reads it: tiny real runs, with each feature switched on once, record
which keys the library reads from the validated config. A key nothing reads (a dead key) fails here, whatever
strings the source happens to contain."""
import pytest
from conftest import make_tiny_data, tiny_cfg

from easycls import api
from easycls.config.schema import SCHEMA


class ReadKeys(dict):
    """A config that records every key read from it (``cfg[key]`` and ``cfg.get(key)``) into ``read``."""

    def __init__(self, cfg: dict, read: set):
        super().__init__(cfg)
        self.read = read

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)


def write_labels(data, path):
    """A labels CSV (image_id,label, no split column) of the train folder's images."""
    train = data / "train"
    rows = [f"{p.relative_to(train).as_posix()},{p.parent.name}" for p in sorted(train.rglob("*.png"))]
    path.write_text("image_id,label\n" + "\n".join(rows) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def keys_read(tmp_path_factory):
    """The keys read by: a plain run, then evaluate (with heatmaps), predict and export of its model; a CSV-labelled
    run with a held-out share, distillation, EMA, mixing and pretrained weights; a k-fold run of one fold; a run with
    a time budget."""
    root = tmp_path_factory.mktemp("keys")
    data = make_tiny_data(root)
    read = set()
    with pytest.MonkeyPatch.context() as patch:
        make_config = api.make_config
        patch.setattr(api, "make_config", lambda *args, **kwargs: ReadKeys(make_config(*args, **kwargs), read))
        plain = tiny_cfg(data, root / "plain", epochs=1)
        api.train(plain)
        api.evaluate(plain, show_heatmap=True, heatmap_max=2)
        api.predict(plain, save_probs=True)
        api.export(plain, export_format="torchscript")  # reads the same keys as ONNX, in a tenth of the time
        best = str(root / "plain" / "best.pth")
        api.train(tiny_cfg(data, root / "features", epochs=1, label_type="CSV", val_path="", val_fraction=0.25,
                           label_path=write_labels(data, root / "labels.csv"), use_distill=1, teacher_path=best,
                           ema=True, mixup=True, pretrained=best, pretrained_key_map={r"^fc\.": "fc."}))
        api.train(tiny_cfg(data, root / "kfold", epochs=1, val_path="", k_flod=2, start_fold=1))
        api.train(tiny_cfg(data, root / "budget", epochs=1, time_budget="10m", scheduler="cosine"))
    return read


# budget_warmup is read after the probe has copied the config, out of this recorder's sight;
# test_budget.py::test_the_deadline_cuts_the_last_epoch_with_the_rate_at_its_floor fails if it is not read.
@pytest.mark.parametrize("key", [key for key in SCHEMA if key != "budget_warmup"])
def test_every_key_is_read_by_a_run_that_uses_it(keys_read, key):
    assert key in keys_read, f"no run read config key {key!r}"
