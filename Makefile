# The two commands of the README. Both create .venv when missing and install the project.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast lint bench clean ffmpeg

demo: $(STAMP) ffmpeg
	$(BIN)/featcodec demo

test: $(STAMP) ffmpeg
	$(BIN)/python -m pytest

# everything but the tests marked slow (training runs of tens of seconds, the wheel install)
test-fast: $(STAMP) ffmpeg
	$(BIN)/python -m pytest -m "not slow"

# the x265 anchor needs ffmpeg; installed with apt-get where missing (a warning if impossible)
ffmpeg:
	@scripts/ensure-ffmpeg.sh

lint: $(STAMP)
	$(BIN)/ruff check codec models training eval featcodec tests

bench: $(STAMP)
	$(BIN)/featcodec bench entropy

$(STAMP): pyproject.toml setup.py codec/bounded_rans.c
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "featcodec needs Python >= 3.11 ($(PYTHON) is older); set PYTHON=python3.11"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv
	# uv installs from PyPI: torch's default (CUDA) build, which also runs on the CPU
	$(BIN)/uv pip install --python $(BIN)/python --compile-bytecode -e '.[dev]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) runs lightning_logs .pytest_cache
