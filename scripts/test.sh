#!/usr/bin/env bash
# Set up .venv and run every check: unit tests; every chapter executed with papermill; nbval comparing
# each chapter's committed text outputs with a fresh run; the book built (from those outputs) with warnings
# as errors; the built book opened page by page in headless Chromium (browser_tests/). Prints the time of
# each stage at the end.
# Exits non-zero as soon as one of them fails.
set -euo pipefail
HERE="$(dirname "${BASH_SOURCE[0]}")"
source "$HERE/stages.sh"
stage "setting up .venv"
SFAM_NEEDS_BROWSER=1 source "$HERE/setup_env.sh"

stage "unit tests"
python -m pytest tests -q

stage "making stand-ins for CUB's archive and FRN's weights (_build/cub_fixture; the papermill run of chapters 4-10 reads them)"
python scripts/make_cub_fixture.py _build/cub_fixture

stage "training the book's two models on the synthetic benchmark, both at once (the chapters load them from the cache)"
# Once, here, so that the chapters below can run two at a time without waiting for each other's training. Two
# processes on two cores: OpenMP threads that spin while they wait would take the cores from the other process
# (a ResNet forward pass ran 8x slower, two at a time, than with passive waiting: benchmarks/README.md); the
# waiting policy changes no result.
export OMP_WAIT_POLICY=PASSIVE
python -c "from data_download import SyntheticCUB200; from sfam_lite import zoo
SyntheticCUB200(zoo.default_data_root('synthetic'), split='frn_train', download=True)"   # generated once, first
python -m sfam_lite train frn & frn_training=$!
python -m sfam_lite train gpw & gpw_training=$!
wait "$frn_training"
wait "$gpw_training"

stage "executing every chapter with papermill and small parameters, two at a time (outputs in _build/papermill/)"
# nbval below runs every chapter with its defaults; this run proves that each parameters cell works, with
# the fast values in .ci/smoke/<chapter>.yml where a chapter has them. Chapters share only the cache, whose
# writers lock (a model trained by two chapters at once is trained once).
mkdir -p _build/papermill
run_chapter() {
  local nb=$1 smoke extra=()
  smoke=".ci/smoke/$(basename "$nb" .ipynb).yml"
  [[ -f $smoke ]] && extra=(-f "$smoke")
  papermill --cwd notebooks --kernel python3 --no-progress-bar "${extra[@]}" "$nb" "_build/papermill/$(basename "$nb")" \
    > "_build/papermill/$(basename "$nb" .ipynb).log" 2>&1 || { echo "papermill failed on $nb:"; tail -40 "_build/papermill/$(basename "$nb" .ipynb).log"; return 1; }
  echo "executed $nb"
}
export -f run_chapter
printf '%s\n' notebooks/*.ipynb | xargs -P 2 -I{} bash -c 'run_chapter "$1"' _ {}

stage "nbval: committed outputs match a fresh run (two chapters at a time, each in its own kernel)"
python -m pytest -n 2 --dist loadfile --nbval notebooks --nbval-current-env \
  --nbval-sanitize-with .ci/nbval_sanitize.cfg -p no:cacheprovider -q

stage "building the book with warnings as errors, from the committed outputs nbval has just checked"
# The chapters ran twice above; a third execution in the build would only repeat them. The same
# _config.yml with execution off (scripts/build_book.sh builds with execution on).
mkdir -p _build/ci
# Jupyter Book resolves local_extensions' paths from the config file's folder: make book/_ext absolute.
sed -e 's/^  execute_notebooks: cache$/  execute_notebooks: "off"/' \
    -e "s|^    sfam_book_html: book/_ext\$|    sfam_book_html: $PWD/book/_ext|" _config.yml > _build/ci/_config.yml
grep -q 'execute_notebooks: "off"' _build/ci/_config.yml || { echo "could not switch execution off in _config.yml"; exit 1; }
grep -q "sfam_book_html: $PWD/book/_ext" _build/ci/_config.yml || { echo "could not find book/_ext in _config.yml"; exit 1; }
jupyter-book build . --config _build/ci/_config.yml -W --keep-going

stage "browser test: every page of the built book in headless Chromium (screenshots in _build/screenshots/)"
# Debian's Chromium driven by Playwright: no JavaScript errors, no request off localhost, images decoded and not
# blank, math typeset from the book's own MathJax, no code cut off at the right edge, the static sliders move.
python -m pytest browser_tests -q -p no:cacheprovider
