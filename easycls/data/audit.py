"""Dataset audit: class counts and imbalance, unreadable files, and exact duplicates within and across splits.

    python -m easycls.data.audit data/digits            # a dataset root with train/ val/ test/ class folders
    python -m easycls.data.audit data/digits/train      # or one class-folder split

The report goes to output/audit/ (the default save_dir's, where report.html looks; --out changes it); audit=True
in a training config writes it to that run's save_dir/audit/. Duplicates are found by hashing decoded pixels, so
the same picture saved twice (or re-encoded losslessly) is caught; a duplicate shared by train and val/test is
leakage and inflates the metrics. A class that train has and another split lacks is named.
"""
import argparse
import hashlib
import json
import logging
import os
import sys
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Dict, List, Optional, Sequence

from easycls.core.errors import DataError, exit_code
from easycls.data.images import ImageReadError, decode_full, list_images
from easycls.data.scan import class_folders

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
DEFAULT_OUT = os.path.join("output", "audit")


def find_splits(root: str) -> Dict[str, str]:
    """``{split: folder}`` for a dataset root with train/val/test (those with class folders), or ``{name: root}``
    for a single split."""
    found = {s: os.path.join(root, s) for s in SPLITS if os.path.isdir(os.path.join(root, s))}
    if not found:
        return {os.path.basename(os.path.normpath(root)) or "data": root}
    usable = {}
    for split, folder in found.items():
        try:
            class_folders(folder)
            usable[split] = folder
        except DataError as exc:  # such as a test folder of unlabelled images
            log.info("audit: %s is not a class-folder split (%s); not audited", folder, exc)
    return usable


def _fingerprint(path: str) -> str:
    arr = decode_full(path)
    return hashlib.sha1(str(arr.shape).encode() + arr.tobytes()).hexdigest()


@lru_cache(maxsize=2 ** 20)
def _known_fingerprint(path: str, size: int, mtime_ns: int) -> str:
    """One file's fingerprint, decoded once per process while its size and modification time stay the same (the
    k-fold run and each of its folds ask for the same images)."""
    try:
        return _fingerprint(path)
    except ImageReadError as exc:
        return "!" + str(exc)


def _safe_fingerprint(path: str) -> str:
    try:
        stat = os.stat(path)
    except OSError as exc:
        return "!" + (exc.strerror or str(exc))
    return _known_fingerprint(path, stat.st_size, stat.st_mtime_ns)


def fingerprints(paths: Sequence[str], workers: int = 4) -> List[str]:
    """The fingerprint of each image, a hash of its decoded pixels (so a lossless re-encoding is the same image),
    or ``'!<reason>'`` for a file that cannot be read; in the order of ``paths``."""
    with ThreadPoolExecutor(max(1, workers)) as pool:
        return list(pool.map(_safe_fingerprint, paths, chunksize=64))


def audit(splits: Dict[str, str], workers: int = 4) -> dict:
    """Audit every split; return a JSON-ready report."""
    report = {"splits": {}, "unreadable": [], "duplicates_within": [], "leakage": []}
    owners = defaultdict(list)  # fingerprint -> [(split, path)]
    for split, folder in splits.items():
        counts, files = Counter(), []
        for name in class_folders(folder):
            images, _ = list_images(os.path.join(folder, name))
            counts[name] = len(images)
            files += images
        for path, digest in zip(files, fingerprints(files, workers)):
            if digest.startswith("!"):
                report["unreadable"].append({"path": path, "reason": digest[1:]})
            else:
                owners[digest].append((split, path))
        nonzero = [c for c in counts.values() if c]
        report["splits"][split] = {"images": sum(counts.values()), "per_class": dict(counts),
                                   "imbalance_ratio": round(max(nonzero) / min(nonzero), 3) if nonzero else None}
    report["missing_classes"] = missing_classes(report["splits"])
    for group in owners.values():
        if len(group) < 2:
            continue
        splits_in = sorted({s for s, _ in group})
        entry = {"splits": splits_in, "paths": [p for _, p in group]}
        report["leakage" if len(splits_in) > 1 else "duplicates_within"].append(entry)
    return report


def missing_classes(splits: Dict[str, dict]) -> Dict[str, List[str]]:
    """``{split: classes without images}`` for each split that lacks a class of train (of all splits together
    when there is no train split)."""
    reference = splits["train"]["per_class"] if "train" in splits else \
        {name: 1 for info in splits.values() for name in info["per_class"]}
    missing = {split: [name for name in reference if reference[name] and not info["per_class"].get(name)]
               for split, info in splits.items()}
    return {split: names for split, names in missing.items() if names}


def to_markdown(report: dict) -> str:
    """The report as a readable Markdown page."""
    lines = ["# Dataset audit", "", "| split | images | classes | imbalance (max/min) |", "|---|---|---|---|"]
    for split, info in report["splits"].items():
        lines.append(f"| {split} | {info['images']} | {len(info['per_class'])} | {info['imbalance_ratio']} |")
    for split, info in report["splits"].items():
        lines += ["", f"## {split}: images per class", ""]
        lines += [f"- {name}: {count}" for name, count in info["per_class"].items()]
    missing = report.get("missing_classes", {})
    lines += ["", f"## Classes without images: {sum(map(len, missing.values()))}", ""]
    lines += [f"- {split}: {', '.join(names)}" for split, names in missing.items()]
    lines += ["", f"## Unreadable files: {len(report['unreadable'])}", ""]
    lines += [f"- {u['path']}: {u['reason']}" for u in report["unreadable"]]
    for key, title in (("duplicates_within", "Exact duplicates within a split"),
                       ("leakage", "Exact duplicates across splits (leakage)")):
        lines += ["", f"## {title}: {len(report[key])} groups", ""]
        lines += [f"- {', '.join(d['paths'])}" for d in report[key]]
    return "\n".join(lines) + "\n"


def summary(report: dict) -> str:
    sizes = ", ".join(f"{s} {i['images']}" for s, i in report["splits"].items())
    ratios = ", ".join(f"{s} {i['imbalance_ratio']}" for s, i in report["splits"].items())
    lacking = "".join(f"; {split} has no images of {', '.join(names)}"
                      for split, names in report.get("missing_classes", {}).items())
    return (f"audit: {sizes} images; imbalance {ratios}; {len(report['unreadable'])} unreadable; "
            f"{len(report['duplicates_within'])} duplicate groups within splits; "
            f"{len(report['leakage'])} across splits (leakage){lacking}")


def write_report(report: dict, out: str) -> None:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "audit.json"), "w") as handle:
        json.dump(report, handle, indent=2)
    with open(os.path.join(out, "audit.md"), "w") as handle:
        handle.write(to_markdown(report))


def run_audit(splits: Dict[str, str], out: str, workers: int = 4) -> dict:
    """Audit, write ``out/audit.json`` and ``out/audit.md``, and log the one-line summary."""
    report = audit(splits, workers)
    write_report(report, out)
    log.log(logging.WARNING if report["missing_classes"] else logging.INFO, "%s; report in %s", summary(report),
            os.path.join(out, "audit.md"))
    for entry in report["leakage"][:5]:
        log.warning("leakage: the same image is in %s: %s", " and ".join(entry["splits"]), entry["paths"][:2])
    return report


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m easycls.data.audit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", help="dataset root (with train/val/test) or one class-folder split")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"report folder (default: {DEFAULT_OUT}, under the "
                                                           f"default save_dir, where report.html looks)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return exit_code(lambda: run_audit(find_splits(args.path), args.out))


if __name__ == "__main__":
    sys.exit(main())
