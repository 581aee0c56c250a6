"""tf.data service addresses as a user writes them (no flags defined here).

Shared by the trainer's flag checks and its connection to the service
(``--data_service``) and by ``pyramidnet_tf.data_service --dispatcher``, so
all accept and reject the same spellings. No TensorFlow import: flags are
checked with it before TensorFlow starts.
"""

import re

from pyramidnet_tf import errors

_ADDRESS = re.compile(r"^(?:grpc://)?([A-Za-z0-9._\-]+|\[[0-9A-Fa-f:]+\]):"
                      r"([0-9]{1,5})$")
_HOST = re.compile(r"^[A-Za-z0-9._\-]+$|^\[[0-9A-Fa-f:]+\]$")


def parse_address(name: str, value: str) -> str:
  """``HOST:PORT`` of a ``[grpc://]HOST:PORT`` flag value.

  Args:
    name: the flag, for the message.
    value: its value.

  Raises:
    errors.FlagError: not of that form, or a port outside 1..65535.
  """
  match = _ADDRESS.match(value or "")
  if not match or not 1 <= int(match.group(2)) <= 65535:
    raise errors.FlagError(
        f"--{name} must be HOST:PORT or grpc://HOST:PORT with a port in "
        f"1..65535, e.g. grpc://dispatcher-host:5050; got {value!r}")
  return f"{match.group(1)}:{int(match.group(2))}"


def is_host(value: str) -> bool:
  """A host name, IPv4 address or bracketed IPv6 address, without a port."""
  return bool(_HOST.match(value or ""))
