"""Research recipes kept apart from the library: benchmarks, studies and their results.

Nothing in ``linformer_plugin`` imports this package. Run its modules from the repository root,
e.g. ``python -m examples.benchmarks.attention --help`` (the root must be on the path, as
``python -m`` puts it there).
"""
