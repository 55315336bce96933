from setuptools import find_packages, setup

setup(
    name="linformer_plugin",
    version="0.1.0",
    description="Linformer (Wang et al. 2020) for fairseq: linformer_roberta via --user-dir",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    packages=find_packages(include=["linformer_plugin", "linformer_plugin.*"]),
    py_modules=["linformer_user_dir"],  # linformer-user-dir without importing fairseq
    python_requires=">=3.8",
    install_requires=[
        # official fairseq 0.12.2 does not import on Python >= 3.11; fairseq-fixed is the same
        # `fairseq` package, patched for today's Python and torch
        "fairseq==0.12.2; python_version < '3.11'",
        "fairseq-fixed==0.12.3.1; python_version >= '3.11'",
        "torch>=1.13",
        "sentencepiece>=0.1.99",
        "tensorboardX>=2.6",
        "numpy",
    ],
    extras_require={"test": ["pytest>=7"], "plot": ["matplotlib"]},
    entry_points={
        "console_scripts": [
            "linformer-user-dir = linformer_user_dir:main",
            "linformer-options = linformer_plugin.cli:main_options",
            "linformer-prepare-pretraining-data = linformer_plugin.cli:main_prepare_pretraining_data",
            "linformer-prepare-classification-data = linformer_plugin.cli:main_prepare_classification_data",
            "linformer-convert-checkpoint = linformer_plugin.cli:main_convert_checkpoint",
        ],
    },
)
