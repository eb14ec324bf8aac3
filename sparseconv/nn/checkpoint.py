"""Checkpoints: several ``state_dict``s (model, optimiser, schedule, ...) in one ``.npz`` file.

Nested dicts and lists are flattened to ``/``-joined keys (list items as ``#i``), so the file is
plain arrays — no pickle — and loads back into the same nested structure::

    save_checkpoint("ckpt.npz", model=model, optimizer=opt, scheduler=sched, extra={"epoch": 3})
    extra = load_checkpoint("ckpt.npz", model=model, optimizer=opt, scheduler=sched)["extra"]
"""
from __future__ import annotations

import os

import numpy as np

from ..device import to_host


def flatten(tree, prefix=""):
    out = {}
    items = (tree.items() if isinstance(tree, dict) else
             ((f"#{i}", v) for i, v in enumerate(tree)))
    for key, value in items:
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict) or isinstance(value, list):
            if not value:
                out[name + ("/{}" if isinstance(value, dict) else "/[]")] = np.zeros(0)
            else:
                out.update(flatten(value, name))
        elif value is None:
            out[name + "/None"] = np.zeros(0)
        else:
            out[name] = to_host(value)
    return out


def unflatten(flat):
    root = {}
    for name, value in flat.items():
        parts = name.split("/")
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        leaf = parts[-1]
        if leaf == "{}":
            continue
        if leaf == "[]":
            node["__list__"] = True
            continue
        node[leaf] = None if leaf == "None" else value
    return _lists(root)


def _lists(node):
    if not isinstance(node, dict):
        return node
    node = {k: _lists(v) for k, v in node.items()}
    if node.pop("__list__", False) and not node:
        return []
    if node and all(k.startswith("#") for k in node):
        return [node[f"#{i}"] for i in range(len(node))]
    if "None" in node and len(node) == 1:
        return None
    return node


def save_checkpoint(path, **objects):
    """Write each object's ``state_dict()`` (or a plain dict) under its keyword name."""
    tree = {name: obj.state_dict() if hasattr(obj, "state_dict") else obj for name, obj in objects.items()}
    path = os.fspath(path)
    tmp = path + ".tmp.npz"
    np.savez(tmp, **flatten(tree))
    os.replace(tmp, path)


def load_checkpoint(path, **objects):
    """Load the file; call ``load_state_dict`` on each object given. Returns the whole tree."""
    with np.load(os.fspath(path), allow_pickle=False) as f:
        tree = unflatten({k: f[k] for k in f.files})
    missing = [name for name in objects if name not in tree]
    if missing:
        raise ValueError(f"checkpoint {path} has no entries for {missing}; it holds {sorted(tree)}")
    for name, obj in objects.items():
        obj.load_state_dict(tree[name])
    return tree
