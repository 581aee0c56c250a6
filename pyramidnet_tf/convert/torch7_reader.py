"""A reader for Torch7's binary serialization format (``torch.save``).

Torch7 (Lua) writes one object recursively (``torch/File.lua``
``writeObject``); every integer is little-endian, ``int`` 4 bytes, ``long``
8 bytes (x86-64 Linux, where fb.resnet.torch models were saved):

* type tag (int): 0 nil, 1 number (double), 2 string (int length + bytes),
  3 table, 4 Torch object, 5 boolean (int, 1 = true), 6 function,
  7/8 recursive function.
* tables, Torch objects and recursive functions then carry an int reference
  index; an index seen before means "the same object again" (shared tensors,
  cycles) and nothing else follows.
* a table: int entry count, then key object / value object pairs.
* a Torch object: a version string ``"V <n>"`` (absent in very old files, where
  this string is already the class name), the class name, then the class's
  own data. Tensors (``torch.FloatTensor`` ...): int nDimension, long sizes,
  long strides, long storage offset (1-based), then the storage object (or
  nil). Storages (``torch.FloatStorage`` ...): long element count, then raw
  elements. Any other class (``nn.Sequential``, ``cudnn.SpatialConvolution``
  ...) is written as the table of its fields.
* a function: int byte count, Lua bytecode, then a table of upvalues.

``load(path)`` returns plain Python values: dicts for tables, ``TorchObject``
for classes, numpy arrays for tensors and storages. Nothing here executes code
from the file.
"""

import struct
from typing import Any, Dict, List

import numpy as np

TYPE_NIL = 0
TYPE_NUMBER = 1
TYPE_STRING = 2
TYPE_TABLE = 3
TYPE_TORCH = 4
TYPE_BOOLEAN = 5
TYPE_FUNCTION = 6
TYPE_LEGACY_RECUR_FUNCTION = 7
TYPE_RECUR_FUNCTION = 8

# Storage element types. CUDA storages are written with the element type of
# their CPU counterpart (``torch.CudaStorage`` holds float32).
_STORAGE_DTYPES = {
    "Byte": "<u1", "Char": "<i1", "Short": "<i2", "Int": "<i4",
    "Long": "<i8", "Float": "<f4", "Double": "<f8", "Half": "<f2",
    "Cuda": "<f4", "CudaByte": "<u1", "CudaChar": "<i1", "CudaShort": "<i2",
    "CudaInt": "<i4", "CudaLong": "<i8", "CudaDouble": "<f8",
    "CudaHalf": "<f2",
}


class Torch7FormatError(ValueError):
  """The file is not a well-formed Torch7 binary serialization."""


class TorchObject:
  """An instance of a Lua Torch class other than a tensor or storage.

  Supports ``obj[key]``, ``key in obj`` and ``obj.get(key)`` on its
  fields, so module trees can be walked like the tables they were.

  Attributes:
    typename: the class, e.g. ``"cudnn.SpatialConvolution"``.
    version: the class version of the file's ``"V <n>"`` string (0 in very
      old files that have none).
    fields: the object's fields (``weight``, ``modules``, ``kW`` ...).
  """

  def __init__(self, typename: str, version: int):
    """An object with no fields yet (the reader fills them in).

    Args:
      typename: the Lua class name.
      version: the class version from the file.
    """
    self.typename = typename
    self.version = version
    self.fields: Dict[Any, Any] = {}

  def get(self, key, default=None):
    """The field ``key``, or ``default`` if the object has none.

    Args:
      key: a field name (Lua table keys may also be numbers).
      default: what to return for a missing field.
    """
    return self.fields.get(key, default)

  def __getitem__(self, key):
    return self.fields[key]

  def __contains__(self, key):
    return key in self.fields

  def __repr__(self):
    fields = sorted(map(str, self.fields))
    return f"TorchObject({self.typename}, fields={fields})"


class LuaFunction:
  """A serialized Lua function: kept as bytecode, never run.

  Attributes:
    bytecode: the function's Lua bytecode.
    upvalues: the table of its upvalues, as decoded (usually a dict).
  """

  def __init__(self, bytecode: bytes, upvalues: Any):
    """Wraps a function read from the file.

    Args:
      bytecode: the function's Lua bytecode.
      upvalues: its decoded upvalues (None until read, for recursive ones).
    """
    self.bytecode = bytecode
    self.upvalues = upvalues


