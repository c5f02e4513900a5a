"""easycls configuration: edit the values, then run `python train.py`, `python evaluate.py`, `python predict.py`.

Any key can also be overridden on the command line as key=value (parsed as a Python literal), for example
`python train.py epochs=5 model_name=resnet18`. docs/config.md documents every key; docs/specs.md the spec
strings. Later commands continue a run with its resolved config: `python predict.py --config output/config.json`.
"""
cfg = dict(
    # --- global
    model_name="resnet10t",  # timm name, 'tv:<torchvision name>', or an alias such as 'mobilenetv3';
                             # 'auto' (with time_budget): the largest candidate that fits the budget (docs/budget.md)
    GPU_ID="0",                  # CUDA device index as a string; 'cpu' forces the CPU
    class_number=None,           # None = the number of class folders in train_path; a number is checked against it
    class_names=[],              # [] = every sub-folder of train_path, sorted; or a list fixing names and order
    random_seed=42,              # seeds weights, shuffling and augmentation
    cfg_verbose=True,            # print the resolved config at the start of training
    num_workers=2,               # decoding threads (RAM cache, GPU prediction) or DataLoader workers (streaming)

    # --- data (class folders: train_path/<class>/<image>)
    train_path="data/digits/train",  # the built-in digits data is written here on first use
    val_path="data/digits/val",      # '' = k-fold cross-validation on train_path (see k_fold)
    test_path="data/digits/test",    # predict.py labels every image under this folder
    eval_path="",                # labelled folder for evaluate.py; '' = test_path
    k_fold=5,                    # number of folds when val_path is '' (the old spelling k_flod works too)
    val_fold=None,               # None = train folds start_fold..k_fold-1 into save_dir/fold{i}; N = fold N only
    start_fold=0,                # the first fold to train (continue a stopped cross-validation)
    target_img_size=[32, 32],    # [height, width] the images are resized to
    channels=1,                  # 1 = grayscale, 3 = RGB (any input is converted)
    mean=None,                   # None = the model's normalisation; or one float per channel
    std=None,                    # None = the model's normalisation; or one float per channel
    augment="light",             # random affine per image: 'none', 'shift' (8%), 'light' (+10 deg, 10% zoom), 'strong';
                                 # or random ops per image: 'randaugment' (2 ops), 'trivialaugment' (1 op, any strength)
    random_erasing=0.0,          # chance each training image gets a rectangle of random pixels (timm RandomErasing)
    hflip=False,                 # random horizontal flips (off for digits and text)
    mixup=False,                 # False, True (alpha 0.8) or an alpha: blend pairs of images and their labels
    cutmix=False,                # False, True (alpha 1.0) or an alpha: paste a patch of one image into another
    mixup_prob=1.0,              # share of batches mixed
    mixup_switch_prob=0.5,       # with both on: the chance a batch uses cutmix instead of mixup
    show_data=False,             # save_dir/data_preview.png: the first training batch as the network sees it
    try_to_train_items=0,        # 0 = all images; N = use N train and N val images (smoke runs)
    cache="auto",                # 'auto': decode once into RAM when it fits cache_mb; 'ram'; 'none' (stream)
    cache_mb=4096,               # RAM budget for decoded images, in MB
    label_type="DIR",            # 'DIR' = labels from the class folders; 'CSV' = from label_path
    label_path="",               # CSV of image_id,label[,split] (ids relative to train_path) for label_type='CSV';
                                 # multi-label: image_id,labels[,split] ('cat|outdoor') or image_id,<0/1 per class>
    multi_label=None,            # None = as label_path's form says; True = several labels per image (docs/multilabel.md)
    val_fraction=0.1,            # val_path '': the share held out as val from a labels CSV without a split column,
                                 # or from each k-fold fold's training images (it chooses best.pth, not the fold);
                                 # 0 with a labels CSV = k_fold-fold cross-validation over the CSV instead
    audit=False,                 # check the dataset (counts, unreadable files, duplicates) before training

    # --- model
    pretrained="",               # '' | True (hub weights of model_name) | 'hf-hub:org/name' | 'IMAGENET1K_V1' (tv:)
                                 # | a local .pth/.pt/.safetensors file (state_dict or checkpoint)
    pretrained_key_map={},       # extra {regex: replacement} rules for pretrained key names
    dropout=0.0,                 # dropout before the classifier
    freeze_nonlinear_epoch=0,    # train only the classifier for this many epochs first
    sync_bn=False,               # synchronise BatchNorm across GPUs under torchrun

    # --- training
    learning_rate=0.002,
    batch_size=64,
    epochs=30,                   # with time_budget: the most epochs
    time_budget=0,               # 0 = off; or the whole run's wall time: 600, '90s', '10m', '1.5h' (docs/budget.md)
    budget_warmup=0.05,          # with time_budget: the share of the training time spent warming the LR up
    optimizer="AdamW",           # Adam, AdamW, SGD, AdaBelief, Ranger, ... or any timm optimizer name
    weight_decay=0.01,           # not applied to biases and norm layers
    scheduler="cosine",          # default-0.1-3, step-4-0.8, SGDR-5-2, multi-30,60-0.1, cosine, linear, onecycle-0.3,
                                 # constant; with time_budget: cosine, linear, onecycle or constant, over time
    warmup_epoch=0,              # linear learning-rate warm-up epochs
    loss="CE",                   # CE, Focalloss-2, BCE, ASL-4-0-0.05; multi-label data: CE means BCE
    label_smooth=0.0,            # label smoothing in [0, 1)
    use_distill=0,               # 1 = distil from teacher_path (a checkpoint of this toolkit, same classes)
    teacher_path="",
    distill_alpha=0.5,           # weight of the teacher's term
    distill_temperature=4.0,     # softening temperature
    class_weight=None,           # None, 'balanced' (n / (classes x count)) or one weight per class
    sample_weights=None,         # None, 'balanced' (classes drawn equally often) or a CSV of image_id,weight
    clip_gradient=0,             # 0 = off; else the max gradient norm
    accumulate_steps=1,          # step the optimizer every N batches (effective batch = N x batch_size)
    ema=False,                   # validate, save best.pth and predict with an EMA of the weights (timm ModelEmaV3)
    ema_decay=0.9998,            # EMA decay, reached after a warm-up (short runs average over fewer steps)
    early_stop_patience=7,       # stop after this many epochs without improvement; 0 = never
                                 # (the old spelling early_stop_patient works too)
    monitor="auto",              # metric for best.pth and early stopping: val_acc, val_f1, val_loss, val_mAP;
                                 # 'auto' = val_mAP for multi-label data, else val_acc
    metrics=["acc"],             # add 'F1' to log macro F1 every epoch
    amp="auto",                  # 'auto' (bf16 on GPUs that have it, else fp16; off on CPU), 'fp16', 'bf16', 'off'
    channels_last=True,          # NHWC memory layout: 2-4x faster for MobileNetV3 on CPU, neutral for ResNet
    compile=False,               # torch.compile the model (training step, validation, evaluate and predict)
    custom_hooks=[],             # your hooks: registered names, dict(type='Name', ...) or Hook instances
    tensorboard=False,           # TensorBoard scalars in save_dir/tensorboard (pip install -e ".[tensorboard]")
    lr_find=False,               # True: a learning-rate range test (lr_find.png, a suggestion) instead of training
    resume=False,                # True = continue from save_dir/last.pth; or a checkpoint path

    # --- outputs, evaluation, prediction
    save_dir="output/",
    save_best_only=True,         # False also keeps epoch_NNN.pth every epoch
    save_one_only=True,          # False also keeps best_eNNN_<metric>.pth for every improvement
    model_path="",               # for evaluate/predict/export: '' = save_dir/best.pth; or .pth, .onnx, .pt
    export_format="onnx",        # export.py: 'onnx' (pip install -e ".[onnx]"), 'torchscript' or 'all'
    test_batch_size=256,
    TTA=False,                   # average each prediction with its horizontal flip
    merge=False,                 # evaluate/predict with every save_dir/fold*/best.pth as an ensemble
    show_heatmap=False,          # Grad-CAM overlays in save_dir/heatmaps (pip install -e ".[gradcam]")
    heatmap_max=32,              # how many: misclassified images (evaluate) or first images (predict)
    heatmap_layer="",            # '' = the last convolutional stage with a map >= 4x4; or a module name
    heatmap_class="",            # '' = the predicted class (multi-label: the surest mistake's); or a class name
    calibrate=True,              # fit a temperature on val after each epoch; evaluate/predict/export apply it
    threshold="tuned",           # multi-label: 'tuned' = per-class thresholds tuned on val; or one number such as 0.5
    reject_threshold=0.0,        # 0 = off; else pre.csv marks rows with a lower top probability 'rejected'
    save_probs=False,            # add one probability column per class to pre.csv
    cm_normalize=False,          # row-normalise the confusion-matrix picture
)
