"""The checkpoint file formats ``import_torch`` reads.

Apart from the readers (which import TensorFlow) so that the tool's
``--format`` flag is defined and checked before TensorFlow starts.
"""

# "auto" detects the format from the file's first bytes.
FORMATS = ("auto", "pytorch", "npz", "torch7", "caffe")
