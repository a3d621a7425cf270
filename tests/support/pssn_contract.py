"""Build an ONNX with exactly PeopleSemSegNet's I/O by wrapping the default (selfie) model's graph.

NVIDIA's files cannot be downloaded here, so the contract is emulated with a real network:

    input_2:0  float32 [N,3,544,960]  BGR, x/127.5 - 1        (TAO ShuffleSeg; vanilla: input_1:0)
      → (x + 1)/2, BGR→RGB, bilinear resize to 256×256        (what the selfie graph wants)
      → selfie graph → p [N,1,256,256]
      → bilinear resize to 544×960, logits (log(1-p), log p)   (softmax of these is exactly (1-p, p))
      → NHWC [N,544,960,2] → ArgMax(axis=-1, keepdims=1)       (as TAO's exporter appends it)
    argmax_1   int64 [N,544,960,1]   (optionally Cast to int32, as TensorRT 8 engines report it)

Used by tests/test_peoplesemsegnet_contract.py and benchmarks/bench_segmentation.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

H, W = 544, 960


def _const(name: str, value: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name))


def build_contract_onnx(
    inner_path: Path,
    dst: Path,
    *,
    inner_layout: str = "NCHW",
    input_name: str = "input_2:0",
    out_dtype: str = "int64",
) -> Path:
    """Write the wrapped model to ``dst``.  ``inner_layout`` is the selfie graph's input/output layout."""
    inner = onnx.load(str(inner_path))
    inner = onnx.compose.add_prefix(inner, "inner/")
    g = inner.graph
    inits = {i.name for i in g.initializer}
    in_vi = next(i for i in g.input if i.name not in inits)
    out_vi = g.output[0]
    dims = in_vi.type.tensor_type.shape.dim
    batch = dims[0].dim_value if dims[0].HasField("dim_value") else "N"
    ih, iw = (dims[2].dim_value, dims[3].dim_value) if inner_layout == "NCHW" else (dims[1].dim_value, dims[2].dim_value)

    pre = [
        _const("c_one", np.array(1.0, np.float32)),
        _const("c_half", np.array(0.5, np.float32)),
        _const("c_bgr2rgb", np.array([2, 1, 0], np.int64)),
        _const("c_empty", np.array([], np.float32)),
        _const("c_roi", np.array([], np.float32)),
        _const("c_nc_start", np.array([0], np.int64)),
        _const("c_nc_end", np.array([2], np.int64)),
        _const("c_inner_hw", np.array([ih, iw], np.int64)),
        _const("c_out_hw", np.array([H, W], np.int64)),
        _const("c_eps", np.array(1e-6, np.float32)),
        _const("c_1meps", np.array(1 - 1e-6, np.float32)),
        helper.make_node("Add", [input_name, "c_one"], ["x1"]),
        helper.make_node("Mul", ["x1", "c_half"], ["x01_bgr"]),
        helper.make_node("Gather", ["x01_bgr", "c_bgr2rgb"], ["x01"], axis=1),
        helper.make_node("Shape", ["x01"], ["shape_in"]),
        helper.make_node("Slice", ["shape_in", "c_nc_start", "c_nc_end"], ["nc"]),
        helper.make_node("Concat", ["nc", "c_inner_hw"], ["size_inner"], axis=0),
        helper.make_node("Resize", ["x01", "c_roi", "c_empty", "size_inner"], ["x_small"], mode="linear", coordinate_transformation_mode="half_pixel"),
    ]
    if inner_layout == "NCHW":
        pre.append(helper.make_node("Identity", ["x_small"], [in_vi.name]))
        post = [helper.make_node("Identity", [out_vi.name], ["p_small"])]
    else:
        pre.append(helper.make_node("Transpose", ["x_small"], [in_vi.name], perm=[0, 2, 3, 1]))
        post = [helper.make_node("Transpose", [out_vi.name], ["p_small"], perm=[0, 3, 1, 2])]
    post += [
        helper.make_node("Shape", ["p_small"], ["shape_p"]),
        helper.make_node("Slice", ["shape_p", "c_nc_start", "c_nc_end"], ["nc_p"]),
        helper.make_node("Concat", ["nc_p", "c_out_hw"], ["size_out"], axis=0),
        helper.make_node("Resize", ["p_small", "c_roi", "c_empty", "size_out"], ["p_big"], mode="linear", coordinate_transformation_mode="half_pixel"),
        helper.make_node("Clip", ["p_big", "c_eps", "c_1meps"], ["p_clip"]),
        helper.make_node("Sub", ["c_one", "p_clip"], ["q_clip"]),
        helper.make_node("Log", ["p_clip"], ["l_person"]),
        helper.make_node("Log", ["q_clip"], ["l_background"]),
        helper.make_node("Concat", ["l_background", "l_person"], ["logits_nchw"], axis=1),
        helper.make_node("Transpose", ["logits_nchw"], ["logits_nhwc"], perm=[0, 2, 3, 1]),
    ]
    argmax_out = "argmax_1" if out_dtype == "int64" else "argmax_i64"
    post.append(helper.make_node("ArgMax", ["logits_nhwc"], [argmax_out], axis=-1, keepdims=1))
    if out_dtype == "int32":
        post.append(helper.make_node("Cast", [argmax_out], ["argmax_1"], to=TensorProto.INT32))

    graph = helper.make_graph(
        pre + list(g.node) + post,
        "peoplesemsegnet_contract",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [batch, 3, H, W])],
        [helper.make_tensor_value_info("argmax_1", TensorProto.INT64 if out_dtype == "int64" else TensorProto.INT32, [batch, H, W, 1])],
        initializer=list(g.initializer),
    )
    model = helper.make_model(graph, opset_imports=list(inner.opset_import), producer_name="privacy-filter-tests")
    model.ir_version = inner.ir_version
    onnx.checker.check_model(model)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    return dst


NVINFER_TXT = """\
[property]
gpu-id=0
net-scale-factor=0.007843
# Since the model input channel is 3, using RGB color format.
model-color-format=1
offsets=127.5;127.5;127.5
labelfile-path=./labels.txt
{onnx_key}={onnx}
infer-dims=3;544;960
batch-size=1
network-mode=1
num-detected-classes=2
interval=0
gie-unique-id=1
network-type=100
output-blob-names=argmax_1
segmentation-threshold=0.0
output-tensor-meta=1
segmentation-output-order=1
"""


def write_nvinfer_config(path: Path, onnx_rel: str, typo: bool = False) -> Path:
    """A DeepStream nvinfer config like NVIDIA's (``typo`` reproduces the vanilla file's ``onnx-file:=``)."""
    path.write_text(NVINFER_TXT.format(onnx_key="onnx-file:" if typo else "onnx-file", onnx=onnx_rel))
    return path
