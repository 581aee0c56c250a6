"""The fenced code blocks of Markdown files and the shell commands in them.

The documentation tests run what README.md and docs/*.md show; this module
only reads them. ``blocks`` returns every fenced block with its language,
line and section; ``commands`` splits the shell blocks into the commands a
reader would type:

* ```` ```bash ````, ```` ```sh ```` and ```` ```shell ```` blocks are
  scripts: every line is a command (``\\``-continued lines joined), ``#``
  comments and blank lines dropped.
* ```` ```console ```` blocks, and blocks without a language whose lines
  start with ``$ ``, are transcripts: a command is a line starting with
  ``$ `` (plus its continuation lines); the lines up to the next prompt are
  its output, which tests may compare with what the command prints.
* A block without a language and without prompts is a command block only
  when its first line invokes one of the project's tools; otherwise it is
  output or a diagram.
"""

import dataclasses
import re
import shlex
from typing import List, Optional, Tuple

SHELL_LANGUAGES = ("bash", "sh", "shell")
CONSOLE_LANGUAGES = ("console", "shell-session")

_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)\s*(?P<lang>[\w+-]*)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
# How the project's tools are started (python -m, console scripts, scripts/).
TOOL_START = re.compile(
    r"^(?:\S*python3?(?:\.\d+)?\s+-m\s+(?:pyramidnet_tf|data_prep)\.\w+"
    r"|pyramidnet-[\w-]+|bash\s+(?:\S*/)?scripts/\S+)")


@dataclasses.dataclass(frozen=True)
class Block:
  """One fenced code block.

  Attributes:
    path: the Markdown file, as given to ``blocks``.
    line: 1-based line of the opening fence.
    language: the info string's first word, lower case ("" when none).
    text: the block's content, its common indentation removed.
    section: the nearest heading above the block.
  """
  path: str
  line: int
  language: str
  text: str
  section: str

  @property
  def where(self) -> str:
    """``path:line (section)``, for messages."""
    return f"{self.path}:{self.line} ({self.section})"


@dataclasses.dataclass(frozen=True)
class Command:
  """One command of a shell block.

  Attributes:
    block: the block it is in.
    line: 1-based line in the Markdown file where it starts.
    text: the command as one line (continuations joined, prompt and
      comments removed).
    output: the transcript lines shown after it (console blocks), else
      None.
  """
  block: Block
  line: int
  text: str
  output: Optional[str] = None

  @property
  def where(self) -> str:
    return f"{self.block.path}:{self.line}"

  def tokens(self) -> List[str]:
    """The command split as the shell would (quotes removed, no
    comments)."""
    return shlex.split(self.text, comments=True)


def blocks(path: str, text: Optional[str] = None) -> List[Block]:
  """Every fenced code block of a Markdown file, in order.

  Args:
    path: the file (read unless ``text`` is given); kept for messages.
    text: the file's content, if already read.

  Raises:
    ValueError: for a fence that is never closed.
  """
  if text is None:
    with open(path, encoding="utf-8") as f:
      text = f.read()
  lines = text.splitlines()
  found = []
  section = ""
  i = 0
  while i < len(lines):
    match = _FENCE.match(lines[i])
    if not match:
      heading = _HEADING.match(lines[i])
      if heading:
        section = heading.group(2)
      i += 1
      continue
    indent, fence = match.group("indent"), match.group("fence")
    start = i
    body = []
    i += 1
    while i < len(lines) and not (
        lines[i].strip().startswith(fence) and
        lines[i].strip().strip(fence[0]) == ""):
      body.append(lines[i])
      i += 1
    if i >= len(lines):
      raise ValueError(f"{path}:{start + 1}: code block never closed")
    found.append(Block(path=path, line=start + 1,
                       language=match.group("lang").lower(),
                       text="\n".join(_dedent(body, indent)),
                       section=section))
    i += 1
  return found


def _dedent(body: List[str], indent: str) -> List[str]:
  return [line[len(indent):] if line.startswith(indent) else line.lstrip()
          for line in body]


def kind(block: Block) -> str:
  """"python", "shell" (a script), "console" (a transcript) or "text"."""
  if block.language in ("python", "py"):
    return "python"
  if block.language in SHELL_LANGUAGES:
    return "shell"
  if block.language in CONSOLE_LANGUAGES:
    return "console"
  if block.language:
    return "text"
  lines = block.text.splitlines()
  if any(line.startswith("$ ") for line in lines):
    return "console"
  first = next((line.strip() for line in lines if line.strip()), "")
  return "shell" if TOOL_START.match(first) else "text"


def _logical_lines(lines: List[Tuple[int, str]]) -> List[Tuple[int, str]]:
  """Lines with trailing-backslash continuations joined."""
  joined = []
  pending, start = None, 0
  for number, line in lines:
    if pending is None:
      pending, start = line, number
    else:
      pending += " " + line.strip()
    if pending.rstrip().endswith("\\"):
      pending = pending.rstrip()[:-1].rstrip()
      continue
    joined.append((start, pending))
    pending = None
  if pending is not None:
    joined.append((start, pending))
  return joined


def _without_comment(line: str) -> str:
  """``line`` up to an unquoted ``#`` comment, stripped."""
  lexer = shlex.shlex(line, posix=True, punctuation_chars=False)
  lexer.whitespace_split = True
  lexer.commenters = "#"
  try:
    tokens = list(lexer)
  except ValueError:  # an unbalanced quote: keep the line as it is
    return line.strip()
  if not tokens:
    return ""
  # Cut the raw text where the comment starts, keeping the quoting.
  position = 0
  in_single = in_double = False
  while position < len(line):
    char = line[position]
    if char == "\\" and not in_single:
      position += 2
      continue
    if char == "'" and not in_double:
      in_single = not in_single
    elif char == '"' and not in_single:
      in_double = not in_double
    elif char == "#" and not in_single and not in_double and (
        position == 0 or line[position - 1].isspace()):
      return line[:position].strip()
    position += 1
  return line.strip()


def commands(block: Block) -> List[Command]:
  """The commands of a shell or console block (none for other kinds)."""
  block_kind = kind(block)
  numbered = [(block.line + 1 + k, line)
              for k, line in enumerate(block.text.splitlines())]
  if block_kind == "shell":
    found = []
    for number, line in _logical_lines(numbered):
      text = _without_comment(line)
      if text:
        found.append(Command(block, number, text))
    return found
  if block_kind != "console":
    return []
  found = []
  k = 0
  while k < len(numbered):
    number, line = numbered[k]
    if not line.startswith("$ "):
      k += 1
      continue
    parts = [(number, line[2:])]
    while parts[-1][1].rstrip().endswith("\\") and k + 1 < len(numbered):
      k += 1
      parts.append(numbered[k])
    k += 1
    output = []
    while k < len(numbered) and not numbered[k][1].startswith("$ "):
      output.append(numbered[k][1])
      k += 1
    (start, text), = _logical_lines(parts)
    found.append(Command(block, start, _without_comment(text),
                         "\n".join(output)))
  return found
