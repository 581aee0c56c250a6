#!/usr/bin/env bash
# The one measuring command on the GPU host (bench/GPU.md):
#
#   bash bench/gpu_suite.sh PARTS_DIR TIMEOUT_S [bench/gpu_suite.py flags...]
#
# PARTS_DIR holds the TensorFlow bundle as bench/gpu_stage.sh stages it:
# part.*, unpack.sh, zstd/ and SHA256SUMS. TIMEOUT_S is the limit the command
# runs under; the suite gets what is left of it after unpacking, less 30 s, so
# it ends with its files written before the command is killed.
#
# Unpacks TensorFlow once into ${GPU_SUITE_UNPACK_TO:-/tmp}/gpusite (a rerun
# reuses it), hands its paths to the TF rows only (GPU_SUITE_TF_PYTHONPATH;
# GPU_SUITE_TF_LD_LIBRARY_PATHS: the bundle's CUDA libraries with
# /usr/lib/x86_64-linux-gnu as build.sh sets them, then the same with each
# other folder holding a libcudnn.so.9 on the host, each put before the
# host's own LD_LIBRARY_PATH, and the suite keeps the first that runs a
# convolution; GPU_SUITE_XLA_FLAGS: the host's CUDA directory, for XLA's
# libdevice and ptxas), and runs bench/gpu_suite.py with its results in $OUT
# (else ./gpu_suite_out). Parts missing or corrupt, or a failed unpack: the
# PyTorch rows still run (--only=torch), and the missing parts are named.
# With --only=torch among the flags nothing is unpacked. The driver's cache
# of kernels it compiles from PTX is raised to its 4 GiB maximum (unless
# CUDA_CACHE_MAXSIZE is set), so that only the first TF process pays for
# compiling TF's kernels where the wheel has no binaries for the GPU.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
parts=${1:?usage: gpu_suite.sh PARTS_DIR TIMEOUT_S [gpu_suite.py flags]}
limit=${2:?usage: gpu_suite.sh PARTS_DIR TIMEOUT_S [gpu_suite.py flags]}
shift 2
t0=$(date +%s)
dest=${GPU_SUITE_UNPACK_TO:-/tmp}
site=$dest/gpusite
out=${OUT:-$PWD/gpu_suite_out}
mkdir -p "$out"
say() { echo "[gpu_suite.sh +$(( $(date +%s) - t0 ))s] $*" | tee -a "$out/suite.log"; }

extra=()
case " $* " in *" --only=torch "*) torch_only=1 ;; *) torch_only=0 ;; esac
if [ "$torch_only" = 0 ] && [ ! -e "$site/.unpacked" ]; then
  ok=1
  if [ ! -f "$parts/SHA256SUMS" ] || [ ! -f "$parts/unpack.sh" ]; then
    say "no SHA256SUMS / unpack.sh in $parts (the first staging call carries them)"
    ok=0
  else
    missing=$(cd "$parts" && awk '{print $2}' SHA256SUMS | while read -r f; do
                [ -f "$f" ] || printf '%s ' "$f"; done)
    if [ -n "$missing" ]; then
      say "missing parts: $missing(send them again, then rerun)"
      ok=0
    elif ! bad=$(cd "$parts" && sha256sum -c --quiet SHA256SUMS 2>&1); then
      say "corrupt parts: $bad"
      ok=0
    fi
  fi
  if [ "$ok" = 1 ]; then
    say "unpacking TensorFlow into $site"
    rm -rf "$site"
    if bash "$parts/unpack.sh" "$parts" "$dest" && [ -d "$site/tensorflow" ]; then
      touch "$site/.unpacked"
      say "unpacked ($(du -sm "$site" | cut -f1) MB)"
    else
      say "unpack failed"
      ok=0
    fi
  fi
  if [ "$ok" = 0 ]; then
    say "TensorFlow unavailable: measuring the PyTorch rows only"
    extra+=(--only=torch)
  fi
fi

if [ -e "$site/.unpacked" ]; then
  libs=$(ls -d "$site"/nvidia/*/lib 2>/dev/null | tr '\n' ':')
  sys=/usr/lib/x86_64-linux-gnu
  cands="${libs}${sys}"
  for d in $(find /usr/lib/x86_64-linux-gnu /usr/local /opt -maxdepth 9 \
               -name 'libcudnn.so.9*' -printf '%h\n' 2>/dev/null | sort -u); do
    [ "$d" = "$sys" ] || cands="$cands;${libs}$d:$sys"
  done
  export GPU_SUITE_TF_PYTHONPATH=$site
  export GPU_SUITE_TF_LD_LIBRARY_PATHS=$cands
  cuda=""
  for c in /usr/local/cuda "$(dirname "$(dirname "$(command -v nvcc 2>/dev/null || echo /x/x)")")"; do
    if [ -d "$c/nvvm/libdevice" ]; then cuda=$c; break; fi
  done
  if [ -n "$cuda" ]; then
    export GPU_SUITE_XLA_FLAGS="--xla_gpu_cuda_data_dir=$cuda"
    export PATH="$PATH:$cuda/bin"  # ptxas
  fi
  say "TF rows: PYTHONPATH+=$site; LD_LIBRARY_PATH candidates: $cands; CUDA dir: ${cuda:-none found}"
fi

export CUDA_CACHE_MAXSIZE=${CUDA_CACHE_MAXSIZE:-4294967296}
budget=$(( limit - ($(date +%s) - t0) - 30 ))
if [ "$budget" -lt 30 ]; then
  say "only ${budget}s left of ${limit}s: not starting the suite"
  exit 4
fi
say "gpu_suite.py with a budget of ${budget}s"
export PYTHONUNBUFFERED=1
exec python3 "$repo/bench/gpu_suite.py" --out_dir="$out" --budget_s="$budget" "$@" "${extra[@]}"
