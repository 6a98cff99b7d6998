"""Shared fixtures. Append-only: several test modules (and engineers) add to this file."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.detect import Detector, open_detector
from edge_agent.pipeline import Pipeline
from tiny_model import build_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny |Laplacian| detector (tests/tiny_model.py) as ONNX and OpenVINO IR, built once."""
    # scale 40 (not the default 400): the zero-padded Laplacian sees every tile border as an edge,
    # and at 400 that saturates every image to score 1.0; at 40 a smooth image or a radiograph
    # scores 0.1-0.3 (authentic) and pasted noise scores 1.0, so score comparisons mean something.
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"), scale=40.0, with_openvino=True)


@pytest.fixture(scope="session")
def tiny_detector(tiny_model_dir: Path) -> Detector:
    return open_detector(tiny_model_dir, backend="onnxruntime", threads=1)


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_detector: Detector) -> Pipeline:
    return Pipeline(tiny_detector)
