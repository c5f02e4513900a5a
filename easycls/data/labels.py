"""Labels from a CSV (``label_type='CSV'``) and per-image sampling weights (``sample_weights``), both checked
row by row: an error names the rows that are wrong."""
import os
from typing import List, Optional, Set

import numpy as np
import pandas as pd

from easycls.core.errors import DataError
from easycls.data.scan import Samples, image_ids


def _name_rows(what: str, rows: List[str]) -> str:
    return f"{what}: {', '.join(map(str, rows[:5]))}" + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")


def read_label_csv(csv_path: str, root: str, classes: Optional[List[str]] = None):
    """Samples from a CSV of ``image_id,label`` (optionally ``split``: train or val) with ids relative to ``root``,
    and the split column (None without one). Classes are the sorted labels unless ``classes`` fixes them."""
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    if list(table.columns[:2]) != ["image_id", "label"]:
        raise DataError(f"{csv_path} must start with the columns image_id,label; it has {list(table.columns)}")
    classes = list(classes) if classes else sorted(table["label"].unique().tolist())
    ids = table["image_id"].tolist()  # one conversion: iterating a pandas column costs 10x a list's
    problems = [("duplicated ids", table["image_id"][table["image_id"].duplicated()].tolist()),
                ("labels that are not classes " + str(classes), table["image_id"][~table["label"].isin(classes)]
                 .tolist()),
                ("missing image files under " + root, missing_files(root, ids))]
    if "split" in table:
        problems.append(("a split other than train or val", table["image_id"][~table["split"].isin(["train", "val"])]
                         .tolist()))
    for what, rows in problems:
        if rows:
            raise DataError(f"label_path {csv_path}: " + _name_rows(what, rows))
    labels = pd.Categorical(table["label"], categories=classes).codes.tolist()
    prefix = os.path.join(root, "")  # os.path.join per row cost more than the rest of the read
    samples = Samples([i if os.path.isabs(i) else prefix + i for i in ids], labels, classes)
    return samples, (table["split"].tolist() if "split" in table else None)


def missing_files(root: str, ids: List[str]) -> List[str]:
    """The ids (relative to ``root``, with forward slashes) that name no file. Each folder is listed once, and only
    an id its listing lacks is looked up on its own (a file system may ignore case): a lookup for every id is a
    system call per row, slow at a million rows and far slower on a network file system."""
    listed, missing = {}, []
    for image_id in ids:
        folder, _, name = image_id.rpartition("/")
        if folder not in listed:
            listed[folder] = _files_in(os.path.join(root, folder))
        if name not in listed[folder] and not os.path.isfile(os.path.join(root, image_id)):
            missing.append(image_id)
    return missing


def _files_in(folder: str) -> Set[str]:
    try:
        with os.scandir(folder) as entries:
            return {entry.name for entry in entries if entry.is_file()}
    except OSError:  # not a folder, or not readable: every id in it is looked up on its own
        return set()


def sample_weights(samples: Samples, spec, root: str) -> List[float]:
    """Per-image sampling weights: ``'balanced'`` (inverse class frequency) or a CSV of ``image_id,weight`` with ids
    relative to ``root``, as in pre.csv. Every image needs one weight >= 0; errors name the rows."""
    if spec == "balanced":
        labels = np.asarray(samples.labels)
        return (1.0 / np.bincount(labels)[labels]).tolist()
    table = pd.read_csv(spec, dtype={"image_id": str})
    if list(table.columns[:2]) != ["image_id", "weight"]:
        raise DataError(f"{spec} must have the columns image_id,weight; it has {list(table.columns)}")
    weights = pd.to_numeric(table["weight"], errors="coerce")
    bad = table["image_id"][~(weights >= 0)].tolist()  # NaN, text and negative weights
    ids, rows = image_ids(samples.paths, root), table["image_id"].tolist()
    known = set(ids)
    unknown = [i for i in rows if i not in known]
    missing = sorted(known - set(rows))
    duplicated = table["image_id"][table["image_id"].duplicated()].tolist()
    for problem, names in (("weights that are not numbers >= 0", bad), ("ids not under " + root, unknown),
                           ("duplicated ids", duplicated), ("no row for these images", missing)):
        if names:
            raise DataError(f"sample_weights {spec}: " + _name_rows(problem, names))
    by_id = dict(zip(rows, weights.tolist()))
    result = [float(by_id[i]) for i in ids]
    if not any(result):
        raise DataError(f"sample_weights {spec}: every weight is 0")
    return result


def read_multilabel_csv(csv_path: str, root: str, classes: Optional[List[str]] = None):
    """Multi-label samples from a CSV, with the split column (None without one). Two forms: ``image_id,labels``
    (or ``label``) with class names separated by ``|`` (an empty cell: no label), or ``image_id`` then one 0/1
    column per class. Classes are the sorted names (the columns, in order, in the second form) unless ``classes``
    fixes them. Errors name the rows: unknown classes, values other than 0/1, duplicated ids, missing files."""
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    if table.columns[0] != "image_id":
        raise DataError(f"{csv_path} must start with the column image_id; it has {list(table.columns)}")
    ids = table["image_id"]
    if table.columns[1] in ("labels", "label"):
        names = table[table.columns[1]].str.split("|").map(lambda parts: [p.strip() for p in parts if p.strip()])
        classes = list(classes) if classes else sorted({n for row in names for n in row})
        known = set(classes)
        problems = [("rows naming classes that are not in " + str(classes),
                     ids[names.map(lambda row: not known.issuperset(row))].tolist())]
        from sklearn.preprocessing import MultiLabelBinarizer
        matrix = MultiLabelBinarizer(classes=classes).fit_transform(names.map(lambda row: set(row) & known))
    else:
        columns = [c for c in table.columns[1:] if c != "split"]
        classes = list(classes) if classes else columns
        problems = [("class columns missing from the file", [c for c in classes if c not in columns]),
                    ("columns that are not classes " + str(classes), [c for c in columns if c not in classes])]
        values = table[[c for c in classes if c in columns]].apply(lambda col: col.str.strip())
        problems.append(("values other than 0 or 1 in rows", ids[~values.isin(["0", "1"]).all(axis=1)].tolist()))
        matrix = (values == "1").to_numpy(dtype=np.int64)
    problems += [("duplicated ids", ids[ids.duplicated()].tolist()),
                 ("missing image files under " + root, [i for i in ids if not os.path.isfile(os.path.join(root, i))])]
    if "split" in table:
        problems.append(("a split other than train or val", ids[~table["split"].isin(["train", "val"])].tolist()))
    for what, rows in problems:
        if rows:
            raise DataError(f"label_path {csv_path}: " + _name_rows(what, rows))
    samples = Samples([os.path.join(root, i) for i in ids], [tuple(row) for row in matrix.tolist()], classes,
                      multi_label=True)
    return samples, (table["split"].tolist() if "split" in table else None)
