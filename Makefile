# Two commands on a fresh machine (see README.md):
#   make book   build the HTML book, executing the notebooks -> _build/html/index.html
#   make test   run every test: bnlib unit tests (the grader's and nbgrader's among them), the
#               notebooks under nbval, the prose audit, a strict book build
#   make student / make tag   the student version in student/ / nbgrader's metadata in chapters/
#   make lab    JupyterLab on chapters/ with the book's kernel ("Python (bnlib)")
#   make pdf    the whole book as one PDF, _build/pdf/book.pdf (needs Chromium; see README)
#   make test-browser / test-pdf   the built book in headless Chromium / the PDF's contents
# Both create .venv on first use and install the pinned requirements into it.

SHELL  := /bin/bash
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export PYTHONHASHSEED := 0

LAB    := $(VENV)/.lab-installed

CHROMIUM ?= $(shell command -v chromium || command -v chromium-browser || command -v google-chrome)
SINGLE   := _build/pdf-src/_build/singlehtml

# A copy of _config.yml that builds from the stored outputs (no execution); it lives in
# _build/, so the local extension's folder is made absolute.
define stored_outputs_config
	mkdir -p _build
	sed -e 's/^\(  *execute_notebooks:\).*/\1 "off"/' \
	    -e 's|^\(  *bnlib_book:\) *book/_ext|\1 $(CURDIR)/book/_ext|' _config.yml > $(1)
endef

BROWSER := $(VENV)/.browser-installed

.PHONY: lab pdf test-pdf test-browser book test test-unit test-notebooks test-audit test-build student tag clean

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	# make bnlib importable from the venv (notebooks run with chapters/ as cwd)
	$(PY) -c 'import os, site; open(os.path.join(site.getsitepackages()[0], "bnlib-repo.pth"), "w").write(os.getcwd() + "\n")'
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	$(PY) -m ipykernel install --sys-prefix --name bnlib --display-name "Python (bnlib)" >/dev/null
	touch $(STAMP)

# JupyterLab (requirements-lab.txt); the notebooks run on the kernel "bnlib" (the venv's Python,
# installed inside the venv with --sys-prefix, so the reader's own kernels are untouched).
$(LAB): $(STAMP) requirements-lab.txt
	$(PY) -m pip install --quiet -r requirements-lab.txt
	touch $(LAB)

lab: $(LAB)
	$(VENV)/bin/jupyter lab --notebook-dir=chapters --MappingKernelManager.default_kernel_name=bnlib \
	    $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

book: $(STAMP)
	$(VENV)/bin/jupyter-book build . --config _config.yml
	@echo "The book is at file://$(CURDIR)/_build/html/index.html"

test: test-unit test-notebooks test-audit test-build

test-unit: $(STAMP)
	MPLBACKEND=Agg $(PY) -m pytest -q -p no:cacheprovider -n 2 tests --ignore=tests/book

test-notebooks: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider --nbval chapters -n 2 --dist loadfile \
	    --nbval-sanitize-with tests/nbval_sanitize.cfg

# Every number in the chapters' and front matter's prose is glued, maths, cited or a set-up parameter (bnlib.audit).
test-audit: $(STAMP)
	$(PY) -m bnlib audit chapters book

# Strict build from the stored notebook outputs (nbval has just re-executed them).
test-build: $(STAMP)
	rm -rf _build/test
	mkdir -p _build
	$(call stored_outputs_config,_build/_config_test.yml)
	$(VENV)/bin/jupyter-book build . --config _build/_config_test.yml --path-output _build/test \
	    -W -n --keep-going --builder html --all \
	    2>&1 | tee _build/test-build.log | tail -n 5; \
	    test $${PIPESTATUS[0]} -eq 0

# The PDF: one page of HTML with every chapter (Sphinx's singlehtml builder, from the stored
# outputs), printed by headless Chromium after MathJax has typeset the maths. Offline.
pdf: $(STAMP)
	@test -n "$(CHROMIUM)" || { echo "make pdf needs Chromium: apt-get install chromium"; exit 1; }
	rm -rf _build/pdf-src && mkdir -p _build/pdf
	$(call stored_outputs_config,_build/_config_pdf.yml)
	$(VENV)/bin/jupyter-book build . --config _build/_config_pdf.yml --path-output _build/pdf-src \
	    --builder singlehtml >_build/pdf-build.log 2>&1 || { tail -20 _build/pdf-build.log; exit 1; }
	# the single page is written as book/intro.html with links relative to the top: move it up
	cp $(SINGLE)/book/intro.html $(SINGLE)/book-print.html
	$(CHROMIUM) --headless=new --no-sandbox --disable-gpu --no-pdf-header-footer \
	    --virtual-time-budget=60000 --run-all-compositor-stages-before-draw \
	    --print-to-pdf=$(CURDIR)/_build/pdf/book.pdf file://$(CURDIR)/$(SINGLE)/book-print.html 2>/dev/null
	@echo "The PDF is at $(CURDIR)/_build/pdf/book.pdf"

# The built book (make test-build) in headless Chromium, driven by Selenium: console errors,
# typeset maths, images, links and anchors, search, the solution toggles.
$(BROWSER): $(STAMP) requirements-browser.txt
	$(PY) -m pip install --quiet -r requirements-browser.txt
	touch $(BROWSER)

test-browser: $(BROWSER)
	test -d _build/test/_build/html || $(MAKE) test-build
	$(PY) -m pytest -q -p no:cacheprovider -rs tests/book/test_browser.py

test-pdf: pdf
	$(PY) -m pytest -q -p no:cacheprovider tests/book/test_pdf.py

# The student version of the chapters (solutions stubbed, cells that show a reference solution
# removed, model answers emptied) in student/; grading: python -m bnlib grade (see README.md).
student: $(STAMP)
	$(PY) -m bnlib student --force chapters student

# nbgrader's cell metadata in every chapter, derived from the exercise conventions; run it after
# changing a chapter's cells (make test checks it is up to date).
tag: $(STAMP)
	$(PY) -m bnlib tag chapters

clean:
	rm -rf _build student
