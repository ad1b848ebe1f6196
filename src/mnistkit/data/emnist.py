"""EMNIST (Cohen et al. 2017): handwritten digits and letters in MNIST's format, six splits.

NIST ships one archive, ``gzip.zip`` (about 536 MB), holding
``gzip/emnist-<split>-{train,test}-{images-idx3,labels-idx1}-ubyte.gz`` and
``gzip/emnist-<split>-mapping.txt`` (``label ascii-code [ascii-code]`` per line)
for the splits balanced, byclass, bymerge, digits, letters and mnist. Each split
is registered as ``emnist-<split>``; all six share the one archive.

Where it is looked for: in every search root (see :mod:`mnistkit.data.roots`),
the folders ``EMNIST/raw``, ``EMNIST``, ``emnist`` and the root itself, each
holding either ``gzip.zip`` or the extracted ``gzip/`` folder (or the split's
files directly, as torchvision leaves them). A download goes to
``<download root>/EMNIST/raw/gzip.zip``.

Two quirks are undone on load so EMNIST looks like every other dataset here:
images are stored transposed (so they are transposed back), and ``letters``
labels run 1..26 (so they are shifted to 0..25).

Integrity: NIST publishes no checksum for ``gzip.zip`` and none is recorded
here, so a download is *not* md5-verified. Instead it is accepted only if the
archive opens, every member's CRC-32 checks out (``zipfile.testzip``) and the
split's four members are present; it is written under a temporary name and
renamed into place only after that, so a partial or corrupt archive is never
used. Every IDX file is then fully validated when it is read.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path

from mnistkit.data.dataset import Dataset, make_split
from mnistkit.data.download import download_from_mirrors
from mnistkit.data.idx import MAX_PAYLOAD_BYTES, decode_idx
from mnistkit.data.roots import fetch_missing, find_file, not_found_error, search_roots
from mnistkit.data.spec import DIGITS, DatasetSpec
from mnistkit.errors import DataFormatError, DatasetNotFoundError
from mnistkit.fileio import EXPANSION_ALLOWANCE, MAX_EXPANSION, read_bytes
from mnistkit.preprocess.tensor import Normalization

ARCHIVE = "gzip.zip"
ARCHIVE_FOLDER = "gzip"
MIRRORS = ("https://biometrics.nist.gov/cs_links/EMNIST/",)
#: Approximate EMNIST training-set pixel mean/std on the [0, 1] scale (about the same for every split).
EMNIST_NORM = Normalization(0.1736, 0.3317)

_UPPER = tuple(chr(c) for c in range(ord("A"), ord("Z") + 1))
_LOWER = tuple(chr(c) for c in range(ord("a"), ord("z") + 1))
#: The 47 classes of balanced/bymerge: digits, capitals, and the 11 lower-case letters that
#: do not look like their capitals.
_MERGED = DIGITS + _UPPER + tuple("abdefghnqrt")

#: split -> (class names, label offset in the files, (train, test) sizes, description)
SPLITS: dict[str, tuple[tuple[str, ...], int, tuple[int, int], str]] = {
    "balanced": (_MERGED, 0, (112800, 18800), "47 balanced classes of digits and letters"),
    "byclass": (DIGITS + _UPPER + _LOWER, 0, (697932, 116323), "62 unbalanced classes: digits, A-Z, a-z"),
    "bymerge": (_MERGED, 0, (697932, 116323), "47 unbalanced classes (similar cases merged)"),
    "digits": (DIGITS, 0, (240000, 40000), "balanced digits, 240k train"),
    "letters": (_LOWER, 1, (124800, 20800), "26 letters, upper and lower case merged"),
    "mnist": (DIGITS, 0, (60000, 10000), "EMNIST's remake of MNIST"),
}


def member_names(split: str) -> tuple[str, str, str, str]:
    """Train images, train labels, test images, test labels file names of ``split`` (no folder)."""
    train_images, train_labels, test_images, test_labels = (
        f"emnist-{split}-{part}-ubyte.gz"
        for part in ("train-images-idx3", "train-labels-idx1", "test-images-idx3", "test-labels-idx1")
    )
    return train_images, train_labels, test_images, test_labels


def emnist_specs() -> list[DatasetSpec]:
    """One registry entry per split, all sharing the NIST archive."""
    return [
        DatasetSpec(
            name=f"emnist-{split}",
            description=f"EMNIST {split}: {desc}",
            class_names=names,
            norm=EMNIST_NORM,
            mirrors=MIRRORS,
            torchvision_name="EMNIST",
            sizes=sizes,
            loader=load_emnist,
            fetcher=fetch_emnist,
            locator=locate_emnist,
        )
        for split, (names, _, sizes, desc) in SPLITS.items()
    ]


def split_of(spec: DatasetSpec) -> str:
    split = spec.name.removeprefix("emnist-")
    if split not in SPLITS:
        raise DataFormatError(f"{spec.name!r} is not an EMNIST split; known: {', '.join(SPLITS)}")
    return split


# ----------------------------------------------------------------------------- finding


def _candidate_folders(root: Path) -> list[Path]:
    return [root / "EMNIST" / "raw", root / "EMNIST", root / "emnist", root]


def locate_emnist(spec: DatasetSpec, data_dir=None) -> Path | None:
    """The archive or the folder holding the split's extracted files, first in search order; None if absent."""
    names = member_names(split_of(spec))
    for root in search_roots(spec, data_dir):
        for folder in _candidate_folders(root):
            if (folder / ARCHIVE).is_file():
                return folder / ARCHIVE
            for inner in (folder / ARCHIVE_FOLDER, folder):
                if all(find_file(inner, n) for n in names):
                    return inner
    return None


