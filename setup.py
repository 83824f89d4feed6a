"""The MXNet/GluonCV object-detection hackathon kit: `pip install -e .` gives the `hack` command.

Pins are the set verified to work together on Python 3.11 (see README, "Why these versions").
numpy>=1.24 breaks `import mxnet` (np.bool); numpy 1.23 has no wheel past Python 3.11.
gluoncv pulls in opencv-python, whose bundled Qt plugins stop labelme's window from starting:
`make setup` swaps it for opencv-python-headless (same cv2 module, no Qt).
"""
import re
from pathlib import Path

from setuptools import find_packages, setup

# One version, the package's own (hackathon/__init__.py), read without importing the kit.
VERSION = re.search(r'__version__ = "(.+?)"', (Path(__file__).parent / "hackathon" / "__init__.py").read_text()).group(1)

setup(
    name="hackathon-kit",
    version=VERSION,
    description="Phone photos to a judged GluonCV SSD detector in one evening",
    packages=find_packages(include=["labeling", "labeling.*", "hackathon", "hackathon.*"]),
    package_data={"labeling": ["GUIDE.md", "labelme_config.yaml", "capture_page.html", "sample/*", "sample/*/*"],
                  "hackathon": ["judge/leaderboard_page.html", "judge/leaderboard_page.js"]},
    python_requires=">=3.11,<3.12",
    install_requires=[
        "mxnet==1.9.1",  # GPU: swap for mxnet-cu112==1.9.1 (README)
        "numpy==1.23.5",
        "gluoncv==0.10.5.post0",
        "opencv-python-headless==4.11.0.86",
        "click==8.5.1",
        "tqdm==4.70.1",
        "matplotlib==3.10.9",
        "pillow==13.0.0",
        "pillow-heif==1.8.1",
        "PyYAML==6.0.3",
        "labelme==5.11.4",
        "segno==1.6.6",  # the capture station's QR code (pure Python)
    ],
    # pycocotools: the COCO metric's test oracle; selenium drives Debian's chromium + chromedriver
    # (selenium 4.40: later releases pin a certifi newer than PyPI serves here).
    # nbclient + nbformat + ipykernel: tests/test_notebooks.py runs every notebook in notebooks/.
    extras_require={"test": ["pytest==9.2.0", "pycocotools==2.0.11", "selenium==4.40.0",
                             "nbclient==0.11.0", "nbformat==5.11.1", "ipykernel==7.4.0"]},
    entry_points={"console_scripts": ["hack=hackathon.cli:main"]},
)
