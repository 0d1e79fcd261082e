"""Share a run: its folder as one zip archive, and the careful import of such an archive.

An archive holds the files of a run's record that another machine can show, compare and explain
(config, status, metrics, result, environment, weights) and `manifest.json`, which lists each
file's size and SHA-256. The resume state (`state.pt`) stays behind: it is a pickle, and an
imported run has no training process to resume into, so an imported run reads as finished (or
stopped or failed, as it was) and Resume refuses it; "New run like this" trains its settings again.

Import treats an archive as hostile, like any upload: the archive and each member have a size
limit; only the known file names are allowed (no folders, links, absolute paths or `..`); a member
that expands far more than JSON does is refused as a zip bomb before it is read, and reading stops
at the size it declared; every file must match the manifest; JSON must parse; the weights must be
safetensors (tensors only, never a pickle) that fit the variant the config names. It is unpacked
into a hidden folder inside the runs folder and renamed into place under a sanitised, unused name
only when all of it passed, so a refused archive leaves nothing behind and nothing is ever written
outside the runs folder.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

from .checkpoints import guess_architecture
from .images import MAX_BYTES
from .models import VARIANTS
from .runs import DONE_STATES, atomic_write_json, load_run, runs_root, slugify, unique_name
from .weight_files import CheckpointError, read_state_dict

FORMAT = "alexnet-lab run"
VERSION = 1
MANIFEST = "manifest.json"
# The files a run archive may hold, with the most bytes each may expand to.
MEMBERS: dict[str, int] = {
    "config.json": 1 << 20, "status.json": 1 << 20, "environment.json": 4 << 20, "result.json": 64 << 20,
    "metrics.jsonl": 256 << 20, "weights.safetensors": 512 << 20,
}
REQUIRED = ("config.json", "status.json")
MAX_TOTAL = 800 << 20           # bytes all members may expand to together
APP_LIMIT = MAX_BYTES           # an archive uploaded to the app: its upload limit (25 MB, a cifar run)
CLI_LIMIT = 1 << 30             # an archive named on the command line (a paper run's weights are 228 MB)
MAX_RATIO = 100                 # expanded / compressed bytes of one member; JSON packs about 5 to 10 times
RATIO_FLOOR = 64 << 10          # members smaller than this expand to nothing dangerous, whatever their ratio
CHUNK = 1 << 20


class ArchiveError(ValueError):
    """An archive that cannot become a run; the message is for the user."""


def archive_name(run_name: str) -> str:
    return f"{run_name}.run.zip"


def export_run(path: str | Path) -> bytes:
    """The run folder's shareable files and their manifest, as the bytes of one zip archive."""
    run = load_run(path, with_metrics=False)  # says "not a run folder" first
    files = {name: (run.path / name).read_bytes() for name in MEMBERS if (run.path / name).is_file()}
    manifest = {"format": FORMAT, "version": VERSION, "run": run.name, "exported": time.time(),
                "files": {name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                          for name, data in files.items()}}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr(MANIFEST, json.dumps(manifest, indent=1), compress_type=zipfile.ZIP_DEFLATED)
        for name, data in files.items():  # weights do not compress; JSON does
            archive.writestr(name, data, compress_type=zipfile.ZIP_STORED if name.endswith(".safetensors")
                             else zipfile.ZIP_DEFLATED)
    return out.getvalue()


def import_run(source: bytes | str | Path | BinaryIO, root: str | Path | None = None, name: str | None = None,
               limit: int = APP_LIMIT, filename: str | None = None) -> str:
    """Check an archive and unpack it as a new run folder; returns the new run's name.

    name: the run's name here (sanitised, numbered if taken); default: the name it had. limit: the most
    bytes the archive may have. Raises ArchiveError, having written nothing, for anything not a run archive.
    """
    if isinstance(source, (str, Path)):
        try:
            handle = open(source, "rb")
        except OSError as err:
            raise ArchiveError(f"{Path(source).name} cannot be read: {err.strerror or err}") from err
        with handle:
            return import_run(handle, root, name, limit, filename or Path(source).name)
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(bytes(source))
    filename = filename or Path(getattr(source, "name", None) or "the archive").name
    _check_size(source, limit, filename)
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise ArchiveError(f"{filename} is not a zip archive of a run (or it is damaged): {err}") from err
    with archive:
        infos = _check_members(archive, filename)
        manifest = _read_manifest(archive, infos, filename)
        folder = runs_root(root)
        folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".import-", dir=folder))
        try:
            for member, info in infos.items():
                if member != MANIFEST:
                    _extract(archive, info, staging / member, manifest["files"][member], filename)
            _check_contents(staging, filename)
            _write_imported_status(staging, manifest, filename)
            return _move_into_place(staging, folder, slugify(name or str(manifest.get("run") or "")
                                                             or Path(filename).stem.split(".")[0]))
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # gone already when the import succeeded