def fetch_emnist(spec: DatasetSpec, data_dir=None, progress: bool = True) -> Path:
    """Return where the split is, downloading NIST's archive first if it is nowhere to be found
    (the steps every fetcher shares are :func:`mnistkit.data.roots.fetch_missing`'s)."""

    def download(name: str, folder: Path, mirrors: tuple[str, ...]) -> Path:
        unverified = folder / f".{name}.unverified"
        try:
            # md5 unknown (NIST publishes none): accept any bytes here, verify the archive below.
            download_from_mirrors(name, mirrors, unverified, lambda digest: True, progress)
            verify_archive(unverified, split_of(spec))
            os.replace(unverified, folder / name)
        finally:
            unverified.unlink(missing_ok=True)
        return folder / name

    return fetch_missing(spec, data_dir, locate_emnist, (ARCHIVE,), download)


def verify_archive(path: Path, split: str) -> None:
    """Refuse an archive that does not open, fails a CRC-32 check, or lacks the split's files."""
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
            names = set(zf.namelist())
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, ValueError, NotImplementedError, RuntimeError) as exc:
        raise DataFormatError(f"{path}: not a readable zip archive ({exc})") from None
    if bad is not None:
        raise DataFormatError(f"{path}: member {bad} fails its CRC-32 check; the archive is corrupt")
    missing = [n for n in member_names(split) if f"{ARCHIVE_FOLDER}/{n}" not in names]
    if missing:
        raise DataFormatError(f"{path}: lacks {', '.join(missing)}; is it NIST's EMNIST gzip.zip?")


# ----------------------------------------------------------------------------- reading

#: A mapping file is 62 short lines; anything near this size is not one.
MAX_MAPPING_BYTES = 1024**2


def load_emnist(spec: DatasetSpec, data_dir=None, download: bool = True, progress: bool = False) -> Dataset:
    """Read one split (archive or extracted files) into memory, transposed upright, labels from 0."""
    split = split_of(spec)
    where = fetch_emnist(spec, data_dir, progress) if download else locate_emnist(spec, data_dir)
    if where is None:
        raise not_found_error(
            spec, data_dir, f"download=False, so nothing was downloaded (run `mnistkit data fetch {spec.name}`)"
        )
    raw, mapping = _read_members(where, split)
    names, offset = class_names_for(split, mapping, where), SPLITS[split][1]
    tensors = [decode_idx(data, source) for data, source in raw]
    train_x, train_y, test_x, test_y = tensors
    train = make_split(_upright(train_x, raw[0][1]), train_y.long() - offset, len(names), f"{raw[0][1]} + {raw[1][1]}")
    test = make_split(_upright(test_x, raw[2][1]), test_y.long() - offset, len(names), f"{raw[2][1]} + {raw[3][1]}")
    return Dataset(name=spec.name, train=train, test=test, class_names=list(names), norm=spec.norm, source=str(where))


