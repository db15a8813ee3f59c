"""Key paths through nested mappings (params.yaml, presets, the schema's values)."""

from __future__ import annotations


def leaf_paths(tree: dict, prefix: tuple = ()) -> list[tuple]:
    """Every leaf of a nested mapping as a key path; train.models' entries count as leaves."""
    paths = []
    for key, value in tree.items():
        path = (*prefix, key)
        if isinstance(value, dict) and value and path != ("train", "models"):
            paths += leaf_paths(value, path)
        else:
            paths.append(path)
    return paths


def lookup(tree: dict, path: tuple):
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            raise KeyError(".".join(map(str, path)))
        tree = tree[key]
    return tree
