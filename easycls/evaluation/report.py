"""``save_dir/report.html``: one self-contained page about a run, written after training and updated by evaluate.

Everything is inline (styles, and pictures as base64 PNG): the file opens offline and can be sent on its own.
It is built from the files the run wrote (config.json, data.json, results.csv, the curves, audit/audit.json,
eval/metrics.json, eval/errors.csv, the reliability diagram and the Grad-CAM overlays), so it shows whatever exists.
"""
import base64
import html
import json
import os
from typing import List, Optional

import cv2
import pandas as pd

from easycls.core import files
from easycls.core.checkpoints import atomic_write
from easycls.core.spellings import clear_names
from easycls.data.images import ImageReadError, read_image

STYLE = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;
color:#222;padding:0 1em}h1{margin-bottom:0}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}.pics img{max-width:48%;margin:.3em}
.errors figure{display:inline-block;margin:.3em;text-align:center;font-size:.8em}.errors img{width:96px;
image-rendering:pixelated}.muted{color:#777}code{background:#f4f4f4;padding:0 .2em}"""
WORST = 12


def _read_json(path: str) -> Optional[dict]:
    if not os.path.isfile(path):
        return None
    with open(path) as handle:
        return json.load(handle)


def _img(path: str, alt: str, width: Optional[int] = None) -> str:
    """An <img> with the PNG inline, or nothing when the file is missing."""
    if not os.path.isfile(path):
        return ""
    with open(path, "rb") as handle:
        data = base64.b64encode(handle.read()).decode()
    size = f' width="{width}"' if width else ""
    return f'<img alt="{html.escape(alt)}"{size} src="data:image/png;base64,{data}">'


def _thumbnail(path: str) -> str:
    try:
        rgb = read_image(path, 3, (96, 96))
    except (ImageReadError, OSError):
        return '<span class="muted">(unreadable)</span>'
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return f'<img alt="{html.escape(os.path.basename(path))}" src="data:image/png;base64,' \
           f'{base64.b64encode(png.tobytes()).decode()}">'


def _table(frame: pd.DataFrame, digits: int = 4) -> str:
    return frame.to_html(index=False, float_format=lambda v: f"{v:.{digits}f}", border=0, escape=True)


def _summary(save_dir: str, cfg: dict) -> List[str]:
    meta_rows = [("model", cfg.get("model_name")), ("classes", cfg.get("class_number")),
                 ("image size", cfg.get("target_img_size")), ("channels", cfg.get("channels")),
                 ("train path", cfg.get("train_path")), ("val path", cfg.get("val_path") or "(k-fold)")]
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in meta_rows)
    out = [f"<h2>Run</h2><table>{rows}</table>"]
    results = os.path.join(save_dir, files.RESULTS)
    if os.path.isfile(results):
        frame = pd.read_csv(results)
        best = cfg.get("monitor", "val_acc")
        pick = frame[best].idxmin() if best == "val_loss" else frame[best].idxmax()
        out.append(f"<p>{len(frame)} epochs in {frame['seconds'].sum():.0f} s of training; best epoch "
                   f"{int(frame.loc[pick, 'epoch'])}: {best} {frame.loc[pick, best]:.4f}.</p>")
        if "elapsed" in frame:
            out.append(f"<p>Time budget {html.escape(str(cfg.get('time_budget')))}: the last epoch ended "
                       f"{frame['elapsed'].iloc[-1]:.1f} s after the start, at a learning rate of "
                       f"{frame['lr_end'].iloc[-1]:.3g} (planned and actual learning rate below).</p>")
        out.append('<div class="pics">' + _img(os.path.join(save_dir, files.LOSS_PLOT), "loss curves")
                   + _img(os.path.join(save_dir, files.ACC_PLOT), "accuracy curves")
                   + _img(os.path.join(save_dir, files.LR_PLOT), "learning rate against time") + "</div>")
        out.append("<details><summary>every epoch</summary>" + _table(frame) + "</details>")
    return out


def _data(save_dir: str) -> List[str]:
    data = _read_json(os.path.join(save_dir, files.DATA_JSON))
    out = []
    if data:
        counts = pd.DataFrame(data["class_counts"]).fillna(0).astype(int).rename_axis("class").reset_index()
        out += ["<h2>Data</h2>", _table(counts)] + _lacking(data.get("missing_classes", {}))
    audit = _read_json(os.path.join(save_dir, "audit", "audit.json"))
    if audit:
        out.append(f"<p>Audit: {len(audit['unreadable'])} unreadable files, {len(audit['duplicates_within'])} "
                   f"duplicate groups within splits, {len(audit['leakage'])} across splits (leakage).</p>")
        out += _lacking(audit.get("missing_classes", {}))
    return out


def _lacking(missing: dict) -> List[str]:
    return [f"<p><b>{html.escape(split)} has no images of {html.escape(', '.join(names))}.</b></p>"
            for split, names in missing.items() if names]