def _upright(images, source: str):
    """EMNIST stores each image transposed (column-major); transpose back to MNIST's orientation."""
    if images.dim() != 3:
        raise DataFormatError(f"{source}: images have shape {tuple(images.shape)}; expected [N, 28, 28]")
    return images.transpose(1, 2).contiguous()


def _read_members(where: Path, split: str) -> tuple[list[tuple[bytes, str]], str | None]:
    """The four IDX files' bytes (with a name for messages) and the mapping text, if present."""
    names = member_names(split)
    mapping_name = f"emnist-{split}-mapping.txt"
    if where.is_file():
        return _read_zip(where, names, mapping_name)
    out = []
    for n in names:
        path = find_file(where, n)
        if path is None:
            raise DatasetNotFoundError(f"{where}: missing {n}")
        out.append((_read_bytes(path), str(path)))
    mapping = where / mapping_name
    text = read_bytes(mapping, MAX_MAPPING_BYTES, DataFormatError, "mapping file") if mapping.is_file() else None
    return out, text.decode("ascii", errors="replace") if text is not None else None


def _read_bytes(path: Path) -> bytes:
    """A member file as stored (gzip is undone, bounded, by :func:`decode_idx`)."""
    return read_bytes(path, MAX_PAYLOAD_BYTES, DataFormatError, "IDX file")


def _checked_member(zf: zipfile.ZipFile, path: Path, member: str, limit: int) -> bytes:
    """A member's bytes, refused by its declared sizes before anything is inflated (a zip bomb
    declares its size; a member lying about it fails zipfile's own length and CRC checks)."""
    info = zf.getinfo(member)
    if info.file_size > limit:
        raise DataFormatError(f"{path} ({member}): {info.file_size:,} bytes uncompressed; at most {limit:,} allowed")
    if info.file_size > EXPANSION_ALLOWANCE and info.file_size > MAX_EXPANSION * max(1, info.compress_size):
        raise DataFormatError(f"{path} ({member}): expands more than {MAX_EXPANSION}x; refusing a decompression bomb")
    return zf.read(member)


def _read_zip(path: Path, names, mapping_name: str) -> tuple[list[tuple[bytes, str]], str | None]:
    """Read members from NIST's archive; every zip fault becomes a DataFormatError naming the member."""
    out, member = [], ""
    try:
        with zipfile.ZipFile(path) as zf:
            present = set(zf.namelist())
            for n in names:
                member = f"{ARCHIVE_FOLDER}/{n}"
                if member not in present:
                    raise DataFormatError(f"{path}: lacks {member}; is it NIST's EMNIST gzip.zip?")
                out.append((_checked_member(zf, path, member, MAX_PAYLOAD_BYTES), f"{path}:{member}"))
            member = f"{ARCHIVE_FOLDER}/{mapping_name}"
            mapping = (
                _checked_member(zf, path, member, MAX_MAPPING_BYTES).decode("ascii", errors="replace")
                if member in present
                else None
            )
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, ValueError, NotImplementedError, RuntimeError) as exc:
        where = f" ({member})" if member else ""
        raise DataFormatError(f"{path}{where}: corrupt or unreadable zip archive ({exc})") from None
    return out, mapping


def class_names_for(split: str, mapping: str | None, source) -> tuple[str, ...]:
    """Class names from the mapping file (label -> ASCII code; the last code wins, so ``letters``
    gives lower case), else the known table; a mapping with the wrong class count is refused."""
    known, offset = SPLITS[split][0], SPLITS[split][1]
    if mapping is None:
        return known
    names: dict[int, str] = {}
    for number, line in enumerate(mapping.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            label, codes = int(parts[0]), [int(p) for p in parts[1:]]
            names[label - offset] = chr(codes[-1])
        except (ValueError, IndexError, OverflowError):
            raise DataFormatError(
                f"{source}: emnist-{split}-mapping.txt line {number} is not 'label ascii-code': {line.strip()[:40]!r}"
            ) from None
    if sorted(names) != list(range(len(known))):
        raise DataFormatError(
            f"{source}: emnist-{split}-mapping.txt maps labels {min(names, default=0) + offset}.."
            f"{max(names, default=-1) + offset}; expected {len(known)} classes from {offset}"
        )
    return tuple(names[i] for i in range(len(known)))
