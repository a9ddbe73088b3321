"""Regenerate the README's layout table from the tree: one row per module and package of ``fastnst/``.

    python scripts/readme_layout.py            # print the table
    python scripts/readme_layout.py --write    # replace the table under "## Layout" in README.md

Each row is the module's path and the summary of its docstring, so the table says what
the code says; ``tests/test_house.py`` fails when a module is missing from the README's table.
Rows for the top-level files that are not Python (``data/README.md``, ``checkpoints/``) follow.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXTRA_ROWS = [
    ("scripts/", "benchmarks, evaluations and the bundling of styles: they parse options and print; the work is "
                 "in the package"),
    ("checkpoints/", "the bundled style models (fp16 .safetensors) and their cards"),
    ("data/README.md", "getting COCO 2014 (or using any folder of photos)"),
]


def summary(path: Path) -> str:
    """The summary line of a module's docstring (its first paragraph, on one line), in Markdown."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    text = " ".join(doc.split("\n\n")[0].split()).rstrip(".")
    return re.sub(r"``([^`]+)``", r"`\1`", text).replace("|", "\\|") or "(no docstring)"


def rows() -> list[tuple[str, str]]:
    """(path, summary) for every package (its ``__init__``) and module of ``fastnst/``, in tree order."""
    out = []
    for path in sorted((REPO / "fastnst").rglob("*.py"), key=lambda p: (p.parent.as_posix(), p.name != "__init__.py",
                                                                         p.name)):
        if path.name == "__main__.py" or path == REPO / "fastnst" / "__init__.py":
            continue
        name = path.parent.relative_to(REPO).as_posix() + "/" if path.name == "__init__.py" \
            else path.relative_to(REPO).as_posix()
        out.append((name, summary(path)))
    return out + EXTRA_ROWS


def table() -> str:
    lines = ["| path | owns |", "|---|---|"]
    lines += [f"| `{name}` | {text} |" for name, text in rows()]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="replace the table in README.md instead of printing it")
    args = parser.parse_args()
    if not args.write:
        print(table(), end="")
        return 0
    readme = REPO / "README.md"
    text = readme.read_text(encoding="utf-8")
    head, _, rest = text.partition("## Layout\n")
    if not rest:
        print("README.md has no '## Layout' section", file=sys.stderr)
        return 1
    intro, _, _ = rest.partition("| path |")
    tail = rest.split("\n## ", 1)[1] if "\n## " in rest else ""
    readme.write_text(head + "## Layout\n" + intro + table() + (f"\n## {tail}" if tail else ""), encoding="utf-8")
    print(f"wrote the layout table of {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
