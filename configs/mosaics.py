"""Multi-label digits on a CPU: python train.py --config configs/mosaics.py

Make the data first (scikit-learn's real handwritten digits, no download):
    python -m easycls.datasets mosaics data/mosaics
Each 16x16 image is a 2x2 mosaic of 1 to 4 digits and is labelled with the digits present (train.csv: image_id,
labels,split, such as '3|7'). docs/multilabel.md walks through it; docs/benchmarks.md has what this reaches.
"""
cfg = dict(
    model_name="resnet10t_small",  # resnet10t without the stem max-pool, at half width: made for small images
    class_number=10,
    label_type="CSV",
    label_path="data/mosaics/train.csv",  # evaluate.py: label_path=data/mosaics/test.csv eval_path=data/mosaics/test
    train_path="data/mosaics/train",
    val_path="",                 # the val rows come from the split column of train.csv
    test_path="data/mosaics/test",
    save_dir="output/mosaics/",
    target_img_size=[16, 16],    # native: 2x2 cells of 8x8 digits
    channels=1,
    augment="shift",             # digits move within their cell; no flips (a mirrored 2 is no digit)
    batch_size=64,
    learning_rate=0.003,
    optimizer="AdamW",
    scheduler="cosine",
    epochs=10,
    early_stop_patient=0,        # a fixed budget: cosine decays to zero at the last epoch
    loss="BCE",                  # or 'ASL-4-0-0.05'; docs/benchmarks.md compares them
    cfg_verbose=False,
)
