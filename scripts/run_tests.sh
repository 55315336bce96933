#!/usr/bin/env bash
# The test command: sets up the environment if needed, then runs the whole suite on CPU.
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
python -m pytest -q tests "$@"
