"""Files that are never half-written, never silently replaced, and never left behind.

Every file the library writes goes first to a temporary file beside its target, named
`.<target name>.<pid>.<random>.tmp`, is flushed to disk, and is then moved into place in one step:
`os.replace` where replacing is wanted, `os.link` (which refuses an existing name) where it is not.
A temporary file whose writer is no longer running is stale: `remove_stale` deletes it.
Introduced in: 02_autoencoder
"""
from __future__ import annotations

import errno
import os
import re
import tempfile
from pathlib import Path

from . import checks

TEMP_SUFFIXES = (".tmp", ".part")


def temp_prefix(target: Path) -> str:
    return f".{target.name}.{os.getpid()}."


def writer_pid(temp: Path) -> int | None:
    """The pid in a temporary file's name `.<target>.<pid>.<random>.tmp`, or None if it is not one of ours."""
    match = re.fullmatch(r"\..+\.(\d+)\.[^.]+\.(tmp|part)", temp.name)
    return int(match.group(1)) if match else None


def is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: running
        return True
    return True


def stale_temporaries(folder: Path, target_name: str | None = None) -> list[Path]:
    """Our temporary files in `folder` (for `target_name`, or any) whose writer has exited."""
    found = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    for path in entries:
        pid = writer_pid(path)
        if pid is None or (target_name and not path.name.startswith(f".{target_name}.")):
            continue
        if pid != os.getpid() and not is_running(pid):
            found.append(path)
    return found


def remove_stale(folder: Path, target_name: str | None = None) -> list[Path]:
    """Delete the temporary files that a killed run left in `folder`; returns them."""
    removed = []
    for path in stale_temporaries(folder, target_name):
        try:
            path.unlink()
            removed.append(path)
        except OSError:  # gone already, or a folder we may not write to: best effort
            pass
    return removed


def write_temporary(target: Path, payload: bytes, suffix: str = ".tmp") -> Path:
    """`payload` in a new temporary file beside `target`, flushed to disk (0644, as a finished file)."""
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=temp_prefix(target), suffix=suffix,
                                     delete=False) as tmp:
        try:
            tmp.write(payload)
            tmp.flush()
            os.fsync(tmp.fileno())
        except BaseException:
            os.unlink(tmp.name)
            raise
    os.chmod(tmp.name, 0o644)  # temporary files are private (0600); a checkpoint is not
    return Path(tmp.name)


def sync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (where the system allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def commit(temp: Path, target: Path, overwrite: bool = True) -> None:
    """Move `temp` to `target` in one step; without `overwrite`, refuse (FileExistsError) if it exists.

    On any failure `temp` is removed, so nothing is left behind.
    """
    try:
        if overwrite:
            os.replace(temp, target)
        else:
            try:
                os.link(temp, target)  # atomic, and fails if `target` exists, even as a dangling link
            except OSError as error:
                if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise
                with open(target, "xb") as out:  # a file system without hard links: still exclusive
                    out.write(temp.read_bytes())
                    out.flush()
                    os.fsync(out.fileno())
            os.unlink(temp)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    sync_folder(target.parent)


def atomic_write_bytes(path: Path, payload: bytes, overwrite: bool = True) -> None:
    """Write `payload` to `path` so that a crash at any moment leaves the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path.parent, path.name)
    commit(write_temporary(path, payload), path, overwrite)


def check_writable_folder(folder: Path, what: str = "the output folder") -> Path:
    """Create `folder` if needed and prove that a file can be written there, before any long work."""
    folder = Path(folder)
    for parent in [folder, *folder.parents]:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise ValueError(f"{parent} is a file, not a folder: choose another place for {what}")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_temporary(folder / "write-test", bytes(4096)).unlink()
    except OSError as error:
        raise ValueError(f"cannot write to {folder.absolute()} ({error.strerror or error}): choose a folder "
                         f"you can write to for {what}") from error
    return folder


def read_verified(path: Path, sha256: str, max_bytes: int) -> bytes | None:
    """The bytes of `path` if it holds at most `max_bytes` and their SHA-256 is `sha256`, else None.

    The size is checked before anything is read, and the hash is computed while reading in chunks, so
    a huge or replaced file costs neither memory nor a full read. A file that vanishes meanwhile: None;
    one that cannot be read (permissions, a read error): OSError.
    """
    import hashlib
    try:
        with open(path, "rb") as handle:
            if os.fstat(handle.fileno()).st_size > max_bytes:
                return None
            digest, chunks, total = hashlib.sha256(), [], 0
            while chunk := handle.read(1 << 20):
                total += len(chunk)
                if total > max_bytes:  # it grew while being read
                    return None
                digest.update(chunk)
                chunks.append(chunk)
    except FileNotFoundError:
        return None
    return b"".join(chunks) if digest.hexdigest() == sha256 else None


def read_bounded(path: Path, max_bytes: int, what: str) -> bytes:
    """The bytes of `path`, read whole only if it holds at most `max_bytes` (else ValueError, before the
    read): a damaged file of gigabytes costs neither memory nor a full read. OSError if it cannot be read."""
    with open(path, "rb") as handle:
        checks.check_size(path, os.fstat(handle.fileno()).st_size, max_bytes, what)
        payload = handle.read(max_bytes + 1)
    checks.check_size(path, len(payload), max_bytes, what)  # it grew while being read
    return payload


def fingerprint(*paths: Path) -> tuple:
    """(inode, size, mtime) of each path (None where absent): it changes whenever a save replaces one."""
    found = []
    for path in paths:
        try:
            info = os.stat(path)
            found.append((info.st_ino, info.st_size, info.st_mtime_ns))
        except OSError:
            found.append(None)
    return tuple(found)