def _evaluation(save_dir: str) -> List[str]:
    eval_dir = os.path.join(save_dir, files.EVAL_DIR)
    metrics = _read_json(os.path.join(eval_dir, "metrics.json"))
    if not metrics:
        return ["<h2>Evaluation</h2><p class='muted'>Not evaluated yet: run <code>python evaluate.py</code>.</p>"]
    if metrics.get("multi_label"):
        return _multilabel_evaluation(eval_dir, metrics) + _errors(save_dir)
    out = [f"<h2>Evaluation</h2><p>{metrics['n_images']} images of <code>{html.escape(metrics.get('path', ''))}"
           f"</code>: accuracy <b>{metrics['accuracy']:.4f}</b>, macro F1 {metrics['macro']['f1']:.4f}"
           f" ({metrics.get('seconds', 0):.1f} s).</p>" + _scored_with(metrics),
           _table(pd.DataFrame(metrics["per_class"]))]
    if "ece" in metrics:
        out.append(f"<h2>Calibration</h2><p>Temperature {metrics['temperature']:.3f}; expected calibration error "
                   f"{metrics['ece_uncalibrated']:.4f} without it, {metrics['ece']:.4f} with it.</p>")
    out.append('<div class="pics">' + _img(os.path.join(eval_dir, "confusion_matrix.png"), "confusion matrix")
               + _img(os.path.join(eval_dir, "reliability.png"), "reliability diagram") + "</div>")
    return out + _errors(save_dir)


def _scored_with(metrics: dict) -> str:
    """What evaluate used: the model file(s), TTA and calibration (the training config below may say otherwise)."""
    if "model_path" not in metrics:
        return ""
    models = metrics["model_path"] if isinstance(metrics["model_path"], list) else [metrics["model_path"]]
    calibration = "off"
    if metrics.get("calibrate"):
        calibration = f"temperature {metrics['temperature']:.3f}" if "temperature" in metrics else "on"
    return (f"<p>Model {', '.join(f'<code>{html.escape(str(m))}</code>' for m in models)}; TTA "
            f"{'on' if metrics.get('TTA') else 'off'}; calibration {calibration}.</p>")


def _multilabel_evaluation(eval_dir: str, metrics: dict) -> List[str]:
    """A multi-label model's scores: mAP, samples-F1, exact match, Hamming loss, OF1 and CF1, per class, PR curves."""
    m_ap = "n/a" if metrics["mAP"] is None else f"{metrics['mAP']:.4f}"
    out = [f"<h2>Evaluation</h2><p>{metrics['n_images']} images of <code>{html.escape(metrics.get('path', ''))}"
           f"</code> ({metrics['labels_per_image']:.2f} labels per image): mAP <b>{m_ap}</b>, samples-F1 <b>"
           f"{metrics['samples_f1']:.4f}</b>, exact match {metrics['exact_match']:.4f}, Hamming loss "
           f"{metrics['hamming_loss']:.4f}, micro F1 (OF1) {metrics['micro']['f1']:.4f}, macro F1 (CF1) "
           f"{metrics['macro']['f1']:.4f}; thresholds: {html.escape(str(metrics.get('threshold', 'tuned')))}.</p>",
           _table(pd.DataFrame(metrics["per_class"]))]
    if "ece" in metrics:
        out.append(f"<h2>Calibration</h2><p>Temperature {metrics['temperature']:.3f}; per-slot expected calibration "
                   f"error {metrics['ece_uncalibrated']:.4f} without it, {metrics['ece']:.4f} with it.</p>")
    return out + ['<div class="pics">' + _img(os.path.join(eval_dir, "pr_curves.png"), "precision-recall curves")
                  + "</div>"]


def _errors(save_dir: str) -> List[str]:
    path = os.path.join(save_dir, files.EVAL_DIR, "errors.csv")
    if not os.path.isfile(path):
        return []
    worst = pd.read_csv(path).head(WORST)
    if worst.empty:
        return ["<h2>Worst errors</h2><p>None: every image was classified correctly.</p>"]
    heat_dir = os.path.join(save_dir, files.HEATMAPS_DIR)
    overlays = sorted(os.listdir(heat_dir)) if os.path.isdir(heat_dir) else []
    figures = []
    for rank, row in enumerate(worst.itertuples()):
        heat = [n for n in overlays if n.startswith(f"wrong_{rank:03d}_")]
        picture = _thumbnail(row.path) + (_img(os.path.join(heat_dir, heat[0]), "Grad-CAM", 96) if heat else "")
        true, predicted = ("(none)" if pd.isna(v) or v == "" else str(v) for v in (row.true, row.predicted))
        figures.append(f"<figure>{picture}<figcaption>{html.escape(true)} taken for {html.escape(predicted)} "
                       f"({row.confidence:.2f})</figcaption></figure>")
    return [f"<h2>Worst errors</h2><p>The {len(worst)} most confident mistakes" +
            (" with their Grad-CAM heatmaps" if os.path.isdir(heat_dir) else "") + ".</p>",
            '<div class="errors">' + "".join(figures) + "</div>"]


def write_report(save_dir: str) -> str:
    """Write ``save_dir/report.html`` from the run's files; return its path."""
    cfg = clear_names(_read_json(os.path.join(save_dir, files.CONFIG_JSON)) or {}, files.CONFIG_JSON)
    body = _summary(save_dir, cfg) + _data(save_dir) + _evaluation(save_dir)
    config = html.escape(json.dumps(cfg, indent=1))
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>easycls run: "
            f"{html.escape(str(cfg.get('model_name', '')))}</title><style>{STYLE}</style></head><body>"
            f"<h1>easycls run report</h1><p class='muted'>{html.escape(os.path.abspath(save_dir))}</p>"
            + "".join(body) + "<h2>Config</h2><details><summary>config.json (training's; evaluate's model, TTA and "
            f"calibration are above)</summary><pre>{config}</pre></details>"
            "</body></html>")
    path = os.path.join(save_dir, files.REPORT)

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(page)
    atomic_write(path, write)
    return path
