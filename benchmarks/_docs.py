"""Writing a benchmark's tables into docs/benchmarks.md between its own pair of markers."""

from __future__ import annotations

import re
from pathlib import Path


def write_section(path: Path, begin: str, end: str, text: str, *, append: bool = False) -> None:
    """Replace what stands between ``begin`` and ``end`` in ``path`` with ``text``.

    With ``append``, a file without either marker gets the marked section at its end; otherwise missing
    markers are an error. Only one marker of the pair is always an error: the file was edited by hand.
    """
    doc = path.read_text()
    block = f"{begin}\n\n{text}\n{end}"
    if begin in doc and end in doc:
        pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
        path.write_text(pattern.sub(lambda _: block, doc))
    elif begin in doc or end in doc:
        raise SystemExit(f"{path} has only one of the markers {begin} and {end}; fix it by hand")
    elif append:
        path.write_text(doc.rstrip("\n") + "\n\n" + block + "\n")
    else:
        raise SystemExit(f"{path} has no {begin} ... {end} markers to put the results between")