def lua_list(table: Any) -> List[Any]:
  """The array part (keys 1..n) of a Lua table read as a dict.

  Args:
    table: a decoded Lua table (dict), or None (an empty list).

  Returns:
    The values of keys 1, 2, ... up to the first missing key.

  Raises:
    Torch7FormatError: if ``table`` is neither a dict nor None.
  """
  if table is None:
    return []
  if not isinstance(table, dict):
    raise Torch7FormatError(f"expected a Lua table, got {type(table).__name__}")
  items = []
  while len(items) + 1 in table:
    items.append(table[len(items) + 1])
  return items


class _Reader:
  """Decodes one ``torch.save`` byte string."""

  def __init__(self, data: bytes, path: str, long_size: int = 8):
    self.data = data
    self.path = path
    self.pos = 0
    self.objects: Dict[int, Any] = {}
    self.long_format = {8: "<q", 4: "<i"}[long_size]
    self.long_size = long_size

  def _take(self, count: int, what: str) -> bytes:
    if count < 0:
      raise Torch7FormatError(
          f"{self.path}: negative length {count} for {what} at byte "
          f"{self.pos}; the file is corrupt or not a Torch7 binary file")
    end = self.pos + count
    if end > len(self.data):
      raise Torch7FormatError(
          f"{self.path}: truncated: {what} needs {count} bytes at byte "
          f"{self.pos}, but the file has only {len(self.data)} bytes")
    chunk = self.data[self.pos:end]
    self.pos = end
    return chunk

  def int(self, what: str) -> int:
    return struct.unpack("<i", self._take(4, what))[0]

  def long(self, what: str) -> int:
    return struct.unpack(self.long_format, self._take(self.long_size, what))[0]

  def string(self, what: str) -> str:
    raw = self._take(self.int(f"length of {what}"), what)
    return raw.decode("latin-1")

  def read_object(self, where: str = "<root>") -> Any:
    start = self.pos
    tag = self.int(f"type tag of {where}")
    if tag == TYPE_NIL:
      return None
    if tag == TYPE_NUMBER:
      value = struct.unpack("<d", self._take(8, f"number {where}"))[0]
      return int(value) if value.is_integer() else value
    if tag == TYPE_BOOLEAN:
      return self.int(f"boolean {where}") == 1
    if tag == TYPE_STRING:
      return self.string(f"string {where}")
    if tag == TYPE_FUNCTION:
      code = self._take(self.int(f"length of function {where}"),
                        f"function {where}")
      return LuaFunction(code, self.read_object(f"{where}.<upvalues>"))
    if tag not in (TYPE_TABLE, TYPE_TORCH, TYPE_RECUR_FUNCTION,
                   TYPE_LEGACY_RECUR_FUNCTION):
      raise Torch7FormatError(
          f"{self.path}: unknown type tag {tag} at byte {start} ({where}); "
          "expected 0-8: the file is corrupt or not a Torch7 binary file "
          "(ascii-mode files are not supported)")
    index = self.int(f"reference index of {where}")
    if index in self.objects:
      return self.objects[index]
    if tag in (TYPE_RECUR_FUNCTION, TYPE_LEGACY_RECUR_FUNCTION):
      code = self._take(self.int(f"length of function {where}"),
                        f"function {where}")
      function = LuaFunction(code, None)
      self.objects[index] = function
      function.upvalues = self.read_object(f"{where}.<upvalues>")
      return function
    if tag == TYPE_TABLE:
      table: Dict[Any, Any] = {}
      self.objects[index] = table
      for _ in range(self.int(f"size of table {where}")):
        key = self.read_object(f"{where}.<key>")
        label = f"{where}.{key}" if isinstance(key, (str, int)) else where
        value = self.read_object(label)
        if isinstance(key, (dict, list)):
          key = id(key)  # unhashable table keys: kept, under an opaque key
        table[key] = value
      return table
    return self._read_torch(index, where)

  def _read_torch(self, index: int, where: str) -> Any:
    version_string = self.string(f"version of {where}")
    if version_string.startswith("V "):
      try:
        version = int(version_string[2:])
      except ValueError:
        raise Torch7FormatError(
            f"{self.path}: bad class version {version_string!r} for "
            f"{where}") from None
      typename = self.string(f"class name of {where}")
    else:
      version, typename = 0, version_string
    if typename.endswith("Storage") and typename.startswith("torch."):
      kind = typename[len("torch."):-len("Storage")]
      if kind not in _STORAGE_DTYPES:
        raise Torch7FormatError(f"{self.path}: unsupported storage type "
                                f"{typename} at {where}")
      dtype = np.dtype(_STORAGE_DTYPES[kind])
      size = self.long(f"size of {typename} {where}")
      raw = self._take(size * dtype.itemsize, f"{size} elements of {typename} "
                       f"{where}")
      array = np.frombuffer(raw, dtype=dtype)
      self.objects[index] = array
      return array
    if typename.endswith("Tensor") and typename.startswith("torch."):
      kind = typename[len("torch."):-len("Tensor")]
      if kind not in _STORAGE_DTYPES:
        raise Torch7FormatError(f"{self.path}: unsupported tensor type "
                                f"{typename} at {where}")
      ndim = self.int(f"nDimension of {where}")
      if ndim < 0 or ndim > 64:
        raise Torch7FormatError(
            f"{self.path}: {where} claims {ndim} dimensions; the file is "
            "corrupt")
      sizes = [self.long(f"sizes of {where}") for _ in range(ndim)]
      strides = [self.long(f"strides of {where}") for _ in range(ndim)]
      offset = self.long(f"storage offset of {where}") - 1
      storage = self.read_object(f"{where}.<storage>")
      array = self._view(storage, sizes, strides, offset,
                         np.dtype(_STORAGE_DTYPES[kind]), where)
      self.objects[index] = array
      return array
    obj = TorchObject(typename, version)
    self.objects[index] = obj
    fields = self.read_object(where)
    if not isinstance(fields, dict):
      raise Torch7FormatError(
          f"{self.path}: {typename} object {where} should hold a table of "
          f"fields, found {type(fields).__name__}")
    obj.fields = fields
    return obj

  def _view(self, storage, sizes, strides, offset, dtype, where):
    if not sizes or 0 in sizes:
      return np.zeros(sizes if sizes else (0,), dtype=dtype)
    if storage is None:
      raise Torch7FormatError(
          f"{self.path}: tensor {where} of size {sizes} has no storage")
    if not isinstance(storage, np.ndarray):
      raise Torch7FormatError(
          f"{self.path}: tensor {where} refers to a "
          f"{type(storage).__name__}, expected a storage")
    last = offset + sum((s - 1) * st for s, st in zip(sizes, strides))
    if offset < 0 or any(s < 0 or st < 0 for s, st in zip(sizes, strides)) \
        or last >= storage.size:
      raise Torch7FormatError(
          f"{self.path}: tensor {where} (size {sizes}, stride {strides}, "
          f"offset {offset + 1}) reaches element {last + 1} of a storage of "
          f"{storage.size} elements")
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=sizes,
        strides=[st * storage.itemsize for st in strides], writeable=False)
    return np.array(view, dtype=dtype)


