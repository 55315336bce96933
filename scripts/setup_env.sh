# Sourced by the README commands: makes sure a Python environment with this project exists.
# Uses the active virtualenv if there is one, else creates (or reuses) ./.venv.
# TORCH_SPEC pins torch before the project is installed (e.g. TORCH_SPEC="torch==2.13.0" for
# a CPU wheel); by default pip resolves the project's own range.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -x "$repo/.venv/bin/python" ] || python3 -m venv "$repo/.venv"
  # shellcheck disable=SC1091
  source "$repo/.venv/bin/activate"
fi
if ! (cd / && python -c "import linformer_plugin, linformer_user_dir, sentencepiece, pytest") >/dev/null 2>&1; then  # installed, not just on the path
  python -m pip install -q --upgrade pip
  if [ -n "${TORCH_SPEC:-}" ]; then python -m pip install -q "$TORCH_SPEC"; fi
  echo "installing linformer_plugin and fairseq into $(python -c 'import sys; print(sys.prefix)') (building fairseq takes a few minutes once)"
  python -m pip install -q -e "$repo[test]"
fi
cd "$repo"
