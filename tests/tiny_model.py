"""A tiny detector built with the ONNX helper API at test time (no torch), following the
shipped-model contract: input ``tiles`` [N,1,T,T] in [0,1], outputs ``logits`` [N] and ``cam``
[N,h,w] with logits == cam mean. Its "evidence" is local high-frequency energy (|Laplacian|),
so a noisy patch pasted into a smooth image lights up where it was pasted.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def build_tiny_model(
    directory: Path,
    tile: int = 64,
    max_tiles: int = 64,
    scale: float = 400.0,
    bias: float = 4.0,
    thresholds: tuple[float, float] = (0.5, 0.9),
    aggregate: str = "max",
    with_openvino: bool = False,
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    lap = np.array([[0, -1, 0], [-1, 4, -1], [0, -1, 0]], dtype=np.float32).reshape(1, 1, 3, 3)
    nodes = [
        helper.make_node("Conv", ["tiles", "lap"], ["hp"], pads=[1, 1, 1, 1]),
        helper.make_node("Abs", ["hp"], ["ahp"]),
        helper.make_node("AveragePool", ["ahp"], ["pooled"], kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("Mul", ["pooled", "scale"], ["scaled"]),
        helper.make_node("Sub", ["scaled", "bias"], ["cam4"]),
        helper.make_node("Squeeze", ["cam4", "axis1"], ["cam"]),
        helper.make_node("ReduceMean", ["cam", "axes12"], ["logits"], keepdims=0),
    ]
    inits = [
        numpy_helper.from_array(lap, "lap"),
        numpy_helper.from_array(np.array(scale, dtype=np.float32), "scale"),
        numpy_helper.from_array(np.array(bias, dtype=np.float32), "bias"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "axes12"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny-detector",
        [helper.make_tensor_value_info("tiles", TensorProto.FLOAT, ["N", 1, tile, tile])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N"]),
            helper.make_tensor_value_info("cam", TensorProto.FLOAT, ["N", tile // 8, tile // 8]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx_path = directory / "model-fp32.onnx"
    onnx.save(model, str(onnx_path))
    files = [{"path": onnx_path.name, "sha256": _sha(onnx_path), "format": "onnx", "precision": "fp32"}]
    if with_openvino:
        import openvino as ov

        (directory / "openvino").mkdir(exist_ok=True)
        xml = directory / "openvino" / "model-fp32.xml"
        ov.save_model(ov.convert_model(str(onnx_path)), str(xml), compress_to_fp16=False)
        files.append({"path": "openvino/model-fp32.xml", "sha256": _sha(xml), "format": "openvino-xml", "precision": "fp32"})
        binp = xml.with_suffix(".bin")
        files.append({"path": "openvino/model-fp32.bin", "sha256": _sha(binp), "format": "openvino-bin", "precision": "fp32"})
    manifest = {
        "schema": 1,
        "name": "tiny-test",
        "version": "0.0.1",
        "files": files,
        "input": {"name": "tiles", "layout": "NCHW", "dtype": "float32", "range": [0, 1], "photometric": "MONOCHROME2"},
        "outputs": {"logits": "logits", "cam": "cam"},
        "tiling": {"tile": tile, "max_tiles": max_tiles, "aggregate": aggregate, "topk": 2},
        "thresholds": {"suspicious": thresholds[0], "synthetic": thresholds[1], "chosen_on": "test fixture"},
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return directory
