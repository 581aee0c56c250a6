"""Reads a Caffe ``.caffemodel`` (binary ``caffe.NetParameter``) without Caffe.

The message definitions below are a minimal subset of ``caffe.proto``
(BVLC/caffe), declared with our own field names but Caffe's field numbers
and wire types, so the ``protobuf`` package can parse the file; fields not
declared here are skipped by the parser (they are not needed to rebuild a
PyramidNet: solver settings, fillers, data layers' parameters ...).

Field numbers used (caffe.proto):

* NetParameter: name 1, layers 2 (old V1LayerParameter), input 3,
  input_dim 4, input_shape 8, layer 100 (LayerParameter).
* LayerParameter: name 1, type 2, bottom 3, top 4, blobs 7,
  concat_param 104, convolution_param 106,
  dropout_param 108, eltwise_param 110, inner_product_param 117,
  pooling_param 121, batch_norm_param 139, scale_param 142.
* BlobProto: num 1, channels 2, height 3, width 4, data 5 (packed float),
  double_data 8 (packed double), shape 7 (BlobShape: dim 1, packed int64).
* ConvolutionParameter: num_output 1, bias_term 2, pad 3, kernel_size 4,
  group 5, stride 6, pad_h 9, pad_w 10, kernel_h 11, kernel_w 12,
  stride_h 13, stride_w 14, dilation 18.
* PoolingParameter: pool 1 (MAX 0, AVE 1, STOCHASTIC 2), kernel_size 2,
  stride 3, pad 4, kernel_h 5, kernel_w 6, stride_h 7, stride_w 8, pad_h 9,
  pad_w 10, global_pooling 12.
* BatchNormParameter: use_global_stats 1, moving_average_fraction 2, eps 3.
* ScaleParameter: axis 1, num_axes 2, bias_term 4.
* ConcatParameter: concat_dim 1, axis 2. EltwiseParameter: operation 1
  (PROD 0, SUM 1, MAX 2), coeff 2. InnerProductParameter: num_output 1,
  bias_term 2, axis 5, transpose 6. DropoutParameter: dropout_ratio 1.
* V1LayerParameter: name 4 (only used to name the old format in errors).

Blob data are declared as ``bytes``: a packed repeated float field is one
length-delimited record on the wire, so the floats arrive as one byte string
that numpy reads directly (a 100M-parameter model parses in seconds instead of
building Python float lists). A writer may also emit repeated floats unpacked
(one wire record per value); such blobs are re-parsed with a second
definition that declares ``data`` as ``repeated float``.
"""

from typing import Any, Dict, List

import numpy as np
from google.protobuf import descriptor_pb2
from google.protobuf import descriptor_pool
from google.protobuf import message as message_lib
from google.protobuf import message_factory

_F = descriptor_pb2.FieldDescriptorProto
_OPTIONAL = _F.LABEL_OPTIONAL
_REPEATED = _F.LABEL_REPEATED

