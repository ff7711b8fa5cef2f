"""Task modules built on prism_hf (each one a self-contained demo with its own CLI command)."""
