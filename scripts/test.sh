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

stage "making stand-ins for CUB's archive and FRN's weights (_build/cub_fixture; chapters 5-7's papermill run reads them)"
python scripts/make_cub_fixture.py _build/cub_fixture

stage "executing every chapter with papermill and small parameters (outputs in _build/papermill/)"
# nbval below runs every chapter with its defaults; this run proves that each parameters cell works, with
# the fast values in .ci/smoke/<chapter>.yml where a chapter has them.
mkdir -p _build/papermill
for nb in notebooks/*.ipynb; do
  smoke=".ci/smoke/$(basename "$nb" .ipynb).yml"
  extra=()
  [[ -f $smoke ]] && extra=(-f "$smoke")
  papermill --cwd notebooks --kernel python3 --no-progress-bar "${extra[@]}" "$nb" "_build/papermill/$(basename "$nb")"
done

stage "nbval: committed outputs match a fresh run"
python -m pytest --nbval notebooks --nbval-current-env \
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
