# The GPU image of pyramidnet-tf that k8s/*.yaml and the README's Kubernetes
# section run: this repository at /workspace/pyramidnet-tf, installed with its
# [gpu] extra (tensorflow[and-cuda]==2.21.0: CUDA, cuDNN and NCCL come as pip
# wheels, so the base image needs no CUDA; the host's NVIDIA driver is mounted
# by the NVIDIA container runtime), running as the non-root user 1000.
#
#   docker build -t registry.example.com/pyramidnet-tf:2.21.0-gpu .
#   docker push registry.example.com/pyramidnet-tf:2.21.0-gpu
#
# Python 3.11, the version the project is developed and tested on.
# tests/test_dockerfile.py checks these pins against setup.py.
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --gid 1000 pyramidnet \
    && useradd --uid 1000 --gid 1000 --create-home --shell /bin/bash pyramidnet

WORKDIR /workspace/pyramidnet-tf

# Dependencies first (setup.py pins them), so code edits rebuild one layer.
COPY setup.py README.md ./
COPY pyramidnet_tf/ pyramidnet_tf/
COPY data_prep/ data_prep/
RUN python -m pip install pip==24.3.1 \
    && python -m pip install ".[gpu]" \
    && python -c "import tensorflow as tf; assert tf.__version__ == '2.21.0', tf.__version__"

# The flagfiles the manifests pass as --flagfile=flags/..., relative to WORKDIR.
COPY flags/ flags/

USER 1000:1000
ENTRYPOINT []
CMD ["python", "-m", "pyramidnet_tf.train", "--helpfull"]