# (message name, [(field name, number, label, type, message type or default)])
_MESSAGES = [
    ("BlobShape", [("dim", 1, _REPEATED, _F.TYPE_INT64, None)]),
    ("BlobProto", [("num", 1, _OPTIONAL, _F.TYPE_INT64, None),
                   ("channels", 2, _OPTIONAL, _F.TYPE_INT64, None),
                   ("height", 3, _OPTIONAL, _F.TYPE_INT64, None),
                   ("width", 4, _OPTIONAL, _F.TYPE_INT64, None),
                   ("data", 5, _OPTIONAL, _F.TYPE_BYTES, None),
                   ("shape", 7, _OPTIONAL, _F.TYPE_MESSAGE, "BlobShape"),
                   ("double_data", 8, _OPTIONAL, _F.TYPE_BYTES, None)]),
    ("BlobProtoUnpacked", [("data", 5, _REPEATED, _F.TYPE_FLOAT, None),
                           ("double_data", 8, _REPEATED, _F.TYPE_DOUBLE,
                            None)]),
    ("ConvolutionParameter", [
        ("num_output", 1, _OPTIONAL, _F.TYPE_UINT32, None),
        ("bias_term", 2, _OPTIONAL, _F.TYPE_BOOL, "true"),
        ("pad", 3, _REPEATED, _F.TYPE_UINT32, None),
        ("kernel_size", 4, _REPEATED, _F.TYPE_UINT32, None),
        ("group", 5, _OPTIONAL, _F.TYPE_UINT32, "1"),
        ("stride", 6, _REPEATED, _F.TYPE_UINT32, None),
        ("pad_h", 9, _OPTIONAL, _F.TYPE_UINT32, None),
        ("pad_w", 10, _OPTIONAL, _F.TYPE_UINT32, None),
        ("kernel_h", 11, _OPTIONAL, _F.TYPE_UINT32, None),
        ("kernel_w", 12, _OPTIONAL, _F.TYPE_UINT32, None),
        ("stride_h", 13, _OPTIONAL, _F.TYPE_UINT32, None),
        ("stride_w", 14, _OPTIONAL, _F.TYPE_UINT32, None),
        ("dilation", 18, _REPEATED, _F.TYPE_UINT32, None)]),
    ("PoolingParameter", [
        ("pool", 1, _OPTIONAL, _F.TYPE_INT32, "0"),
        ("kernel_size", 2, _OPTIONAL, _F.TYPE_UINT32, None),
        ("stride", 3, _OPTIONAL, _F.TYPE_UINT32, "1"),
        ("pad", 4, _OPTIONAL, _F.TYPE_UINT32, "0"),
        ("kernel_h", 5, _OPTIONAL, _F.TYPE_UINT32, None),
        ("kernel_w", 6, _OPTIONAL, _F.TYPE_UINT32, None),
        ("stride_h", 7, _OPTIONAL, _F.TYPE_UINT32, None),
        ("stride_w", 8, _OPTIONAL, _F.TYPE_UINT32, None),
        ("pad_h", 9, _OPTIONAL, _F.TYPE_UINT32, None),
        ("pad_w", 10, _OPTIONAL, _F.TYPE_UINT32, None),
        ("global_pooling", 12, _OPTIONAL, _F.TYPE_BOOL, "false")]),
    ("BatchNormParameter", [
        ("use_global_stats", 1, _OPTIONAL, _F.TYPE_BOOL, None),
        ("moving_average_fraction", 2, _OPTIONAL, _F.TYPE_FLOAT, "0.999"),
        ("eps", 3, _OPTIONAL, _F.TYPE_FLOAT, "1e-05")]),
    ("ScaleParameter", [("axis", 1, _OPTIONAL, _F.TYPE_INT32, "1"),
                        ("num_axes", 2, _OPTIONAL, _F.TYPE_INT32, "1"),
                        ("bias_term", 4, _OPTIONAL, _F.TYPE_BOOL, "false")]),
    ("ConcatParameter", [("concat_dim", 1, _OPTIONAL, _F.TYPE_UINT32, "1"),
                         ("axis", 2, _OPTIONAL, _F.TYPE_INT32, "1")]),
    ("EltwiseParameter", [("operation", 1, _OPTIONAL, _F.TYPE_INT32, "1"),
                          ("coeff", 2, _REPEATED, _F.TYPE_FLOAT, None)]),
    ("InnerProductParameter", [
        ("num_output", 1, _OPTIONAL, _F.TYPE_UINT32, None),
        ("bias_term", 2, _OPTIONAL, _F.TYPE_BOOL, "true"),
        ("axis", 5, _OPTIONAL, _F.TYPE_INT32, "1"),
        ("transpose", 6, _OPTIONAL, _F.TYPE_BOOL, "false")]),
    ("DropoutParameter", [("dropout_ratio", 1, _OPTIONAL, _F.TYPE_FLOAT,
                           "0.5")]),
    ("LayerParameter", [
        ("name", 1, _OPTIONAL, _F.TYPE_STRING, None),
        ("type", 2, _OPTIONAL, _F.TYPE_STRING, None),
        ("bottom", 3, _REPEATED, _F.TYPE_STRING, None),
        ("top", 4, _REPEATED, _F.TYPE_STRING, None),
        ("blobs", 7, _REPEATED, _F.TYPE_MESSAGE, "BlobProto"),
        ("concat_param", 104, _OPTIONAL, _F.TYPE_MESSAGE, "ConcatParameter"),
        ("convolution_param", 106, _OPTIONAL, _F.TYPE_MESSAGE,
         "ConvolutionParameter"),
        ("dropout_param", 108, _OPTIONAL, _F.TYPE_MESSAGE, "DropoutParameter"),
        ("eltwise_param", 110, _OPTIONAL, _F.TYPE_MESSAGE, "EltwiseParameter"),
        ("inner_product_param", 117, _OPTIONAL, _F.TYPE_MESSAGE,
         "InnerProductParameter"),
        ("pooling_param", 121, _OPTIONAL, _F.TYPE_MESSAGE, "PoolingParameter"),
        ("batch_norm_param", 139, _OPTIONAL, _F.TYPE_MESSAGE,
         "BatchNormParameter"),
        ("scale_param", 142, _OPTIONAL, _F.TYPE_MESSAGE, "ScaleParameter")]),
    ("V1LayerParameter", [("name", 4, _OPTIONAL, _F.TYPE_STRING, None)]),
    ("NetParameter", [
        ("name", 1, _OPTIONAL, _F.TYPE_STRING, None),
        ("layers", 2, _REPEATED, _F.TYPE_MESSAGE, "V1LayerParameter"),
        ("input", 3, _REPEATED, _F.TYPE_STRING, None),
        ("input_dim", 4, _REPEATED, _F.TYPE_INT64, None),
        ("input_shape", 8, _REPEATED, _F.TYPE_MESSAGE, "BlobShape"),
        ("layer", 100, _REPEATED, _F.TYPE_MESSAGE, "LayerParameter")]),
]

