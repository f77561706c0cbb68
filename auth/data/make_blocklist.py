"""Regenerate ``common-passwords.txt.gz`` from the zxcvbn-ts common-language package.

Not run at install time: the list is shipped, and this script only documents and repeats
how it was made. Usage, from the repository root::

    npm pack @zxcvbn-ts/language-common@4.1.3
    python auth/data/make_blocklist.py zxcvbn-ts-language-common-4.1.3.tgz

The entries are NFKC-normalised and case folded (the form ``auth.policy`` compares in),
duplicates after folding are dropped and the package's order (most common first) is kept.
"""

from __future__ import annotations

import gzip
import io
import json
import sys
import tarfile
import unicodedata
from pathlib import Path

HERE = Path(__file__).resolve().parent
LIST_FILE = HERE / "common-passwords.txt.gz"
LICENCE_FILE = HERE / "common-passwords.LICENSE.txt"
HEADER_PREFIX = "# "


def _member(archive: tarfile.TarFile, name: str) -> bytes:
    extracted = archive.extractfile(f"package/{name}")
    if extracted is None:
        raise SystemExit(f"{name} is missing from the package")
    return extracted.read()


def build(tarball: Path) -> tuple[str, str, int]:
    """The gzip body and the licence text made from ``tarball``, and the entry count."""
    with tarfile.open(tarball, "r:gz") as archive:
        meta = json.loads(_member(archive, "package.json"))
        words = json.loads(_member(archive, "src/passwords.json"))
        licence = _member(archive, "LICENSE.txt").decode("utf-8")
    entries: dict[str, None] = {}
    for word in words:
        folded = unicodedata.normalize("NFKC", str(word)).casefold()
        # The loader treats leading "# " lines as the header, and one entry per line.
        if folded and not folded.startswith(HEADER_PREFIX) and "\n" not in folded:
            entries.setdefault(folded)
    copyright_lines = "; ".join(
        line.strip() for line in licence.splitlines() if line.startswith("Copyright")
    )
    header = [
        "Common passwords, most frequent first; NFKC-normalised and case folded.",
        f"Source: npm package {meta['name']} {meta['version']}, file src/passwords.json",
        f"Licence: {meta['license']}; {copyright_lines}",
        "Full licence text: common-passwords.LICENSE.txt. Regenerate: make_blocklist.py.",
    ]
    body = "".join(f"{HEADER_PREFIX}{line}\n" for line in header)
    body += "".join(f"{entry}\n" for entry in entries)
    return body, licence, len(entries)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    body, licence, count = build(Path(argv[1]))
    buffer = io.BytesIO()
    # mtime=0 and no file name: the same package gives a byte-identical file.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as gz:
        gz.write(body.encode("utf-8"))
    LIST_FILE.write_bytes(buffer.getvalue())
    LICENCE_FILE.write_text(licence, encoding="utf-8")
    print(f"wrote {count} entries to {LIST_FILE.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
