"""Reading user-supplied JSON files with errors that name the file and the problem."""
from __future__ import annotations

import json
import pathlib


def read_json(path, what: str = "file"):
    """Parse `path`; FileNotFoundError / ValueError (naming `what` and the path) on failure."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
