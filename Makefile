# Two commands on a fresh machine: `make demo` (the main job) and `make test`.
# Both create .venv and install the package with its test extras on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

# The first install compiles llama-cpp-python (llama.cpp, C++): 5-7 minutes on 2 cores; pip's
# lines show it working ("Building wheel for llama-cpp-python ...").
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@echo "Installing into $(VENV). The first time, pip compiles llama-cpp-python (llama.cpp) with"
	@echo "your C++ compiler: about 5-7 minutes on 2 cores, while pip says 'Building wheel'."
	$(BIN)/pip install --progress-bar on -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/wasi-nn-backend demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