def loads(data: bytes, path: str = "<bytes>") -> Any:
  """Decodes the object serialized in ``data``.

  Args:
    data: the whole contents of a binary-mode ``torch.save`` file, written
      with 8-byte longs.
    path: the file's name, for error messages.

  Returns:
    The root object as plain Python values (see the module docstring).

  Raises:
    Torch7FormatError: if ``data`` is truncated, corrupt, has bytes after
      the object, or uses an unsupported type.
  """
  reader = _Reader(data, path)
  obj = reader.read_object()
  if reader.pos != len(data):
    raise Torch7FormatError(
        f"{path}: {len(data) - reader.pos} unexpected bytes after the "
        f"serialized object (it ends at byte {reader.pos})")
  return obj


def load(path: str) -> Any:
  """Reads a file written by Torch7's ``torch.save`` (binary mode).

  Args:
    path: a local file path.

  Raises:
    Torch7FormatError: as ``loads``.
    OSError: if the file cannot be read.
  """
  with open(path, "rb") as f:
    return loads(f.read(), path)


def looks_like_torch7(head: bytes) -> bool:
  """Whether a file starting with ``head`` is plausibly a Torch7 file.

  A model file starts with type tag 4 (a Torch object) or 3 (a table), a
  reference index of 1, then (for an object) the length of ``"V 1"``.

  Args:
    head: the file's first bytes (at least 8 are needed).
  """
  if len(head) < 8:
    return False
  tag, index = struct.unpack("<ii", head[:8])
  return tag in (TYPE_TABLE, TYPE_TORCH) and index == 1
