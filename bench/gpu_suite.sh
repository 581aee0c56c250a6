#!/usr/bin/env bash
# The measuring command on the GPU host: the last device call of
# bench/GPU.md, the one that carries the TensorFlow bundle's last part.
#
#   bash bench/gpu_suite.sh TIMEOUT_S [bench/gpu_suite.py flags...]
#
# Run it from the repository root of that call (a call's carried parts
# arrive in .gpu-bundle/ there). TIMEOUT_S is the call's time limit: the
# suite gets what is left of it after the steps below, less 30 s, so that it
# ends with its files written before the call is killed.
#
# The bundle's own tools do the TensorFlow steps, from where the earlier
# calls left them ($GB_HOME, default /tmp/gpu-bundle, which GB_HOME moves for
# them too; .gpu-bundle/tools when this call carries the tools itself):
#  1. tools/recv.sh moves the parts this call carries into $GB_HOME/parts and
#     refuses a part whose checksum differs (named here: send it again);
#  2. every part-NN that tools/SHA256SUMS lists must be there (the missing
#     ones are named);
#  3. tools/unpack.sh unpacks them into $GB_HOME/gpusite, once (a rerun keeps
#     it; cudnn-NN parts, the cuDNN fallback set, are unpacked on top);
#  4. tools/env.sh, sourced in a subshell, chooses TensorFlow's paths; they go
#     to the TF rows only: GPU_SUITE_TF_PYTHONPATH (the unpacked site),
#     GPU_SUITE_TF_LD_LIBRARY_PATHS (what env.sh puts before the inherited
#     library path; where the cuDNN fallback set was unpacked, the same with
#     the host's cuDNN follows as a second candidate, and the suite keeps the
#     first under which a convolution runs) and GPU_SUITE_XLA_FLAGS (the CUDA
#     folder with ptxas and libdevice, whose bin/ also ends PATH);
#  5. tools/check.py under env.sh (--allow-cpu with --dry_run), its output in
#     $OUT/check.log: exit 0 (GO) or 3 (TensorFlow has the GPU but a case
#     failed, XLA say: the suite's env row finds which) lets the TF rows run
#     and is kept in $GB_HOME/gpu_suite.check for a rerun; 2 (no GPU), 4
#     (TensorFlow does not import) or no verdict within 240 s do not.
#     GPU_SUITE_CHECK=0 skips it (about a minute of device time).
# Then bench/gpu_suite.py runs, its results in $OUT (else ./gpu_suite_out).
# Whatever stops steps 1-5 (a fresh machine without the tools, a missing or
# refused part, a failed unpack, env.sh or check.py), the reason is printed
# and the PyTorch rows still run (--only=torch). With --only=torch among the
# flags none of the steps runs. The driver's cache of kernels it compiles
# from PTX is raised to its 4 GiB maximum (unless CUDA_CACHE_MAXSIZE is set),
# so that only the first TF process pays for compiling TensorFlow's kernels
# where the wheel has no binaries for the GPU.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
usage="usage: bash bench/gpu_suite.sh TIMEOUT_S [gpu_suite.py flags]"
limit=${1:-}
case $limit in
  ''|*[!0-9]*)
    echo "gpu_suite.sh: TIMEOUT_S must be the call's time limit in whole seconds, not '$limit' ($usage)" >&2
    exit 2 ;;
esac
shift
t0=$(date +%s)
home=${GB_HOME:-/tmp/gpu-bundle}
site=$home/gpusite
carried=$PWD/.gpu-bundle
out=${OUT:-$PWD/gpu_suite_out}
mkdir -p "$out"
say() { echo "[gpu_suite.sh +$(( $(date +%s) - t0 ))s] $*" | tee -a "$out/suite.log"; }

torch_only=0 dry=0
for arg in "$@"; do
  case $arg in
    --only=torch) torch_only=1 ;;
    --dry_run|--dry_run=true|--dry_run=1) dry=1 ;;
  esac
done

# env.sh's choices for GB_CUDNN=$1, one a line: the site, the library path it
# puts first, its XLA_FLAGS, its CUDA folder for XLA. Its own summary goes to
# bundle.log.
env_choice() {
  env -u LD_LIBRARY_PATH -u PYTHONPATH -u XLA_FLAGS GB_HOME="$home" GB_CUDNN="$1" \
    bash -c '. "$1" || exit 1
             printf "%s\n%s\n%s\n%s\n" "$GB_SITE" "$LD_LIBRARY_PATH" "${XLA_FLAGS:-}" "${GB_XLA_CUDA_DIR:-}"' \
    _ "$home/tools/env.sh" 2>>"$out/bundle.log"
}

