"""A stand-in for the shipped detector when no model is installed: the same layer shapes as
``models/train/detector.py`` (NPR/high-pass stem, stride-2 stem conv, seven depthwise-separable
blocks of widths 16/32/64/96, 1x1 CAM head; ~0.03 GMAC per 256x256 tile) with random weights,
built with the ONNX helper API (no torch) and run by ONNX Runtime FP32. Its *time* is what the
forensic layers are budgeted against; its outputs mean nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def build_standin(path: Path, width: tuple[int, ...] = (16, 32, 64, 96), seed: int = 0) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def w(name: str, shape: tuple[int, ...]) -> str:
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32), name))
        return name

    def conv(x: str, cin: int, cout: int, k: int, stride: int, group: int, relu: bool, tag: str) -> str:
        y = f"{tag}_out"
        nodes.append(helper.make_node("Conv", [x, w(f"{tag}_w", (cout, cin // group, k, k)), w(f"{tag}_b", (cout,))],
                                      [y], pads=[k // 2] * 4, strides=[stride] * 2, group=group))
        if relu:
            nodes.append(helper.make_node("Relu", [y], [f"{tag}_r"]))
            return f"{tag}_r"
        return y

    x = conv("tiles", 1, 4, 3, 1, 1, False, "feat")  # stands in for the residual/NPR channels
    w0, w1, w2, w3 = width
    x = conv(x, 4, w0, 3, 2, 1, True, "stem")
    plan = [(w0, w1, 2), (w1, w1, 1), (w1, w2, 2), (w2, w2, 1), (w2, w3, 2), (w3, w3, 1), (w3, w3, 1)]
    for i, (ci, co, st) in enumerate(plan):
        x = conv(x, ci, ci, 3, st, ci, True, f"dw{i}")
        x = conv(x, ci, co, 1, 1, 1, True, f"pw{i}")
    cam4 = conv(x, w3, 1, 1, 1, 1, False, "head")
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "axis1"))
    inits.append(numpy_helper.from_array(np.array([1, 2], np.int64), "axes12"))
    nodes.append(helper.make_node("Squeeze", [cam4, "axis1"], ["cam"]))
    nodes.append(helper.make_node("ReduceMean", ["cam", "axes12"], ["logits"], keepdims=0))
    graph = helper.make_graph(
        nodes, "standin",
        [helper.make_tensor_value_info("tiles", TensorProto.FLOAT, ["N", 1, 256, 256])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N"]),
         helper.make_tensor_value_info("cam", TensorProto.FLOAT, ["N", 16, 16])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8  # readable by every onnxruntime the agent supports
    onnx.save(model, path)
    return path


class StandinRunner:
    """Runs tiles through the stand-in in batches of 16, as ``edge_agent.detect`` does."""

    def __init__(self, path: Path, threads: int = 2) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def run(self, tiles: np.ndarray) -> None:
        for s in range(0, tiles.shape[0], 16):
            self.session.run(None, {"tiles": tiles[s : s + 16]})
