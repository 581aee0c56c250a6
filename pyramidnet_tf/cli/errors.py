"""The tools' names for the user-error types and flag checks.

They live in ``pyramidnet_tf.errors`` (below every layer, so the library
raises and recognises the same errors without importing the command-line
layer); this module re-exports what the tools and flag definitions use.
"""

from pyramidnet_tf.errors import FlagError
from pyramidnet_tf.errors import UserError
from pyramidnet_tf.errors import check_image_size
from pyramidnet_tf.errors import check_number
from pyramidnet_tf.errors import error_text
from pyramidnet_tf.errors import flag_problems
from pyramidnet_tf.errors import guard
from pyramidnet_tf.errors import number_problem
from pyramidnet_tf.errors import problems_text
from pyramidnet_tf.errors import register_number_validator
from pyramidnet_tf.errors import storage_problem

__all__ = ["FlagError", "UserError", "check_image_size", "check_number",
           "error_text", "flag_problems", "guard", "number_problem",
           "problems_text", "register_number_validator", "storage_problem"]
