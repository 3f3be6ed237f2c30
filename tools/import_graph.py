"""Which top-level modules of ``diffworld`` import which: the package's import graph, one line per module.

    python tools/import_graph.py

``lint-imports`` checks this graph against the layers in ``pyproject.toml`` (``[tool.importlinter]``); this
prints it, function-local imports included, for a reader. ``diffworld`` alone on the right is the package's
own ``__init__`` (its version). grimp comes with import-linter (the ``dev`` extra).
"""

from __future__ import annotations

import grimp


def top_level_edges(package: str = "diffworld") -> dict[str, set[str]]:
    """{importer: {imported}} between the package's top-level modules and subpackages."""
    graph = grimp.build_graph(package)

    def top(module: str) -> str:
        return ".".join(module.split(".")[:2])

    edges: dict[str, set[str]] = {}
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            if top(module) != top(imported):
                edges.setdefault(top(module), set()).add(top(imported))
    return edges


def main() -> None:
    prefix = "diffworld."
    for importer, imported in sorted(top_level_edges().items()):
        names = ", ".join(sorted(name.removeprefix(prefix) for name in imported))
        print(f"{importer.removeprefix(prefix)} -> {names}")


if __name__ == "__main__":
    main()
