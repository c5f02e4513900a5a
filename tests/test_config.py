import pytest

from easycls.config.loading import load_config, parse_override
from easycls.config.schema import SCHEMA
from easycls.core.errors import ConfigError, SpecError

SEED_EXAMPLE = dict(model_name="mobilenetv3", GPU_ID="0", class_number=10, random_seed=42, cfg_verbose=True,
                    num_workers=4, train_path="./data/train", val_path="./data/val", pretrained="",
                    try_to_train_items=0, save_best_only=True, save_one_only=True, save_dir="output/",
                    metrics=["acc"], loss="CE", show_heatmap=False, show_data=False, target_img_size=[224, 224],
                    learning_rate=0.001, batch_size=64, epochs=100, optimizer="Adam", scheduler="default-0.1-3",
                    warmup_epoch=0, weight_decay=0, k_flod=5, early_stop_patient=7, use_distill=0, label_smooth=0,
                    class_weight=None, clip_gradient=0, freeze_nonlinear_epoch=0, mixup=False, cutmix=False,
                    sample_weights=None, dropout=0.5, model_path="output/best.pth", eval_path="./data/test",
                    test_path="./data/test", TTA=False, merge=False, test_batch_size=1)


def test_seed_example_config_loads(tmp_path):
    path = tmp_path / "config.py"
    path.write_text(f"cfg = {SEED_EXAMPLE!r}\n")
    cfg = load_config(str(path))
    assert cfg["model_name"] == "mobilenetv3" and cfg["scheduler"] == "default-0.1-3"
    assert cfg["use_distill"] == 0 and cfg["mixup"] is False  # every seed switch is a real key


@pytest.mark.parametrize("text,key,value", [
    ("epochs=5", "epochs", 5), ("learning_rate=1e-3", "learning_rate", 0.001),
    ("target_img_size=[28,28]", "target_img_size", [28, 28]), ("model_name=resnet18", "model_name", "resnet18"),
    ("TTA=True", "TTA", True), ("class_weight=None", "class_weight", None),
    ("scheduler=multi-30,60-0.1", "scheduler", "multi-30,60-0.1")])
def test_override_parsing(text, key, value):
    assert parse_override(text) == (key, value)


def test_unknown_key_suggests_closest():
    with pytest.raises(ConfigError, match="unknown config key 'learning_rat'; did you mean 'learning_rate'"):
        load_config(overrides=["learning_rat=0.1"])


@pytest.mark.parametrize("override,fragment", [
    ("epochs=0", "'epochs': 0; allowed: an integer >= 1"),
    ("channels=2", "'channels': 2; allowed: 1 (grayscale) or 3"),
    ("epochs=ten", "'epochs': 'ten'"),
    ("dropout=1.5", "'dropout': 1.5"),
    ("cache=disk", "'cache': 'disk'"),
])
def test_bad_value_names_key_value_and_allowed(override, fragment):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    assert fragment in str(info.value)


def test_bad_spec_in_config_is_a_spec_error():
    with pytest.raises(SpecError, match="unknown scheduler 'sgdrr'.*Valid:.*SGDR-<T0:int>"):
        load_config(overrides=["scheduler=sgdrr-5-2"])


def test_relations_are_checked():
    with pytest.raises(ConfigError, match="class_weight has 2 values but class_number is 10"):
        load_config(overrides=["class_number=10", "class_weight=[1.0, 2.0]"])
    with pytest.raises(ConfigError, match="val_fold=5 must be below k_fold=5"):
        load_config(overrides=["val_fold=5"])


def test_every_key_is_in_the_root_config():
    import os
    root = os.path.dirname(os.path.dirname(__file__))
    config_text = open(os.path.join(root, "config.py")).read()
    assert [key for key in SCHEMA if f"    {key}=" not in config_text] == []  # docs/config.md: tests/test_docs.py


# ----------------------------------------------------------------------------- _base_ inheritance
def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def test_base_chains_and_lists_merge_with_later_winning(tmp_path):
    write(tmp_path / "bases" / "root.py", "cfg = dict(epochs=3, batch_size=8, learning_rate=0.1)\n")
    write(tmp_path / "bases" / "mid.py", "_base_ = 'root.py'\ncfg = dict(batch_size=16)\n")
    write(tmp_path / "bases" / "other.py", "cfg = dict(batch_size=32, dropout=0.2)\n")
    child = write(tmp_path / "child.py", "_base_ = ['bases/mid.py', 'bases/other.py']\ncfg = dict(dropout=0.1)\n")
    cfg = load_config(child, ["learning_rate=0.5"])
    assert (cfg["epochs"], cfg["batch_size"], cfg["dropout"], cfg["learning_rate"]) == (3, 32, 0.1, 0.5)


def test_a_child_may_only_name_its_base(tmp_path):
    write(tmp_path / "base.py", "cfg = dict(epochs=4)\n")
    assert load_config(write(tmp_path / "child.py", "_base_ = 'base.py'\n"))["epochs"] == 4


@pytest.mark.parametrize("files,message", [
    ({"a.py": "_base_ = 'b.py'\ncfg = {}", "b.py": "_base_ = 'a.py'\ncfg = {}"}, "config _base_ cycle: "),
    ({"a.py": "_base_ = 'gone.py'\ncfg = {}"}, "config file not found: "),
    ({"a.py": "_base_ = 3\ncfg = {}"}, "_base_ must be a file name or a list"),
    ({"a.py": "_base_ = 'b.py'\ncfg = {}", "b.py": "cfg = dict(lerning_rate=1)"}, "unknown config key 'lerning_rate'"),
])
def test_base_errors_are_one_line(tmp_path, files, message):
    for name, text in files.items():
        write(tmp_path / name, text + "\n")
    with pytest.raises(ConfigError, match=message) as info:
        load_config(str(tmp_path / "a.py"))
    assert "\n" not in str(info.value)


def test_shipped_configs_with_a_base_load():
    import os
    root = os.path.dirname(os.path.dirname(__file__))
    cfg = load_config(os.path.join(root, "configs", "fashion_mnist_ema.py"))
    assert cfg["ema"] is True and cfg["train_path"] == "data/fashion_mnist/train"


@pytest.mark.parametrize("given,text", [("GPU_ID=1", "1"), ("GPU_ID=0,1", "0,1"), ("GPU_ID=cpu", "cpu"),
                                        ("GPU_ID='2'", "2")])
def test_gpu_id_from_the_command_line_is_text(given, text):
    assert load_config(None, [given])["GPU_ID"] == text


@pytest.mark.parametrize("value", ["gpu", "cuda:0", "-1", "0;1"])
def test_gpu_id_that_names_no_device_is_an_error(value):
    with pytest.raises(ConfigError, match=r"bad value for 'GPU_ID'.*a CUDA device index such as '0'.*or 'cpu'"):
        load_config(None, [f"GPU_ID={value!r}"])
