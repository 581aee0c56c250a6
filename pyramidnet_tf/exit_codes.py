"""The exit codes of the command-line tools: what a launcher should do next.

Launchers (Slurm's sbatch, Kubernetes' podFailurePolicy, Kubeflow's
``restartPolicy: ExitCode``, ``launch_local``) act on these:

  ==========  ==============================================================
  code        meaning
  ==========  ==============================================================
  0           finished: every step trained, the final checkpoint saved
  1           an expected failure (data, model directory, non-finite loss,
              a peer lost): one line says which; rerunning alone won't help
  2           a usage error (an unknown or invalid flag)
  130         aborted by a second Ctrl-C, without saving
  143         stopped by SIGTERM, SIGINT or SIGUSR1 after a checkpoint of
              the step it stopped at was saved: preempted, restart me (rerun
              the same command to resume; nothing trained is lost)
  ==========  ==============================================================

143 is 128 + SIGTERM, the code a shell reports for a process ended by
SIGTERM, and the code TensorFlow's own preemption handler exits with: Slurm,
Kubernetes and Kubeflow already treat it as retryable.

A tool whose standard output is closed by its reader (``predict ... | head``)
stops quietly with 141 (128 + SIGPIPE), as shell tools do.
"""

FINISHED = 0
FAILED = 1
USAGE = 2
ABORTED = 130
OUTPUT_CLOSED = 141
PREEMPTED = 143

# The table above as (code, meaning) rows, for --help and the README.
TABLE = (
    (FINISHED, "finished: every step trained, the final checkpoint saved"),
    (FAILED, "an expected failure, named in one line (data, model directory, "
             "non-finite loss, a lost peer)"),
    (USAGE, "a usage error: an unknown or invalid flag"),
    (ABORTED, "aborted by a second Ctrl-C, without saving"),
    (PREEMPTED, "stopped by SIGTERM, SIGINT or SIGUSR1 after saving the step "
                "it stopped at: rerun the same command to resume"),
)


def help_text() -> str:
  """The exit-code table as --help prints it."""
  return "exit codes:\n" + "".join(f"  {code:>3}  {meaning}\n"
                                   for code, meaning in TABLE)
