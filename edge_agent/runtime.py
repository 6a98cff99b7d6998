"""Run a shipped detector on tiles: OpenVINO or ONNX Runtime behind one narrow interface.

``Backend.run(tiles) -> (logits [N], cam [N,h,w])`` is the only thing the pipeline calls,
so a runtime can be swapped (or faked at a hardware boundary) without touching the pipeline.

Automatic choice (logged with its reason at start):
1. ONNX Runtime with TensorRT / CUDA execution providers when they are present (NVIDIA Jetson);
2. otherwise OpenVINO on the CPU when it is installed and the model ships an INT8 IR (its INT8
   kernels are where it wins);
3. otherwise ONNX Runtime on the CPU: with the FP32 xray-npr models on this project's 2-core x86
   machine it beat OpenVINO FP32 (1.0.0: 64 tiles in 109 vs 158 ms; benchmarks/bench_pipeline.py).
"""

from __future__ import annotations

import logging
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from .errors import ModelError
from .manifest import ModelFile, ModelManifest

__all__ = ["Backend", "BackendChoice", "choose_backend", "open_backend", "BACKENDS"]

log = logging.getLogger(__name__)

BACKENDS = ("auto", "openvino", "onnxruntime")
PRECISIONS = ("auto", "int8", "fp32")
_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


