"""The host package's modules form layers that import only downward, with no private name
taken from another module: entry points (the commands and services) -> operations (one
upload, one playbook publish) -> channel steps (index runs, placing and pruning) -> the
owner of a subdir's index -> the owner of a channel's package files and the indexers ->
what they own (the repodata, the page, who placed a file) -> settings (the host
configuration, upload rights) -> formats (package archives, shards) -> primitives.
A new module must be placed here; an arrow back up or a cycle fails. Only the subdir's
index owner writes index files: no one else imports the writers of repodata or shards."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "host" / "condaport"

LAYERS = {
    "entry points": {
        "upload",
        "index_command",
        "publish_command",
        "channels_command",
        "verifier",
        "metrics",
    },
    "channel management": {"manage"},
    "operations": {"intake", "batch", "backup"},
    "channel steps": {"index", "publish", "trees"},
    "pages": {"browse"},
    "subdir index owner": {"subdir_index"},
    "package files owner": {"channel_files", "index_backends"},
    "owned": {"repodata", "provenance", "adjustments", "downloads"},
    "settings": {"config", "rights"},
    "formats": {"packages", "shards"},
    "primitives": {"files", "locking", "account", "cli", "service", "release", "counters"},
}
RANK = {
    module: rank for rank, members in enumerate(reversed(LAYERS.values())) for module in members
}


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) for every `condaport` import in a file, top level or inside functions."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "condaport":
                found += [(alias.name, []) for alias in node.names]
            elif node.module.startswith("condaport."):
                module = node.module.split(".")[1]
                found.append((module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("condaport."):
                    found.append((alias.name.split(".")[1], []))
    return found


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.glob("*.py") if p.stem != "__init__")


def test_every_module_has_a_layer() -> None:
    assert {p.stem for p in _modules()} == set(RANK)


def test_imports_run_only_downward() -> None:
    upward = [
        f"{path.stem} ({_layer(path.stem)}) imports {module} ({_layer(module)})"
        for path in _modules()
        for module, _ in _imports(path)
        if RANK[module] >= RANK[path.stem]
    ]
    assert upward == []


def test_no_private_name_crosses_a_module() -> None:
    private = [
        f"{path.stem} imports {name} from {module}"
        for path in _modules()
        for module, names in _imports(path)
        for name in names
        if name.startswith("_")
    ]
    assert private == []


def _layer(module: str) -> str:
    return next(name for name, members in LAYERS.items() if module in members)


# What renders index files, and the one module allowed to call it.
INDEX_WRITERS = {"repodata": {"write_bytes", "Document"}, "shards": {"sync", "store_shard"}}


def test_only_the_subdir_index_owner_writes_index_files() -> None:
    writers = []
    for path in _modules():
        if path.stem in ("subdir_index", *INDEX_WRITERS):
            continue
        tree = ast.parse(path.read_text())
        imported = {m for m, _ in _imports(path)}
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in imported
                and node.attr in INDEX_WRITERS.get(node.value.id, set())
            ):
                writers.append(f"{path.stem} calls {node.value.id}.{node.attr}")
        for module, names in _imports(path):
            for name in names:
                if name in INDEX_WRITERS.get(module, set()):
                    writers.append(f"{path.stem} imports {name} from {module}")
    assert writers == []