def _check_size(handle: BinaryIO, limit: int, filename: str) -> None:
    """Refuse an empty archive or one over `limit` bytes from its size alone, before reading it."""
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    handle.seek(0)
    if size == 0:
        raise ArchiveError(f"{filename} is an empty file")
    if size > limit:
        hint = " (the app's upload limit): import it with `python -m alexnet import FILE`" if limit == APP_LIMIT else ""
        raise ArchiveError(f"{filename} is {size:,} bytes, over the {limit / 2**20:.4g} MB ({limit:,} bytes) "
                           f"allowed{hint}")


def _check_members(archive: zipfile.ZipFile, filename: str) -> dict[str, zipfile.ZipInfo]:
    """Every member by name, once each checked against the list of run files and the size limits."""
    infos: dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        member = info.filename
        if member.startswith(("/", "\\")) or ".." in member.replace("\\", "/").split("/") or ":" in member:
            raise ArchiveError(f"{filename} was refused: {member!r} would be written outside the run's folder")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise ArchiveError(f"{filename} was refused: {member!r} is a symbolic link")
        if member != MANIFEST and member not in MEMBERS:
            raise ArchiveError(f"{filename} was refused: {member!r} is not a file of a run record (an archive holds "
                               f"only {', '.join([MANIFEST, *MEMBERS])})")
        if member in infos:
            raise ArchiveError(f"{filename} was refused: it holds {member!r} twice")
        if info.flag_bits & 0x1:
            raise ArchiveError(f"{filename} was refused: {member!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ArchiveError(f"{filename} was refused: {member!r} uses a compression other than deflate")
        most = MEMBERS.get(member, 1 << 20)
        if info.file_size > most:
            raise ArchiveError(f"{filename} was refused: {member!r} would expand to {info.file_size / 2**20:.1f} MB, "
                               f"over the {most / 2**20:.0f} MB a run's {member} may have")
        if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            ratio = info.file_size // max(info.compress_size, 1)
            raise ArchiveError(f"{filename} was refused: {member!r} would expand {ratio:,} times (a zip bomb); a run's "
                               f"files expand at most {MAX_RATIO} times")
        infos[member] = info
    total = sum(i.file_size for i in infos.values())
    if total > MAX_TOTAL:
        raise ArchiveError(f"{filename} was refused: its files would expand to {total / 2**20:.0f} MB, over "
                           f"{MAX_TOTAL / 2**20:.0f} MB")
    missing = [m for m in (MANIFEST, *REQUIRED) if m not in infos]
    if missing:
        raise ArchiveError(f"{filename} is not a run archive: it lacks {', '.join(missing)}")
    return infos


def _read_manifest(archive: zipfile.ZipFile, infos: dict[str, zipfile.ZipInfo], filename: str) -> dict[str, Any]:
    manifest = _parse_json(_read_limited(archive, infos[MANIFEST], filename), MANIFEST, filename)
    files = manifest.get("files")
    if manifest.get("format") != FORMAT or not isinstance(files, dict):
        raise ArchiveError(f"{filename} is not a run archive of AlexNet Lab (its manifest says "
                           f"{str(manifest.get('format'))[:40]!r})")
    if manifest.get("version") != VERSION:
        raise ArchiveError(f"{filename} is a run archive of version {str(manifest.get('version'))[:10]}; this "
                           f"version of AlexNet Lab reads version {VERSION}")
    listed, held = set(files), set(infos) - {MANIFEST}
    if listed != held or not all(isinstance(f, dict) for f in files.values()):
        raise ArchiveError(f"{filename} was refused: its files ({', '.join(sorted(held))}) are not those its "
                           f"manifest lists ({', '.join(sorted(map(str, listed)))})")
    return manifest


def _read_limited(archive: zipfile.ZipFile, info: zipfile.ZipInfo, filename: str) -> bytes:
    out = io.BytesIO()
    _copy(archive, info, out, filename)
    return out.getvalue()


def _copy(archive: zipfile.ZipFile, info: zipfile.ZipInfo, out: BinaryIO, filename: str) -> str:
    """Copy a member in chunks, stopping at the size it declared (a lying header cannot expand further);
    returns its SHA-256."""
    digest, written = hashlib.sha256(), 0
    try:
        with archive.open(info) as member:
            while chunk := member.read(CHUNK):
                written += len(chunk)
                if written > info.file_size:
                    raise ArchiveError(f"{filename} was refused: {info.filename!r} expands beyond the size it declares")
                digest.update(chunk)
                out.write(chunk)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, RuntimeError) as err:
        if isinstance(err, ArchiveError):
            raise
        raise ArchiveError(f"{filename} is damaged: {info.filename!r} cannot be read ({err})") from err
    return digest.hexdigest()


