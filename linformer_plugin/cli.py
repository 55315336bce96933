"""Small command-line helpers installed with the package."""

from . import USER_DIR


def print_user_dir():
    """Print the path to pass to ``fairseq-train --user-dir`` from any working directory."""
    print(USER_DIR)
