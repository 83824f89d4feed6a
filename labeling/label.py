"""`hack label`: labelme opened on the workspace photos, set up for detection.

The configuration (labeling/labelme_config.yaml plus the class list) turns on autosave, keeps the
image out of the JSON, accepts only the team's classes, and, with `--member K/N`, shows one
member only their share of the photos (labelme's file filter), so a team labels in parallel and
every JSON lands beside its photo.
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from hackathon.core.errors import KitError
from hackathon.core.fileutil import display, write_text_atomic
from labeling.photos import is_image_name

CONFIG_TEMPLATE = Path(__file__).with_name("labelme_config.yaml")
GUIDE = Path(__file__).with_name("GUIDE.md")


def parse_member(text):
    """'2/3' -> (2, 3)."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise KitError(f"--member {text!r}: give K/N with 1 <= K <= N, e.g. --member 2/3 for the second of three.")
    return int(m.group(1)), int(m.group(2))


def list_photos(folder) -> list:
    """Photos below `folder` as POSIX paths relative to it, sorted as labelme lists them."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root, f).relative_to(folder).as_posix() for f in files
                  if is_image_name(f) and not f.startswith(".")]
    return sorted(found)


def member_share(photos, k, n) -> list:
    """The K-th of N shares, dealt like cards so each member gets every scene."""
    return photos[k - 1::n]


def share_pattern(share) -> str:
    """A regex for labelme's file filter (re.search on each listed path) that matches only `share`."""
    return "(?:^|/)(?:" + "|".join(re.escape(p) for p in share) + ")$"


def labelme_config(classes, file_search=None) -> dict:
    config = yaml.safe_load(CONFIG_TEMPLATE.read_text("utf-8"))
    config["labels"] = list(classes)
    if file_search:
        config["file_search"] = file_search
    return config


def labelme_command(folder, config_path):
    override = os.environ.get("HACK_LABELME")
    base = override.split() if override else [sys.executable, "-m", "labelme"]
    return base + [str(folder), "--config", str(config_path), "--nodata", "--autosave"]


def labelme_env():
    """The environment for labelme: no Qt plugin path left by OpenCV's own Qt build."""
    env = dict(os.environ)
    env.pop("QT_QPA_PLATFORM_PLUGIN_PATH", None)
    return env


def prepare_labelme(folder, classes, state_dir, member=None):
    """Write the labelme config for `folder` (and a member's share); returns (command, photos shown)."""
    folder = Path(folder)
    photos = list_photos(folder)
    if not photos:
        raise KitError(f"{display(folder)}: no photos to label. Fix: `hack import PHOTOS --scene NAME` first.")
    shown, pattern = photos, None
    if member:
        k, n = member
        shown = member_share(photos, k, n)
        if not shown:
            raise KitError(f"--member {k}/{n}: this share is empty ({len(photos)} photos for {n} members).")
        pattern = share_pattern(shown)
    name = f"labelme-{member[0]}-of-{member[1]}.yaml" if member else "labelme.yaml"
    config_path = Path(state_dir) / name
    write_text_atomic(config_path, yaml.safe_dump(labelme_config(classes, pattern), allow_unicode=True, sort_keys=False))
    return labelme_command(folder, config_path), shown


def check_can_start():
    """KitError with the fix when labelme's window cannot open here."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise KitError("no screen (DISPLAY is not set): labelme needs a desktop. Fix: run `hack label` in a desktop "
                       "session, or over `ssh -X`.")
    problem = qt_conflict()
    if problem:
        raise KitError(problem)


def qt_conflict():
    """The known labelme killer: opencv-python's bundled Qt plugins loaded beside PyQt5."""
    try:
        import cv2
    except ImportError:
        return None
    plugins = Path(cv2.__file__).parent / "qt" / "plugins"
    if plugins.is_dir():
        return ("opencv-python (with its own Qt) is installed, and its Qt plugins stop labelme's window from "
                "starting. Fix: pip uninstall -y opencv-python opencv-python-headless && "
                "pip install --no-deps opencv-python-headless==4.11.0.86")
    return None


def run_labelme(command):
    if shutil.which(command[0]) is None and not Path(command[0]).exists():
        raise KitError(f"cannot find {command[0]!r} to start labelme. Fix: pip install labelme==5.11.4, "
                       "or set HACK_LABELME to its command.")
    return subprocess.call(command, env=labelme_env())
