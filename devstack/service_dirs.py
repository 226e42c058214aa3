"""Folders an unprivileged service user must write, even when the checkout is below one it cannot enter."""

from __future__ import annotations

import contextlib
import hashlib
import pwd
import shutil
import subprocess
from pathlib import Path

_OUTSIDE_ROOT = Path("/var/tmp")  # noqa: S108 - one private, named folder per stack state folder


def writable_dir(inside: Path, user: pwd.struct_passwd | None) -> Path:
    """Create `inside`, a folder in the stack state folder, where `user` can reach it; return its real path.

    When we are root and `user` may not enter the state folder (a checkout in a 0700 home, say), the folder
    lives in /var/tmp instead and `inside` links to it, so it is still found there. Services are given the
    returned path, which they can open. A folder that already exists stays where it is.
    """
    state_dir = inside.parent
    state_dir.mkdir(parents=True, exist_ok=True)
    if inside.is_symlink() and not inside.exists():  # its /var/tmp target was cleaned away
        inside.unlink()
    if user is None or inside.exists() or _can_enter(user, state_dir):
        inside.mkdir(parents=True, exist_ok=True)
        return inside.resolve()
    digest = hashlib.sha256(str(state_dir).encode()).hexdigest()[:12]
    outside = _OUTSIDE_ROOT / f"trademind-devstack-{digest}" / inside.name
    outside.mkdir(parents=True, exist_ok=True)
    outside.parent.chmod(0o755)
    inside.symlink_to(outside, target_is_directory=True)
    return outside


def remove_writable_dir(inside: Path) -> None:
    """Delete a folder made by writable_dir, and its /var/tmp parent once nothing else is left in it."""
    if inside.is_symlink():
        outside = inside.resolve()
        shutil.rmtree(outside, ignore_errors=True)
        with contextlib.suppress(OSError):
            outside.parent.rmdir()
        inside.unlink()
    shutil.rmtree(inside, ignore_errors=True)


def _can_enter(user: pwd.struct_passwd, directory: Path) -> bool:
    return (
        subprocess.run(
            ["/usr/bin/test", "-x", str(directory)],
            user=user.pw_uid,
            group=user.pw_gid,
            extra_groups=[],
            check=False,
        ).returncode
        == 0
    )