class Backend(Protocol):
    name: str
    model_file: ModelFile

    def run(self, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class BackendChoice:
    backend: str  # "openvino" | "onnxruntime"
    providers: tuple[str, ...]
    model_file: ModelFile
    reason: str


def _precisions(precision: str) -> tuple[str, ...]:
    return ("int8", "fp32") if precision == "auto" else (precision,)


def _ort_providers() -> tuple[str, ...]:
    try:
        import onnxruntime as ort
    except ImportError:
        return ()
    return tuple(ort.get_available_providers())


def _openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def choose_backend(manifest: ModelManifest, backend: str = "auto", precision: str = "auto") -> BackendChoice:
    """Decide which runtime and which model file to use, and say why."""
    if backend not in BACKENDS:
        raise ModelError(f"backend {backend!r} is not one of {BACKENDS}")
    if precision not in PRECISIONS:
        raise ModelError(f"precision {precision!r} is not one of {PRECISIONS}")
    precs = _precisions(precision)
    providers = _ort_providers()
    onnx_file = manifest.pick("onnx", precs)
    ir_file = manifest.pick("openvino-xml", precs)

    def ort_choice(reason: str) -> BackendChoice:
        if not providers:
            raise ModelError("onnxruntime is not installed; pip install onnxruntime (or onnxruntime-gpu on a Jetson)")
        if onnx_file is None:
            raise ModelError(f"model {manifest.name} ships no ONNX file with precision in {precs}")
        use = tuple(p for p in (*_GPU_PROVIDERS, "CPUExecutionProvider") if p in providers)
        return BackendChoice("onnxruntime", use, onnx_file, reason)

    def ov_choice(reason: str) -> BackendChoice:
        if not _openvino_available():
            raise ModelError("openvino is not installed; pip install openvino, or set model.backend: onnxruntime")
        if ir_file is None:
            raise ModelError(f"model {manifest.name} ships no OpenVINO IR with precision in {precs}")
        return BackendChoice("openvino", ("CPU",), ir_file, reason)

    if backend == "onnxruntime":
        return ort_choice("set in config (model.backend: onnxruntime)")
    if backend == "openvino":
        return ov_choice("set in config (model.backend: openvino)")
    gpu = [p for p in _GPU_PROVIDERS if p in providers]
    if gpu and onnx_file is not None:
        return ort_choice(f"auto: GPU execution providers present ({', '.join(gpu)})")
    # Only import openvino when it may be used: the import alone costs ~100 MB of RSS.
    if ir_file is not None and ir_file.precision == "int8" and _openvino_available():
        return ov_choice(f"auto: no GPU provider; OpenVINO on the {platform.machine()} CPU with the INT8 IR")
    if onnx_file is None and ir_file is not None and _openvino_available():
        return ov_choice(f"auto: no GPU provider and no ONNX file; OpenVINO on the {platform.machine()} CPU")
    return ort_choice("auto: no GPU provider and no INT8 IR; ONNX Runtime on the CPU (faster than OpenVINO FP32 here)")


# ONNX Runtime's own default keeps the workers spinning after run(); benchmarks/bench_forensics.py
# turns this off to time the model that way too (it is ~10-40 % faster back to back on small images).
SPIN_STOP = True


class _OrtBackend:
    name = "onnxruntime"

    def __init__(self, manifest: ModelManifest, choice: BackendChoice, threads: int) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        # Worker threads stop spinning the moment run() returns instead of ~80 ms later: the
        # forensic layers that follow the model on the same two cores then run at full speed
        # (RG1: pipeline 105 -> 97 ms, docs/forensics.md "Speed"), and an idle agent burns no CPU.
        opts.add_session_config_entry("session.force_spinning_stop", "1" if SPIN_STOP else "0")
        self.model_file = choice.model_file
        self._session = ort.InferenceSession(
            str(manifest.path_of(choice.model_file)), sess_options=opts, providers=list(choice.providers)
        )
        self._input = manifest.input_name
        self._outputs = [manifest.logits_output, manifest.cam_output]

    def run(self, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, cam = self._session.run(self._outputs, {self._input: tiles})
        return np.asarray(logits).reshape(-1), np.asarray(cam).reshape(tiles.shape[0], *np.shape(cam)[-2:])


class _OpenVinoBackend:
    name = "openvino"

    def __init__(self, manifest: ModelManifest, choice: BackendChoice, threads: int, cache_dir: Path | None) -> None:
        import openvino as ov

        core = ov.Core()
        # f32: on CPUs with bf16 units (AVX512-BF16, AMX) OpenVINO otherwise runs an FP32 model in
        # bf16, which moved a score by 0.004 against ONNX Runtime and would shift the manifest's
        # thresholds, which were chosen in FP32 (an INT8 IR keeps its quantised layers either way).
        config: dict[str, object] = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                                     "INFERENCE_PRECISION_HINT": "f32"}
        if cache_dir is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)
            config["CACHE_DIR"] = str(cache_dir)
        model = core.read_model(str(manifest.path_of(choice.model_file)))
        self.model_file = choice.model_file
        self._compiled = core.compile_model(model, "CPU", config)
        self._request = self._compiled.create_infer_request()
        self._logits = self._compiled.output(manifest.logits_output)
        self._cam = self._compiled.output(manifest.cam_output)

    def run(self, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        result = self._request.infer({0: tiles})
        logits = np.asarray(result[self._logits]).reshape(-1)
        cam = np.asarray(result[self._cam])
        return logits, cam.reshape(tiles.shape[0], *cam.shape[-2:])


def open_backend(
    manifest: ModelManifest,
    choice: BackendChoice,
    threads: int = 2,
    cache_dir: Path | None = None,
) -> Backend:
    """Verify the chosen files' hashes, then load them into the chosen runtime."""
    needed = [choice.model_file]
    if choice.model_file.format == "openvino-xml":
        weights = [f for f in manifest.files if f.format == "openvino-bin" and f.precision == choice.model_file.precision]
        if not weights:
            raise ModelError(f"model {manifest.name}: IR {choice.model_file.path} has no openvino-bin weights listed")
        needed += weights
    manifest.verify_files(tuple(needed))
    log.info(
        "model %s %s: backend %s (%s), file %s [%s]",
        manifest.name, manifest.version, choice.backend, choice.reason, choice.model_file.path, ",".join(choice.providers),
    )
    try:
        if choice.backend == "openvino":
            return _OpenVinoBackend(manifest, choice, threads, cache_dir)
        return _OrtBackend(manifest, choice, threads)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"{choice.backend} cannot load {choice.model_file.path}: {exc}") from None
