"""tf.data service addresses on the command line (no flags defined here).

Shared by the trainer's ``--data_service`` and ``pyramidnet_tf.data_service
--dispatcher``, so both accept and reject the same spellings.
"""

import re

from pyramidnet_tf.cli import errors as cli

_ADDRESS = re.compile(r"^(?:grpc://)?([A-Za-z0-9._\-]+|\[[0-9A-Fa-f:]+\]):"
                      r"([0-9]{1,5})$")
_HOST = re.compile(r"^[A-Za-z0-9._\-]+$|^\[[0-9A-Fa-f:]+\]$")


def parse_address(name: str, value: str) -> str:
  """``HOST:PORT`` of a ``[grpc://]HOST:PORT`` flag value.

  Args:
    name: the flag, for the message.
    value: its value.

  Raises:
    cli.FlagError: not of that form, or a port outside 1..65535.
  """
  match = _ADDRESS.match(value or "")
  if not match or not 1 <= int(match.group(2)) <= 65535:
    raise cli.FlagError(
        f"--{name} must be HOST:PORT or grpc://HOST:PORT with a port in "
        f"1..65535, e.g. grpc://dispatcher-host:5050; got {value!r}")
  return f"{match.group(1)}:{int(match.group(2))}"


def is_host(value: str) -> bool:
  """A host name, IPv4 address or bracketed IPv6 address, without a port."""
  return bool(_HOST.match(value or ""))