# Steps 1-5; prints why and returns 1 where TensorFlow cannot be used.
tf_ready() {
  local recv rc recv_out refused missing choice alt check_args line
  if [ -f "$carried/tools/recv.sh" ]; then
    recv=$carried/tools/recv.sh
  elif [ -f "$home/tools/recv.sh" ]; then
    recv=$home/tools/recv.sh
  else
    say "no bundle tools in $home: a fresh machine (the earlier calls' parts went with the one before); start again at call 1"
    return 1
  fi
  recv_out=$(GB_HOME="$home" bash "$recv" "$PWD" 2>&1)
  rc=$?
  printf '%s\n' "$recv_out" | tee -a "$out/bundle.log"
  if [ "$rc" = 3 ]; then
    say "no bundle tools in $home: a fresh machine; start again at call 1"
    return 1
  fi
  refused=$(printf '%s\n' "$recv_out" | sed -n 's/^NO-GO recv: \([^ ]*\) checksum mismatch.*/\1/p' | tr '\n' ' ')
  [ -z "$refused" ] || say "refused damaged parts: ${refused% } (damaged in transfer: send them again)"

  if [ ! -e "$site/.unpacked" ]; then
    missing=$(awk '{sub(/^\*/, "", $2); print $2}' "$home/tools/SHA256SUMS" | grep '^part-' |
              while read -r n; do [ -f "$home/parts/$n" ] || printf '%s ' "$n"; done)
    if [ -n "$missing" ]; then
      say "missing parts: ${missing% } (send them, then run this again)"
      return 1
    fi
    say "unpacking TensorFlow into $site"
  fi
  GB_HOME="$home" bash "$home/tools/unpack.sh" 2>&1 | tee -a "$out/bundle.log"
  rc=${PIPESTATUS[0]}
  if [ ! -e "$site/.unpacked" ]; then
    say "unpack failed (exit $rc; bundle.log has its lines)"
    return 1
  fi
  [ "$rc" = 0 ] || say "unpack.sh ended with exit $rc after TensorFlow was unpacked (the cuDNN fallback set?); going on"
  say "unpacked: $(du -sm "$site" | cut -f1) MB in $site"

  if ! choice=$(env_choice auto); then
    say "env.sh failed (bundle.log has its lines)"
    return 1
  fi
  mapfile -t choice <<< "$choice"
  export GPU_SUITE_TF_PYTHONPATH=${choice[0]:-}
  export GPU_SUITE_TF_LD_LIBRARY_PATHS=${choice[1]:-}
  export GPU_SUITE_XLA_FLAGS=${choice[2]:-}
  if [ -f "$site/nvidia/cudnn/lib/libcudnn.so.9" ] && alt=$(env_choice host); then
    mapfile -t alt <<< "$alt"
    [ "${alt[1]:-}" = "${choice[1]:-}" ] || GPU_SUITE_TF_LD_LIBRARY_PATHS="$GPU_SUITE_TF_LD_LIBRARY_PATHS;${alt[1]:-}"
  fi
  [ -z "${choice[3]:-}" ] || export PATH="$PATH:${choice[3]}/bin"  # ptxas
  say "TF rows: PYTHONPATH+=$GPU_SUITE_TF_PYTHONPATH; LD_LIBRARY_PATH candidates: ${GPU_SUITE_TF_LD_LIBRARY_PATHS:-(inherited)}; XLA_FLAGS+=${GPU_SUITE_XLA_FLAGS:-(none)}"

  if [ "${GPU_SUITE_CHECK:-1}" = 0 ]; then
    say "check.py skipped (GPU_SUITE_CHECK=0)"
    return 0
  fi
  if [ -f "$home/gpu_suite.check" ]; then
    say "check.py: kept from an earlier run: $(cat "$home/gpu_suite.check")"
    return 0
  fi
  check_args=()
  [ "$dry" = 0 ] || check_args=(--allow-cpu)
  say "check.py${check_args[*]:+ ${check_args[*]}} (output in check.log)"
  ( export GB_HOME="$home" && . "$home/tools/env.sh" 2>/dev/null &&
    exec timeout 240 python3 "$home/tools/check.py" ${check_args[@]+"${check_args[@]}"} ) \
    > "$out/check.log" 2>&1
  rc=$?
  line=$(grep '^CHECK:' "$out/check.log" | tail -1)
  case $rc in
    0|3)
      echo "exit $rc: $line" > "$home/gpu_suite.check"
      say "check.py exit $rc: ${line:-(no CHECK line)}"
      return 0 ;;
    124)
      tail -n 12 "$out/check.log"
      say "check.py gave no verdict within 240 s"
      return 1 ;;
    *)
      tail -n 12 "$out/check.log"
      say "check.py exit $rc: ${line:-(no CHECK line)}"
      return 1 ;;
  esac
}

extra=()
if [ "$torch_only" = 0 ] && ! tf_ready; then
  say "TensorFlow unavailable: measuring the PyTorch rows only"
  extra=(--only=torch)
fi

export CUDA_CACHE_MAXSIZE=${CUDA_CACHE_MAXSIZE:-4294967296}
budget=$(( limit - ($(date +%s) - t0) - 30 ))
if [ "$budget" -lt 30 ]; then
  say "only ${budget}s left of ${limit}s: not starting the suite"
  exit 4
fi
say "gpu_suite.py with a budget of ${budget}s"
export PYTHONUNBUFFERED=1
exec python3 "$repo/bench/gpu_suite.py" --out_dir="$out" --budget_s="$budget" "$@" ${extra[@]+"${extra[@]}"}
