"""Service folders are writable by their unprivileged user even below a folder that user cannot enter."""

from __future__ import annotations

import os
import pwd
import subprocess
import tempfile
from pathlib import Path

import pytest

from devstack.service_dirs import remove_writable_dir, writable_dir

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="service users only differ from us as root")


def can_write(user: pwd.struct_passwd, directory: Path) -> bool:
    argv = ["/usr/bin/test", "-w", str(directory)]
    probe = subprocess.run(argv, user=user.pw_uid, group=user.pw_gid, extra_groups=[], check=False)
    return probe.returncode == 0


def test_below_a_private_folder_the_folder_lives_in_var_tmp_and_is_linked(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    state_dir = tmp_path / "home" / ".devstack"
    state_dir.parent.mkdir(mode=0o700)

    real = writable_dir(state_dir / "temp", nobody)
    os.chown(real, nobody.pw_uid, nobody.pw_gid)

    assert str(real).startswith("/var/tmp/trademind-devstack-")
    assert (state_dir / "temp").resolve() == real
    assert can_write(nobody, real)
    assert not can_write(nobody, state_dir / "temp")

    remove_writable_dir(state_dir / "temp")

    assert not real.parent.exists()
    assert not (state_dir / "temp").exists()


def test_where_the_user_can_enter_the_folder_stays_in_the_state_folder() -> None:
    with tempfile.TemporaryDirectory() as open_folder:  # pytest's tmp_path sits below a 0700 folder
        Path(open_folder).chmod(0o755)
        inside = Path(open_folder) / ".devstack" / "temp"

        real = writable_dir(inside, pwd.getpwnam("nobody"))

        assert real == inside.resolve()
        assert real.is_dir() and not inside.is_symlink()
