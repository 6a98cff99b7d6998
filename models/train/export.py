"""Stage `export`: ONNX FP32, ONNX INT8 (onnxruntime static QDQ) and OpenVINO IR FP32/INT8 (NNCF).

* ONNX: opset 17, dynamic batch, single input ``tiles`` and outputs ``logits`` / ``cam``
  (TorchScript exporter, ``dynamo=False``: its graph is plain ops ORT/OpenVINO/NNCF all accept).
* ONNX INT8: ``quant_pre_process`` (shape inference + BN/Conv fusion), then static QDQ,
  per-channel weights, calibrated on REAL training tiles. Only Conv layers are quantised; the
  forensic residual stem (slicing, resize, pooling, normalisation) and the CAM head stay in float
  because their tiny residual values are exactly what INT8 would round away.
* OpenVINO: ``ov.convert_model`` of the FP32 ONNX (FP32 IR, no FP16 compression), and NNCF
  post-training quantisation (Nagel et al. 2021 white paper) on the same calibration tiles, with
  the stem and head in the ignored scope.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import onnx
import torch

from .config import Config
from .detector import NPRDetector
from .fit import load_detector
from .tilebank import load_tilebank

__all__ = ["export_onnx", "export_all", "calibration_tiles"]


def export_onnx(model: NPRDetector, path: Path, tile: int, opset: int = 17) -> None:
    """Export ``model`` with input ``tiles`` [N,1,tile,tile] and outputs ``logits``, ``cam``."""
    model = model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.rand(2, 1, tile, tile),), str(path), input_names=["tiles"],
                          output_names=["logits", "cam"], opset_version=opset, dynamo=False,
                          dynamic_axes={"tiles": {0: "N"}, "logits": {0: "N"}, "cam": {0: "N"}})
    m = onnx.load(str(path))
    onnx.checker.check_model(m)


def calibration_tiles(work: Path, n: int, seed: int) -> np.ndarray:
    """``n`` real training tiles, spread over sources (calibration must see real statistics)."""
    bank = load_tilebank(work, "train")
    real = np.nonzero(bank["label"] == 0)[0]
    from .fit import sampling_probs
    p = sampling_probs(np.zeros(len(real), int), bank["group"][real])
    pick = np.random.default_rng(seed).choice(real, size=min(n, len(real)), replace=False, p=p)
    return np.asarray(bank["tiles"][np.sort(pick)], np.float32)[:, None]


def _conv_names(model_path: Path) -> list[str]:
    return [n.name for n in onnx.load(str(model_path)).graph.node if n.op_type == "Conv"]


def quantize_onnx(fp32: Path, out: Path, calib: np.ndarray, exclude_first_conv: bool) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it: Iterator[np.ndarray] = iter([calib[i:i + 16] for i in range(0, len(calib), 16)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            b = next(self.it, None)
            return None if b is None else {"tiles": b}

    convs = _conv_names(pre)
    exclude = [convs[-1]] + ([convs[0]] if exclude_first_conv else [])
    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=["Conv"], nodes_to_exclude=exclude,
                    extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    pre.unlink()


def export_openvino(fp32: Path, out_dir: Path, calib: np.ndarray) -> None:
    import nncf
    import openvino as ov

    out_dir.mkdir(parents=True, exist_ok=True)
    ovm = ov.convert_model(str(fp32))
    ov.save_model(ovm, str(out_dir / "model-fp32.xml"), compress_to_fp16=False)
    convs = [op.get_friendly_name() for op in ovm.get_ordered_ops() if op.get_type_name() == "Convolution"]
    ignored = nncf.IgnoredScope(names=[convs[-1]], validate=False) if convs else nncf.IgnoredScope()
    ds = nncf.Dataset([calib[i:i + 16] for i in range(0, len(calib), 16)])
    q = nncf.quantize(ovm, ds, subset_size=len(calib), ignored_scope=ignored,
                      model_type=None, preset=nncf.QuantizationPreset.PERFORMANCE)
    ov.save_model(q, str(out_dir / "model-int8.xml"), compress_to_fp16=False)


def export_all(work: Path, cfg: Config, log: Callable[[str], None]) -> None:
    exp = work / f"export-{cfg.version}"
    model = load_detector(work / f"detector-{cfg.version}-last.pt")
    tile = cfg.tiles["tile"]
    export_onnx(model, exp / "model-fp32.onnx", tile, cfg.export["opset"])
    log("export: ONNX fp32 written")
    if not cfg.export.get("int8", True):
        import openvino as ov
        ov.save_model(ov.convert_model(str(exp / "model-fp32.onnx")), str(exp / "openvino" / "model-fp32.xml"),
                      compress_to_fp16=False)
        return
    calib = calibration_tiles(work, cfg.export["calib_tiles"], cfg.seed)
    quantize_onnx(exp / "model-fp32.onnx", exp / "model-int8.onnx", calib, exclude_first_conv=False)
    quantize_onnx(exp / "model-fp32.onnx", exp / "model-int8-floatstem.onnx", calib, exclude_first_conv=True)
    log("export: ONNX int8 written (all convs, and first conv in float)")
    export_openvino(exp / "model-fp32.onnx", exp / "openvino", calib)
    log("export: OpenVINO IR fp32 + int8 written")
    (exp / "export.json").write_text(json.dumps({"calib_tiles": int(len(calib)), "opset": cfg.export["opset"]}))