_PACKAGE = "pyramidnet_tf_caffe_subset"


def _build_classes() -> Dict[str, Any]:
  file_proto = descriptor_pb2.FileDescriptorProto(
      name=f"{_PACKAGE}.proto", package=_PACKAGE, syntax="proto2")
  for name, fields in _MESSAGES:
    message = file_proto.message_type.add(name=name)
    for field_name, number, label, kind, extra in fields:
      field = message.field.add(name=field_name, number=number, label=label,
                                type=kind)
      if kind == _F.TYPE_MESSAGE:
        field.type_name = f".{_PACKAGE}.{extra}"
      elif extra is not None:
        field.default_value = extra
  pool = descriptor_pool.DescriptorPool()
  pool.Add(file_proto)
  return {name: message_factory.GetMessageClass(
      pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
          for name, _ in _MESSAGES}


_CLASSES = _build_classes()
NetParameter = _CLASSES["NetParameter"]
LayerParameter = _CLASSES["LayerParameter"]
BlobProto = _CLASSES["BlobProto"]
BlobProtoUnpacked = _CLASSES["BlobProtoUnpacked"]

POOL_MAX, POOL_AVE = 0, 1
ELTWISE_SUM = 1


class CaffeFormatError(ValueError):
  """The file is not a readable Caffe NetParameter."""


def blob_array(blob, where: str) -> np.ndarray:
  """A BlobProto's values as float32, shaped by ``shape`` (or N/C/H/W).

  Reads packed float or double data, and unpacked repeated values; a blob
  with neither shape nor N/C/H/W comes back one-dimensional.

  Args:
    blob: a parsed ``BlobProto``.
    where: what the blob is (layer and index), for error messages.

  Raises:
    CaffeFormatError: if the number of values does not match the shape.
  """
  if blob.HasField("shape"):
    shape = [int(d) for d in blob.shape.dim]
  elif any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
    shape = [int(blob.num), int(blob.channels), int(blob.height),
             int(blob.width)]
  else:
    shape = None
  if blob.data:
    values = np.frombuffer(blob.data, dtype="<f4")
    if len(blob.data) % 4:
      raise CaffeFormatError(f"{where}: float data of {len(blob.data)} bytes "
                             "is not a multiple of 4")
  elif blob.double_data:
    values = np.frombuffer(blob.double_data, dtype="<f8")
    if len(blob.double_data) % 8:
      raise CaffeFormatError(f"{where}: double data of "
                             f"{len(blob.double_data)} bytes is not a "
                             "multiple of 8")
  else:
    # Unpacked repeated floats (or really empty): parse them as such.
    unpacked = BlobProtoUnpacked.FromString(blob.SerializeToString())
    if unpacked.data:
      values = np.asarray(unpacked.data, dtype=np.float32)
    else:
      values = np.asarray(unpacked.double_data, dtype=np.float64)
  if shape is None:
    shape = [values.size]
  count = int(np.prod(shape)) if shape else 1
  if values.size != count:
    raise CaffeFormatError(
        f"{where}: blob of shape {shape} should hold {count} values, found "
        f"{values.size} (truncated or corrupt file?)")
  return values.astype(np.float32).reshape(shape)


def parse_net(data: bytes, path: str = "<bytes>"):
  """Parses ``data`` as a NetParameter; errors name ``path``.

  Args:
    data: the whole contents of a ``.caffemodel``.
    path: the file's name, for error messages.

  Returns:
    The parsed ``NetParameter`` (with at least one ``layer``).

  Raises:
    CaffeFormatError: if ``data`` does not parse, uses the old V1 ``layers``
      format, or holds no layers.
  """
  net = NetParameter()
  try:
    net.ParseFromString(data)
  except message_lib.DecodeError as e:
    raise CaffeFormatError(
        f"{path}: not a valid Caffe NetParameter protobuf ({e}); the file is "
        "truncated, corrupt, or not a .caffemodel") from None
  if not net.layer:
    if net.layers:
      raise CaffeFormatError(
          f"{path}: uses the old V1 'layers' format ({len(net.layers)} "
          "layers); V1 has no BatchNorm/Scale layers, so it cannot hold a "
          "PyramidNet. Upgrade it with Caffe's upgrade_net_proto_binary")
    raise CaffeFormatError(f"{path}: the NetParameter holds no layers; it is "
                           "empty, truncated, or not a .caffemodel")
  return net


def load(path: str):
  """Reads and parses the ``.caffemodel`` at ``path`` (see ``parse_net``).

  Args:
    path: a local file path.

  Raises:
    CaffeFormatError: as ``parse_net``.
    OSError: if the file cannot be read.
  """
  with open(path, "rb") as f:
    return parse_net(f.read(), path)


def looks_like_caffemodel(head: bytes) -> bool:
  """Whether a file starting with ``head`` plausibly is a NetParameter.

  A .caffemodel starts with field 1 (name, tag 0x0a), field 2 (V1 layers,
  0x12), field 3/4/8 (inputs) or field 100 (layer: tag bytes 0xa2 0x06).

  Args:
    head: the file's first bytes (two suffice).
  """
  if not head:
    return False
  return head[0] in (0x0a, 0x12, 0x1a, 0x20, 0x42) or head[:2] == b"\xa2\x06"


def layer_blobs(layer) -> List[np.ndarray]:
  """Every blob of a ``LayerParameter`` as a float32 array, in file order.

  Args:
    layer: a parsed ``LayerParameter``.

  Raises:
    CaffeFormatError: as ``blob_array``.
  """
  return [blob_array(b, f"layer '{layer.name}' blob {i}")
          for i, b in enumerate(layer.blobs)]
