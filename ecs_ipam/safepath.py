"""Paths root can trust: no symlink followed beside the store, no link or directory that another user could have planted."""

import errno
import os
import stat

from ecs_ipam.errors import IO_FAILURE, CNIError


def open_no_follow(path, flags, mode=0o600):
    """os.open without following a final symlink; code 5 naming path when it is one."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise symlink_refused(path)
        raise


def symlink_refused(path):
    return CNIError(IO_FAILURE, f"{path} is a symbolic link: ecs-ipam never follows a link beside its store",
                    "someone who can write that directory may have planted it; remove it")


def require_private(directory, what="the store's directory"):
    """As root, refuse a directory that another user can write (group- or world-writable, or not
    root's): they could plant links or hard links, or swap names, under the files root writes."""
    if os.geteuid() != 0:
        return
    found = os.stat(directory)
    if found.st_mode & 0o022 or found.st_uid != 0:
        raise CNIError(IO_FAILURE, f"{what} {directory} can be written by other users "
                                   f"(mode {stat.filemode(found.st_mode)}, owner uid {found.st_uid})",
                       "root refuses it; make it root's and not group- or world-writable "
                       f"(chown root {directory} && chmod go-w {directory}), or use another path")


def require_private_links(path):
    """As root, refuse a path whose resolution follows a symlink that sits in a directory another
    user can write (they could have planted it, to point root's writes anywhere). A link root
    placed in a directory of its own is followed."""
    if os.geteuid() != 0:
        return
    resolved = "/"
    for part in os.path.abspath(path).split("/"):
        if not part:
            continue
        candidate = os.path.join(resolved, part)
        try:
            is_link = stat.S_ISLNK(os.lstat(candidate).st_mode)
        except FileNotFoundError:
            return  # nothing beyond it exists to be linked
        if is_link:
            require_private(resolved, f"the symbolic link {candidate} sits in a directory, and")
            candidate = os.path.realpath(candidate)
        resolved = candidate