def _extract(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, listed: dict[str, Any],
             filename: str) -> None:
    with open(target, "xb") as out:
        digest = _copy(archive, info, out, filename)
    if digest != listed.get("sha256") or target.stat().st_size != listed.get("bytes"):
        raise ArchiveError(f"{filename} was refused: {info.filename} is not the file its manifest describes "
                           "(changed or damaged after export)")


def _parse_json(data: bytes, member: str, filename: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArchiveError(f"{filename} was refused: its {member} is not valid JSON ({err})") from err
    if not isinstance(value, dict):
        raise ArchiveError(f"{filename} was refused: its {member} is not a JSON object")
    return value


def _check_contents(staging: Path, filename: str) -> None:
    """Every file readable as what it claims to be: JSON objects, one event a line, tensors fitting the config."""
    config = _parse_json((staging / "config.json").read_bytes(), "config.json", filename)
    _parse_json((staging / "status.json").read_bytes(), "status.json", filename)
    for member in ("result.json", "environment.json"):
        if (staging / member).exists():
            _parse_json((staging / member).read_bytes(), member, filename)
    if (staging / "metrics.jsonl").exists():
        for n, line in enumerate((staging / "metrics.jsonl").read_bytes().splitlines(), start=1):
            if line.strip():
                _parse_json(line, f"metrics.jsonl (line {n})", filename)
    variant, norm = config.get("variant"), config.get("norm")
    if variant not in VARIANTS or norm not in VARIANTS[variant].norms:
        raise ArchiveError(f"{filename} was refused: its config names no known variant and norm "
                           f"({str(variant)[:20]!r}, {str(norm)[:20]!r})")
    if (staging / "weights.safetensors").exists():
        try:
            fits = guess_architecture(read_state_dict(staging / "weights.safetensors"))
        except CheckpointError as err:
            raise ArchiveError(f"{filename} was refused: {err}") from err
        if fits != (variant, norm):
            raise ArchiveError(f"{filename} was refused: its weights do not fit the {variant} variant with norm "
                               f"{norm} that its config names")


def _write_imported_status(staging: Path, manifest: dict[str, Any], filename: str) -> None:
    """No process stands behind an imported run: it is finished, or stopped or failed as it was, never resumable."""
    status = json.loads((staging / "status.json").read_bytes())
    state = status.get("state") if status.get("state") in DONE_STATES else "stopped"
    kept = {k: v for k, v in status.items() if k not in ("pid", "pid_identity", "checkpoint", "reason", "waiting_for")}
    origin = str(manifest.get("run"))[:80]
    reason = status.get("reason") if state == "failed" else (
        None if state == "finished" else "imported as it was when exported; its training state stays with the "
                                          "original, so it cannot be resumed here")
    atomic_write_json(staging / "status.json", {
        **kept, "state": state, "checkpoint": False, **({"reason": reason} if reason else {}),
        "imported": {"from": origin, "archive": Path(filename).name[:200], "exported": manifest.get("exported"),
                     "time": time.time()}})


def _move_into_place(staging: Path, folder: Path, base: str) -> str:
    """Rename the checked folder to a free name: claim the name with an empty folder (as RunWriter.create
    does), then rename over that empty claim, so a run created at the same moment is never overwritten."""
    for _ in range(100):
        name = unique_name(folder, base)
        try:
            (folder / name).mkdir()
        except FileExistsError:
            continue
        os.replace(staging, folder / name)
        return name
    raise ArchiveError(f"no free run name near {base!r}")
