"""YuNet run by onnxruntime: the same model file and the same decoding as OpenCV's `cv2.FaceDetectorYN`, in about
half its time on 2 CPU cores (`python -m fer_hf.bench faces --yunet-engine onnxruntime|opencv`, two runs: 9.0 vs 15.1
and 8.2 vs 17.0 ms a scene).

The 2023mar file declares a fixed 1x3x640x640 input, although every Reshape in it takes -1 and its Resizes take
scales: only the declared shapes pin the size. `dynamic_model` rewrites those declarations in the serialized model
(the input's height/width and the outputs' anchor counts become names; the intermediate shapes, which OpenCV and
onnxruntime infer again, are dropped), so onnxruntime takes any size that is a multiple of 32, as OpenCV pads to.
It edits the protobuf wire format directly: the light install has onnxruntime but not the `onnx` package.

Decoding follows OpenCV's `FaceDetectorYNImpl::postProcess` (objdetect/src/face_detect.cpp, 4.8+): per stride
8/16/32, score = sqrt(clamp(cls) * clamp(obj)), box centre = (cell + offset) * stride, side = exp(size) * stride,
landmarks = (cell + offset) * stride; then `cv2.dnn.NMSBoxes` on integer boxes. `tests/test_yunet.py` holds the
two to the same faces on real photos.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np

from fer_hf.exports.runtime import session_options

STRIDES = (8, 16, 32)
DIVISOR = 32  # the network downsamples by 32: OpenCV pads each side up to a multiple of it
OUTPUTS = tuple(f"{kind}_{stride}" for kind in ("cls", "obj", "bbox", "kps") for stride in STRIDES)


class YuNetFormatError(ValueError):
    """A model file that is not YuNet 2023mar as this runner decodes it."""


# ---------------------------------------------------------------- the model's declared shapes
# Field numbers of onnx.proto (ModelProto.graph = 7; GraphProto.input/output/value_info = 11/12/13;
# ValueInfoProto.type = 2; TypeProto.tensor_type = 1; TypeProto.Tensor.shape = 2; TensorShapeProto.dim = 1;
# Dimension.dim_value/dim_param = 1/2).
_GRAPH, _INPUT, _OUTPUT, _VALUE_INFO, _TYPE, _TENSOR, _SHAPE, _DIM, _DIM_PARAM = 7, 11, 12, 13, 2, 1, 2, 1, 2


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if byte < 0x80:
            return value, pos


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _fields(buf: bytes):
    """(field number, wire type, the field's raw bytes, its payload for length-delimited fields) in order."""
    pos = 0
    while pos < len(buf):
        start = pos
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        payload = b""
        if wire == 0:
            _, pos = _varint(buf, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            size, pos = _varint(buf, pos)
            payload, pos = buf[pos : pos + size], pos + size
        else:
            raise YuNetFormatError(f"unexpected protobuf wire type {wire} (field {number})")
        if pos > len(buf):
            raise YuNetFormatError("the protobuf message ends inside a field")
        yield number, wire, buf[start:pos], payload


def _message(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | 2) + _encode_varint(len(payload)) + payload


def _rewrite(buf: bytes, edits: dict) -> bytes:
    """`buf` with each length-delimited field whose number is in `edits` replaced by edits[number](payload) (None
    drops the field); every other field is copied byte for byte."""
    out = bytearray()
    for number, wire, raw, payload in _fields(buf):
        if wire == 2 and number in edits:
            new = edits[number](payload)
            if new is not None:
                out += _message(number, new)
        else:
            out += raw
    return bytes(out)


def _named_dims(value_info: bytes, names: dict[int, str]) -> bytes:
    """A ValueInfoProto whose tensor dims at the indices in `names` become those symbolic names."""
    index = itertools.count()

    def dim(payload: bytes) -> bytes:
        position = next(index)
        return _message(_DIM_PARAM, names[position].encode()) if position in names else payload

    shape = lambda payload: _rewrite(payload, {_DIM: dim})  # noqa: E731
    tensor = lambda payload: _rewrite(payload, {_SHAPE: shape})  # noqa: E731
    return _rewrite(value_info, {_TYPE: lambda payload: _rewrite(payload, {_TENSOR: tensor})})


def dynamic_model(model: bytes) -> bytes:
    """A serialized YuNet 2023mar ONNX model -> the same model declaring input (1, 3, height, width) and outputs
    (1, anchors, C), without the intermediate shape records."""
    inputs, outputs = itertools.count(), itertools.count()

    def image_input(value_info: bytes) -> bytes:  # the first input; older files also list their weights as inputs
        return _named_dims(value_info, {2: "height", 3: "width"}) if next(inputs) == 0 else value_info

    def graph(payload: bytes) -> bytes:
        return _rewrite(
            payload,
            {
                _INPUT: image_input,
                _OUTPUT: lambda vi: _named_dims(vi, {1: f"anchors_{next(outputs)}"}),
                _VALUE_INFO: lambda vi: None,
            },
        )

    return _rewrite(model, {_GRAPH: graph})


# ---------------------------------------------------------------- running and decoding


class OrtYuNet:
    """detect(image) -> (N, 15) float32 rows as `cv2.FaceDetectorYN.detect` gives them: x, y, w, h, 5 landmarks
    (x, y), score. Thread-safe (onnxruntime sessions are), unlike FaceDetectorYN."""

    def __init__(self, path: str | Path, score_threshold: float, nms_threshold: float, top_k: int = 5000):
        import onnxruntime as ort

        self.score_threshold, self.nms_threshold, self.top_k = score_threshold, nms_threshold, top_k
        try:
            model = dynamic_model(Path(path).read_bytes())
            self.session = ort.InferenceSession(model, session_options(), providers=["CPUExecutionProvider"])
        except (YuNetFormatError, IndexError) as err:
            reason = "it ends inside a field" if isinstance(err, IndexError) else err
            raise YuNetFormatError(f"{path} cannot be read as an ONNX model ({reason})") from None
        except Exception as err:  # noqa: BLE001  (onnxruntime's pybind errors share no base class but Exception)
            reason = " ".join(str(err).split())[:200]
            raise YuNetFormatError(f"{path} cannot be read by onnxruntime ({reason})") from None
        inputs, names = self.session.get_inputs(), [o.name for o in self.session.get_outputs()]
        if len(inputs) != 1 or sorted(names) != sorted(OUTPUTS):
            raise YuNetFormatError(
                f"{path} cannot be read as YuNet: expected one input and 2023mar's outputs {', '.join(OUTPUTS)}, "
                f"found {len(inputs)} input(s) and {', '.join(names)}"
            )
        self.input_name = inputs[0].name

    def detect(self, image: np.ndarray, rgb: bool = False) -> np.ndarray:
        """(H, W, 3) uint8, BGR as YuNet was trained on (rgb=True: the channels are swapped while the input is
        built, with no extra copy) -> (N, 15) rows, best first."""
        height, width = image.shape[:2]
        pad_h, pad_w = -(-height // DIVISOR) * DIVISOR, -(-width // DIVISOR) * DIVISOR
        blob = np.zeros((1, 3, pad_h, pad_w), np.float32)  # zero padding right and below, as OpenCV's
        blob[0, :, :height, :width] = (image[..., ::-1] if rgb else image).transpose(2, 0, 1)
        found = dict(zip(OUTPUTS, self.session.run(list(OUTPUTS), {self.input_name: blob}), strict=True))
        rows = [self._decode(found, stride, pad_h // stride, pad_w // stride) for stride in STRIDES]
        return self._nms(np.concatenate(rows))

    def _decode(self, found: dict, stride: int, rows: int, cols: int) -> np.ndarray:
        cls, obj = (np.clip(found[f"{kind}_{stride}"][0, :, 0], 0, 1) for kind in ("cls", "obj"))
        score = np.sqrt(cls * obj)  # (rows * cols,)
        keep = np.flatnonzero(score >= self.score_threshold)
        cells = np.stack([keep % cols, keep // cols], 1).astype(np.float32)  # (K, 2) column, row
        bbox, kps = found[f"bbox_{stride}"][0, keep], found[f"kps_{stride}"][0, keep].reshape(-1, 5, 2)
        centre = (cells + bbox[:, :2]) * stride
        size = np.exp(bbox[:, 2:]) * stride
        landmarks = ((kps + cells[:, None]) * stride).reshape(-1, 10)
        return np.concatenate([centre - size / 2, size, landmarks, score[keep, None]], 1).astype(np.float32)

    def _nms(self, rows: np.ndarray) -> np.ndarray:
        if len(rows) <= 1:
            return rows
        boxes = rows[:, :4].astype(np.int32).tolist()  # OpenCV merges on integer boxes (truncated)
        keep = cv2.dnn.NMSBoxes(boxes, rows[:, 14].tolist(), self.score_threshold, self.nms_threshold, 1.0, self.top_k)
        return rows[np.asarray(keep, int).reshape(-1)]
