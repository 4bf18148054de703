"""``python -m perturbations [DOCS]``: rewrite the generated parameter tables of docs/perturbations.md (or DOCS)
from the families' declarations."""

import sys
from pathlib import Path

from perturbations.docs import docs_with_tables

path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "docs" / "perturbations.md"
path.write_text(docs_with_tables(path.read_text()))
