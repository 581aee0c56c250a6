# The image of pyramidnet-tf that k8s/*.yaml and the README's Kubernetes
# section run: this repository at /workspace/pyramidnet-tf, installed into the
# virtualenv /opt/venv with its [gpu] extra (tensorflow[and-cuda]==2.21.0:
# CUDA, cuDNN and NCCL come as pip wheels, so the base image needs no CUDA;
# the host's NVIDIA driver is mounted by the NVIDIA container runtime),
# running as the non-root user 1000.
#
#   docker build -t registry.example.com/pyramidnet-tf:2.21.0-gpu .
#   docker build --build-arg TF_EXTRA=cpu -t pyramidnet-tf:2.21.0-cpu .
#   docker build --build-arg BASE_IMAGE=localhost/debian-python:bookworm ...
#
# BASE_IMAGE: any Debian-like image with Python 3.11, its venv module and
# useradd: python:3.11-slim and its pinned tags, or Debian bookworm with
# python3, python3-venv and passwd (scripts/container/debian_base.sh makes one
# from Debian packages). TF_EXTRA: setup.py's TensorFlow extra, gpu or cpu.
# The pip variables below are pip's own settings, unset by default (PyPI); the
# build test sets them to install from a local wheel directory.
# tests/test_dockerfile.py checks these pins against setup.py;
# tests/container/test_image.py builds the image and trains in it.
ARG BASE_IMAGE=python:3.11.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG TF_EXTRA=gpu
ARG PIP_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_NO_INDEX

# A virtualenv on both kinds of base: Debian's own Python refuses to install
# into the system (PEP 668), and the venv puts the same pip and packages
# first on PATH wherever Python came from.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN groupadd --gid 1000 pyramidnet \
    && useradd --uid 1000 --gid 1000 --create-home --shell /bin/bash pyramidnet \
    && python3 -m venv /opt/venv

WORKDIR /workspace/pyramidnet-tf

# Layer 1, the dependencies: what setup.py pins, resolved from setup.py alone
# (an empty package with the same requirements, removed again), so that code,
# flagfile and README edits reuse this layer and rebuild only the last one.
COPY setup.py ./
RUN python -m pip install pip==24.3.1 \
    && mkdir flags && touch README.md \
    && python -m pip install ".[${TF_EXTRA}]" \
    && python -m pip uninstall --yes pyramidnet-tf \
    && rm -rf flags README.md build ./*.egg-info \
    && python -c "import tensorflow as tf; assert tf.__version__ == '2.21.0', tf.__version__"

# Layer 2, the code: the package itself without dependencies, and the
# flagfiles the manifests pass as --flagfile=flags/..., relative to WORKDIR.
COPY README.md ./
COPY pyramidnet_tf/ pyramidnet_tf/
COPY data_prep/ data_prep/
COPY flags/ flags/
RUN python -m pip install --no-deps . \
    && rm -rf build ./*.egg-info \
    && cd / && python -m pyramidnet_tf.train --recipes > /dev/null

USER 1000:1000
ENTRYPOINT []
CMD ["python", "-m", "pyramidnet_tf.train", "--helpfull"]
